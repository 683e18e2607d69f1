"""Fused point cloud: per-frame point selection and the PLY writer (the accumulation itself is
recon.points.VoxelCloud, shared with the viewer's live map)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recon.align import unproject_depth
from recon.atomic import atomic_path
from recon.points import confidence_mask, inside_original
from recon.session import FramePrediction


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
