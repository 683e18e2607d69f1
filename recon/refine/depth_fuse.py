"""Multi-view depth fusion: each frame's depth replaced by the median of the depths its
neighbours see at the same pixel.

After the end-of-stream adjustment the cameras agree with each other far better than the model's
per-frame depths do (whose errors differ from view to view), so a pixel's depth seen by several
frames is better estimated by the median over them than by any one frame. Frame j's depth map is
lifted to 3D with its camera and projected into frame i (the nearest surface wins where several
land on one pixel); a reprojected depth more than `max_log_diff` (log) from frame i's own is an
occlusion or a different surface and is left out. Pixel centres are at +0.5 (recon.refine's
convention); extrinsics are camera-from-world [3, 4].
"""

from __future__ import annotations

import numpy as np

from .bundle import lift


def reproject_depth(depth: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray,
                    intrinsic_to: np.ndarray, extrinsic_to: np.ndarray) -> np.ndarray:  # fmt: skip
    """Depth [H, W] seen by camera (intrinsic, extrinsic) -> [H, W] depth of the same surface in
    camera (intrinsic_to, extrinsic_to), NaN where nothing lands. Invalid pixels (<= 0 or not
    finite) are not lifted."""
    return _splat(_lift(depth, intrinsic, extrinsic), intrinsic_to, extrinsic_to, depth.shape)


def _lift(depth: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray) -> np.ndarray:
    """The valid pixels of depth [H, W] as world points [3, N] (float32: one row per axis keeps
    the per-point arithmetic of `_splat` on contiguous arrays)."""
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    xy = np.stack((u + 0.5, v + 0.5), axis=1)
    return np.ascontiguousarray(lift(xy, depth[v, u], extrinsic, intrinsic).T, dtype=np.float32)


def _splat(world: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """World points [3, N] -> the depth map [H, W] of the nearest one per pixel (NaN: none)."""
    H, W = shape
    R, t = extrinsic[:, :3].astype(np.float32), extrinsic[:, 3].astype(np.float32)
    x, y, z = R @ world + t[:, None]
    front = z > 1e-6
    x, y, z = x[front], y[front], z[front]
    fx, fy, cx, cy = (float(intrinsic[i, j]) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))  # stay float32
    col = np.floor(fx * x / z + cx).astype(np.int64)
    row = np.floor(fy * y / z + cy).astype(np.int64)
    inside = (col >= 0) & (col < W) & (row >= 0) & (row < H)
    out = np.full(H * W, np.inf)
    np.minimum.at(out, row[inside] * W + col[inside], z[inside])
    out[np.isinf(out)] = np.nan
    return out.reshape(H, W)


def fuse_depth(depth: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray, radius: int = 24,
               max_log_diff: float = 0.3) -> np.ndarray:  # fmt: skip
    """Depths [S, H, W] of frames with cameras intrinsic [S, 3, 3], extrinsic [S, 3, 4] -> fused
    depths [S, H, W]: per pixel the median of the frame's own depth and those of the frames up to
    `radius` away in the sequence that land there within `max_log_diff` of it. Pixels the frame
    itself has no valid depth at stay as they are."""
    depth = np.asarray(depth, np.float64)
    fused = depth.copy()
    world = [_lift(d, K, E) for d, K, E in zip(depth, intrinsic, extrinsic)]
    for i in range(len(depth)):
        own = depth[i]
        valid = np.isfinite(own) & (own > 0)
        if not valid.any():
            continue
        candidates = [own[valid]]
        for j in range(max(0, i - radius), min(len(depth), i + radius + 1)):
            if j == i:
                continue
            seen = _splat(world[j], intrinsic[i], extrinsic[i], own.shape)
            with np.errstate(invalid="ignore", divide="ignore"):
                far = ~(np.abs(np.log(seen / np.where(valid, own, 1.0))) <= max_log_diff)
            seen[far] = np.nan
            candidates.append(seen[valid])
        fused[i][valid] = np.nanmedian(np.stack(candidates), axis=0)  # never all NaN: the own depth
    return fused
