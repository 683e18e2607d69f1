"""Point-cloud metrics: accuracy (pred -> gt), completeness (gt -> pred) and Chamfer distance.

Distances are Euclidean nearest-neighbour distances from open3d's KD-tree
(`PointCloud.compute_point_cloud_distance`). The prediction is first moved by an optional
Sim(3) (given, or estimated with Umeyama from row-wise corresponding points), then both clouds
are optionally voxel-downsampled (which evens out density differences before averaging).
Chamfer = (accuracy + completeness) / 2, in the units of gt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.align.umeyama import Sim3


@dataclass
class PointCloudMetrics:
    accuracy: float  # mean distance pred -> nearest gt
    completeness: float  # mean distance gt -> nearest pred
    chamfer: float  # (accuracy + completeness) / 2
    accuracy_median: float
    completeness_median: float
    n_pred: int  # points compared, after downsampling
    n_gt: int
    alignment: Sim3  # applied to pred before comparing (identity when none)

    def summary(self) -> dict:
        d = {k: getattr(self, k) for k in ("accuracy", "completeness", "chamfer", "accuracy_median",
                                           "completeness_median", "n_pred", "n_gt")}
        d["scale"] = self.alignment.s
        return d


def _points(points: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim < 2 or p.shape[-1] != 3:
        raise ValueError(f"{name} must be points [..., 3], got shape {p.shape}")
    p = p.reshape(-1, 3)
    if len(p) == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(p).all():
        raise ValueError(f"{name} contains non-finite coordinates; mask them out first")
    return p


def _to_o3d(points: np.ndarray, voxel_size: float | None):
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    return cloud.voxel_down_sample(voxel_size) if voxel_size else cloud


def pointcloud_metrics(pred: np.ndarray, gt: np.ndarray, align: Sim3 | str = "none",
                       voxel_size: float | None = None) -> PointCloudMetrics:
    """Compare predicted points [..., 3] with ground-truth points [..., 3].

    `align`: a `Sim3` (pred -> gt) to apply, or "se3" / "sim3" to estimate one from
    corresponding points (pred and gt then need the same shape, row i <-> row i), or "none".
    `voxel_size` (gt units): downsample both clouds after alignment.
    """
    pred, gt = _points(pred, "pred"), _points(gt, "gt")
    if isinstance(align, Sim3):
        sim3 = align
    elif align == "none":
        sim3 = Sim3()
    elif align in ("se3", "sim3"):
        if pred.shape != gt.shape:
            raise ValueError(f"align={align!r} needs corresponding points of equal count, got "
                             f"{len(pred)} pred and {len(gt)} gt points")
        sim3 = Sim3.estimate(pred, gt, with_scale=align == "sim3")
    else:
        raise ValueError(f"align must be a Sim3 or one of 'none', 'se3', 'sim3', got {align!r}")
    if voxel_size is not None and not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")

    pred_cloud, gt_cloud = _to_o3d(sim3.apply(pred), voxel_size), _to_o3d(gt, voxel_size)
    acc = np.asarray(pred_cloud.compute_point_cloud_distance(gt_cloud))
    comp = np.asarray(gt_cloud.compute_point_cloud_distance(pred_cloud))
    return PointCloudMetrics(
        accuracy=float(acc.mean()),
        completeness=float(comp.mean()),
        chamfer=float((acc.mean() + comp.mean()) / 2),
        accuracy_median=float(np.median(acc)),
        completeness_median=float(np.median(comp)),
        n_pred=len(acc),
        n_gt=len(comp),
        alignment=sim3,
    )
