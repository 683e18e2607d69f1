"""Sim(3) between two overlapping windows of predictions, robust to outliers (float64 numpy).

The two windows share frames (the overlap). For each shared frame:
- scale: the same pixel has a camera-space point in both windows; the ratio is fitted by
  iteratively re-weighted least squares (Cauchy or Huber weights) on the *relative* residual
  `|p_map - s p_new| / |p_map|`, so near and far points count alike;
- rotation: `R_map^T R_new` per shared camera (its viewing direction and roll), averaged
  robustly on SO(3);
- translation: from the camera centres once s and R are known, averaged robustly.

`estimate_window_sim3` returns the `Sim3` with `x_map = s R x_new + t` (apply it with
`WindowPrediction.transformed`). Aligning each window to the already aligned map chains the
windows, so every window lands in the first window's frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .prediction import WindowPrediction, camera_points
from .umeyama import Sim3

LOSSES = ("cauchy", "huber")
# Tuning constants for 95% efficiency under Gaussian noise (in units of the robust sigma).
_C = {"cauchy": 2.3849, "huber": 1.345}
_MAD_TO_SIGMA = 1.4826


def robust_weights(residual: np.ndarray, loss: str = "cauchy", floor: float = 1e-12) -> np.ndarray:
    """IRLS weights in [0, 1] for residuals [N] (scale from their median absolute value)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown robust loss {loss!r}; use one of {', '.join(LOSSES)}")
    r = np.abs(residual)
    if r.size == 0:
        return r
    c = _C[loss] * max(_MAD_TO_SIGMA * float(np.median(r)), floor)
    if loss == "cauchy":
        return 1.0 / (1.0 + (r / c) ** 2)
    return np.minimum(1.0, c / np.maximum(r, 1e-300))


@dataclass(frozen=True)
class ScaleFit:
    scale: float  # dst ≈ scale * src
    num: int  # correspondences used
    inlier_fraction: float  # share of them with final weight > 0.5


def robust_scale(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, loss: str = "cauchy", iterations: int = 30,
    max_points: int | None = 20_000,
) -> ScaleFit:
    """Scale s with `dst ≈ s src` for src, dst [N] (depths) or [N, 3] (camera-space points).

    Minimises sum w_i rho(|dst_i - s src_i| / |dst_i|) by IRLS from the median ratio. Pairs
    with a non-finite or zero-length entry, or zero prior weight, are ignored. Raises
    ValueError when no usable pair is left. More than `max_points` pairs are thinned to an
    evenly spaced subset (a one-parameter fit: 20k pairs pin it far below other errors, and
    a window's overlap holds ~10^6 pixels).
    """
    if len(src) != len(dst):
        raise ValueError(f"src and dst must have the same length, got {len(src)} and {len(dst)}")
    if max_points is not None and len(src) > max_points:
        pick = np.linspace(0, len(src) - 1, max_points).astype(np.int64)
        src, dst = np.asarray(src)[pick], np.asarray(dst)[pick]
        weights = None if weights is None else np.asarray(weights).reshape(-1)[pick]
    src = np.asarray(src, dtype=np.float64).reshape(len(src), -1)
    dst = np.asarray(dst, dtype=np.float64).reshape(len(dst), -1)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    prior = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    n_src, n_dst = np.linalg.norm(src, axis=1), np.linalg.norm(dst, axis=1)
    ok = np.isfinite(src).all(1) & np.isfinite(dst).all(1) & (n_src > 0) & (n_dst > 0) & (prior > 0)
    if not ok.any():
        raise ValueError("robust_scale: no usable correspondence (all zero, non-finite or zero-weight)")
    src, dst, prior, n_dst = src[ok], dst[ok], prior[ok], n_dst[ok]
    dot = (src * dst).sum(1) / n_dst**2
    sq = (src * src).sum(1) / n_dst**2
    s = float(np.median(n_dst / n_src[ok]))
    w = prior
    for _ in range(iterations):
        residual = np.linalg.norm(dst - s * src, axis=1) / n_dst
        w = prior * robust_weights(residual, loss)
        s_new = float((w * dot).sum() / (w * sq).sum())
        converged = abs(s_new - s) <= 1e-14 * abs(s)
        s = s_new
        if converged:
            break
    inliers = robust_weights(np.linalg.norm(dst - s * src, axis=1) / n_dst, loss) > 0.5
    return ScaleFit(s, int(len(src)), float(inliers.mean()))


def project_to_so3(m: np.ndarray) -> np.ndarray:
    """Nearest rotation (Frobenius) to a [3, 3] matrix."""
    U, _, Vt = np.linalg.svd(m)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def robust_rotation_mean(rotations: np.ndarray, loss: str = "cauchy", iterations: int = 20) -> np.ndarray:
    """Robust chordal mean of rotations [N, 3, 3] -> [3, 3].

    Starts from the medoid (the sample with the least summed distance to the others), so a
    minority of wild samples cannot pull the start away, then IRLS on chordal distances.
    """
    Rs = np.asarray(rotations, dtype=np.float64)
    dist = np.linalg.norm(Rs[:, None] - Rs[None], axis=(2, 3))
    R = Rs[int(dist.sum(1).argmin())]
    for _ in range(iterations):
        w = robust_weights(np.linalg.norm(Rs - R, axis=(1, 2)), loss)
        R = project_to_so3((w[:, None, None] * Rs).sum(0))
    return R


def robust_mean(points: np.ndarray, loss: str = "cauchy", iterations: int = 20) -> np.ndarray:
    """Robust mean of points [N, 3] -> [3]: coordinate-wise median, then IRLS on distances."""
    p = np.asarray(points, dtype=np.float64)
    mu = np.median(p, axis=0)
    floor = 1e-12 * (1.0 + float(np.abs(p).max()))
    for _ in range(iterations):
        w = robust_weights(np.linalg.norm(p - mu, axis=1), loss, floor=floor)
        mu = (w[:, None] * p).sum(0) / w.sum()
    return mu


@dataclass(frozen=True)
class Sim3Fit:
    sim3: Sim3  # x_map = s R x_new + t
    num_points: int  # confident camera-space correspondences behind the scale
    inlier_fraction: float  # of those correspondences
    scale_from: str  # "points", "cameras" (no confident overlap) or "none" (scale 1)


def confident_overlap(map_part: WindowPrediction, new_part: WindowPrediction, conf_quantile: float = 0.5) -> np.ndarray:
    """[O, H, W] mask of pixels with valid depth in both, and confidence at or above the
    `conf_quantile` quantile of each side's valid pixels (0 keeps every valid pixel)."""
    if not 0.0 <= conf_quantile < 1.0:
        raise ValueError(f"conf_quantile must be in [0, 1), got {conf_quantile}")
    valid = np.ones(map_part.depth.shape, dtype=bool)
    for p in (map_part, new_part):
        valid &= np.isfinite(p.depth) & (p.depth > 0) & np.isfinite(p.depth_conf)
    if not valid.any():
        return valid
    for p in (map_part, new_part):
        valid &= p.depth_conf >= np.quantile(p.depth_conf[valid], conf_quantile)
    return valid


def estimate_window_sim3(
    map_part: WindowPrediction,
    new_part: WindowPrediction,
    conf_quantile: float = 0.5,
    loss: str = "cauchy",
    min_points: int = 16,
) -> Sim3Fit:
    """Sim(3) taking the new window's world frame onto the map's, from their shared frames.

    map_part, new_part: the same O >= 1 frames, [O, ...] each (same H, W), e.g.
    `map.select(-O)` and `window.select(slice(0, O))`. With fewer than `min_points` confident
    correspondences the scale comes from the camera-centre spread (O >= 2, non-zero
    baseline), else it is 1.
    """
    if len(map_part) != len(new_part) or len(map_part) == 0:
        raise ValueError(f"overlap must hold the same O >= 1 frames on both sides, got {len(map_part)} and {len(new_part)}")
    if map_part.hw != new_part.hw:
        raise ValueError(f"overlap frames differ in size: {map_part.hw} and {new_part.hw}")
    mask = confident_overlap(map_part, new_part, conf_quantile)
    scale, num, inliers, source = 1.0, int(mask.sum()), 0.0, "none"
    if num >= min_points:
        p_map = camera_points(map_part.depth, map_part.intrinsic)[mask]
        p_new = camera_points(new_part.depth, new_part.intrinsic)[mask]
        fit = robust_scale(p_new, p_map, loss=loss)
        scale, inliers, source = fit.scale, fit.inlier_fraction, "points"
    c_map, c_new = map_part.camera_centers(), new_part.camera_centers()
    if source == "none" and len(c_map) >= 2:
        i, j = np.triu_indices(len(c_map), k=1)
        b_map, b_new = np.linalg.norm(c_map[i] - c_map[j], axis=1), np.linalg.norm(c_new[i] - c_new[j], axis=1)
        ok = (b_new > 1e-9 * (1 + np.abs(c_new).max())) & (b_map > 0)
        if ok.any():
            scale, source = float(np.median(b_map[ok] / b_new[ok])), "cameras"
    R_map, R_new = map_part.extrinsic[:, :, :3], new_part.extrinsic[:, :, :3]
    R = robust_rotation_mean(np.swapaxes(R_map, 1, 2) @ R_new, loss)
    t = robust_mean(c_map - scale * c_new @ R.T, loss)
    return Sim3Fit(Sim3(scale, R, t), num, inliers, source)
