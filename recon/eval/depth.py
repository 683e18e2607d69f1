"""Depth metrics (AbsRel, SqRel, RMSE, log RMSE, delta < 1.25^k) with median scale alignment.

Valid pixels: gt finite, gt > 0 (and gt <= max_depth when given, and inside an optional mask).
Metrics pool every valid pixel of every frame (each pixel weighs the same). Scale alignment:

- "median" (default): ONE scale for the whole sequence, median(gt) / median(pred) over all valid
  pixels of all frames, so a prediction that is right up to one global scale scores perfectly;
- "median_per_frame": a scale per frame (forgives scale drift between frames);
- "none": metric depth as predicted.

Predicted depths that are not finite or not > 0 on a valid pixel count as failures: they are
replaced by a tiny positive depth (`_FLOOR`), which fails every delta threshold. They are
excluded from the median that sets the scale. When no pixel is valid, or no prediction on a
valid pixel is positive, the metrics are NaN and `ok` is False with the reason in `note`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

SCALE_MODES = ("median", "median_per_frame", "none")
_FLOOR = 1e-6


@dataclass
class DepthMetrics:
    abs_rel: float
    sq_rel: float
    rmse: float
    log_rmse: float
    delta1: float  # fraction of valid pixels with max(pred/gt, gt/pred) < 1.25
    delta2: float  # ... < 1.25 ** 2
    delta3: float  # ... < 1.25 ** 3
    n_valid: int
    scale: float | np.ndarray  # the sequence scale, or [S] per-frame scales (NaN for empty frames)
    per_frame_abs_rel: np.ndarray = field(repr=False)  # [S], NaN where a frame has no valid pixel
    ok: bool = True
    note: str = ""

    def summary(self) -> dict:
        d = asdict(self)
        d["scale"] = np.asarray(self.scale).tolist()
        d["per_frame_abs_rel"] = self.per_frame_abs_rel.tolist()
        return d


def _empty(num_frames: int, scale, note: str, n_valid: int) -> DepthMetrics:
    nan = float("nan")
    return DepthMetrics(nan, nan, nan, nan, nan, nan, nan, n_valid, scale,
                        np.full(num_frames, nan), ok=False, note=note)


def _safe_scale(gt_vals: np.ndarray, pred_vals: np.ndarray) -> float:
    usable = pred_vals[np.isfinite(pred_vals) & (pred_vals > 0)]
    if gt_vals.size == 0 or usable.size == 0:
        return float("nan")
    return float(np.median(gt_vals) / np.median(usable))


def depth_metrics(pred: np.ndarray, gt: np.ndarray, scale_mode: str = "median", max_depth: float | None = None,
                  mask: np.ndarray | None = None) -> DepthMetrics:
    """Compare predicted depth [S, H, W] (or [H, W]) with ground truth of the same shape.

    `mask` (same shape, bool) further restricts the valid pixels. See the module doc.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim not in (2, 3):
        raise ValueError(f"depth_metrics: pred and gt must both be [H, W] or [S, H, W], "
                         f"got {pred.shape} and {gt.shape}")
    if scale_mode not in SCALE_MODES:
        raise ValueError(f"depth_metrics: scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}")
    if mask is not None and np.shape(mask) != gt.shape:
        raise ValueError(f"depth_metrics: mask shape {np.shape(mask)} does not match depth shape {gt.shape}")
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
        mask = None if mask is None else np.asarray(mask)[None]
    valid = np.isfinite(gt) & (gt > 0)
    if max_depth is not None:
        valid &= gt <= max_depth
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    num_frames = len(gt)

    if scale_mode == "median":
        scale = _safe_scale(gt[valid], pred[valid])
        frame_scale = np.full(num_frames, scale)
    elif scale_mode == "median_per_frame":
        frame_scale = np.array([_safe_scale(g[v], p[v]) for g, p, v in zip(gt, pred, valid)])
        scale = frame_scale
    else:
        scale = 1.0
        frame_scale = np.ones(num_frames)
    n_valid = int(valid.sum())
    if n_valid == 0:
        return _empty(num_frames, scale, "no valid ground-truth pixel", 0)
    # Frames whose scale is undefined (no usable prediction) drop out of the evaluation.
    valid &= np.isfinite(frame_scale)[:, None, None]
    if not valid.any():
        return _empty(num_frames, scale, "no positive finite prediction on a valid pixel", n_valid)

    scaled = pred * frame_scale[:, None, None]
    scaled = np.where(np.isfinite(scaled) & (scaled > 0), scaled, _FLOOR)
    p, g = scaled[valid], gt[valid]
    ratio = np.maximum(p / g, g / p)
    abs_rel_map = np.where(valid, np.abs(scaled - gt) / np.where(valid, gt, 1.0), 0.0)
    counts = valid.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_frame = abs_rel_map.sum(axis=(1, 2)) / counts
    return DepthMetrics(
        abs_rel=float(np.mean(np.abs(p - g) / g)),
        sq_rel=float(np.mean((p - g) ** 2 / g)),
        rmse=float(np.sqrt(np.mean((p - g) ** 2))),
        log_rmse=float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        delta1=float(np.mean(ratio < 1.25)),
        delta2=float(np.mean(ratio < 1.25**2)),
        delta3=float(np.mean(ratio < 1.25**3)),
        n_valid=int(valid.sum()),
        scale=scale,
        per_frame_abs_rel=np.where(counts > 0, per_frame, np.nan),
    )
