"""Point selection and voxel merging shared by the exports and the viewer."""

from __future__ import annotations

import numpy as np

from .session import FramePrediction


def finite_rows(points: np.ndarray) -> np.ndarray:
    """[N] bool: rows of points [N, 3] without inf or NaN (column-wise: ~10x faster than
    isfinite(points).all(axis=1), which reduces over a length-3 axis)."""
    return np.isfinite(points[:, 0]) & np.isfinite(points[:, 1]) & np.isfinite(points[:, 2])


def inside_original(pred: FramePrediction) -> np.ndarray:
    """[H, W] bool: model pixels whose centre maps into the original image (False on padding)."""
    H, W = pred.depth.shape
    (h, w), (sx, sy), (ox, oy) = pred.transform.original_hw, pred.transform.scale, pred.transform.offset
    u = (np.arange(W) + 0.5 - ox) / sx
    v = (np.arange(H) + 0.5 - oy) / sy
    return ((v >= 0) & (v < h))[:, None] & ((u >= 0) & (u < w))[None, :]


def confidence_mask(conf: np.ndarray, valid: np.ndarray, threshold: float | None, percentile: float | None) -> np.ndarray:
    """`valid` pixels with conf > threshold and conf >= the `percentile`-th percentile of the
    remaining ones, i.e. the lowest `percentile` percent are dropped (same shape as conf)."""
    keep = valid & np.isfinite(conf)
    if threshold is not None:
        keep &= conf > threshold
    if percentile is not None and percentile > 0 and keep.any():
        keep &= conf >= np.percentile(conf[keep], percentile)
    return keep


def voxel_merge(
    points: np.ndarray, colors: np.ndarray, weights: np.ndarray, voxel: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted mean per cubic voxel of points [N, 3] and colours [N, 3]; weights [N] (how many
    raw points each one stands for) are summed, so merging again at the same voxel size gives
    the same result whatever order the points arrived in.

    Returns (points [M, 3], colours [M, 3] float32, weights [M]), M <= N.
    """
    if len(points) == 0:
        return points, colors, weights
    keys = np.floor(points / voxel).astype(np.int64)
    keys -= keys.min(axis=0)
    span = keys.max(axis=0) + 1
    if float(np.prod(span.astype(np.float64))) < 2.0**62:
        _, inverse = np.unique((keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2], return_inverse=True)
    else:  # an extent too large for one packed key at this voxel size: compare rows
        _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    total = np.bincount(inverse, weights=weights)

    def mean(values: np.ndarray) -> np.ndarray:
        sums = [np.bincount(inverse, weights=weights * values[:, k]) for k in range(values.shape[1])]
        return np.stack(sums, axis=1) / total[:, None]

    return mean(points).astype(points.dtype, copy=False), mean(colors).astype(np.float32), total
