"""Fused point cloud: per-frame selection, voxel downsampling, a memory-bounded accumulator.

Points are averaged per voxel with weights (the number of raw points each one stands for), so
downsampling the accumulated cloud again gives the same result as downsampling all raw points
at once, whatever the order in which frames arrive.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from recon.align import unproject_depth
from recon.atomic import atomic_path
from recon.points import confidence_mask, inside_original, voxel_merge
from recon.session import FramePrediction

log = logging.getLogger(__name__)


def frame_points(
    pred: FramePrediction, source: str, threshold: float | None, percentile: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """World points [N, 3] float64 and colours [N, 3] float32 in [0, 1] kept from one frame.

    source="depth" unprojects the depth map with the predicted camera (the more accurate path
    in the VGGT paper); source="points" takes the point-map head's world_points.
    """
    if source == "depth":
        depth = np.asarray(pred.depth, dtype=np.float64)
        points = unproject_depth(
            torch.from_numpy(depth), torch.from_numpy(np.asarray(pred.extrinsic, np.float64)),
            torch.from_numpy(np.asarray(pred.intrinsic, np.float64)),
        ).numpy()  # fmt: skip
        conf, valid = pred.depth_conf, np.isfinite(depth) & (depth > 0)
    else:
        points = np.asarray(pred.world_points, dtype=np.float64)
        conf, valid = pred.points_conf, np.ones(points.shape[:2], dtype=bool)
    valid &= np.isfinite(points).all(axis=-1) & inside_original(pred)
    keep = confidence_mask(np.asarray(conf), valid, threshold, percentile)
    return points[keep], np.asarray(pred.image, dtype=np.float32)[keep]


class PointAccumulator:
    """Fuses per-frame points into one voxel-downsampled cloud of at most `max_points` points.

    Each frame is downsampled on arrival; the accumulated chunks are merged whenever they hold
    more than `max_points` points. When a merge leaves more than half the budget, the voxel
    grows (x1.25 steps) until it does not, so merges stay rare and memory stays bounded however
    long the stream is.
    """

    def __init__(self, voxel_size: float, max_points: int = 2_000_000) -> None:
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be positive, got {voxel_size}")
        if max_points < 2:
            raise ValueError(f"max_points must be at least 2, got {max_points}")
        self.voxel_size = float(voxel_size)
        self.max_points = int(max_points)
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, points: np.ndarray, colors: np.ndarray) -> None:
        """Add points [N, 3] with colours [N, 3] in [0, 1]."""
        if len(points) == 0:
            return
        chunk = voxel_merge(points, colors, np.ones(len(points)), self.voxel_size)
        self._chunks.append(chunk)
        self._count += len(chunk[0])
        if self._count > self.max_points:
            self._merge(target=self.max_points // 2)

    def _merge(self, target: int) -> None:
        points, colors, weights = (np.concatenate(parts) for parts in zip(*self._chunks))
        merged = voxel_merge(points, colors, weights, self.voxel_size)
        while len(merged[0]) > target:
            self.voxel_size *= 1.25
            merged = voxel_merge(*merged, self.voxel_size)
        if len(merged[0]) < len(points):
            log.debug("point cloud merged to %d points, voxel %.4g", len(merged[0]), self.voxel_size)
        self._chunks, self._count = [merged], len(merged[0])

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """The fused cloud: points [N, 3] float64, colours [N, 3] float32 in [0, 1]."""
        if not self._chunks:
            return np.zeros((0, 3)), np.zeros((0, 3), np.float32)
        self._merge(target=self.max_points)
        points, colors, _ = self._chunks[0]
        return points, colors


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Binary little-endian PLY with double xyz and uchar rgb, written atomically with open3d."""
    import open3d as o3d

    with atomic_path(path) as tmp:
        if len(points) == 0:  # open3d refuses to write an empty cloud; an empty file is still valid
            header = ("ply\nformat binary_little_endian 1.0\nelement vertex 0\n"
                      + "".join(f"property double {c}\n" for c in "xyz")
                      + "".join(f"property uchar {c}\n" for c in ("red", "green", "blue")) + "end_header\n")
            tmp.write_bytes(header.encode())
        else:
            cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
            cloud.colors = o3d.utility.Vector3dVector(np.clip(colors, 0, 1).astype(np.float64))
            if not o3d.io.write_point_cloud(str(tmp), cloud, write_ascii=False):
                raise OSError(f"open3d could not write the point cloud: {path}")
