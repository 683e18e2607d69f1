"""Fitting a dense depth map to sparse measured depths (joint-bilateral spreading of log ratios).

The model's depth is smooth and right in shape locally, but whole surfaces sit at the wrong
depth (docs/MODEL_CARD.md, session 9); a few hundred accurate depths per frame (here, bundle-
adjusted landmarks) correct most of that. Each measurement i at pixel p_i gives a log ratio
r_i = log(target_i / depth(p_i)); pixel p gets the weighted mean

    c(p) = (sum_i w_i k(p, p_i) r_i + prior * r_0) / (sum_i w_i k(p, p_i) + prior),
    k(p, p_i) = exp(-|p - p_i|^2 / 2 sigma_px^2) * exp(-(log depth(p) - log depth(p_i))^2 / 2 sigma_log^2)

where r_0 is the weighted median ratio: the range term keeps a correction on the surface it was
measured on (a step in the model's depth stops it), and pixels no measurement reaches take r_0.
"""

from __future__ import annotations

import numpy as np


def fit_depth(
    depth: np.ndarray,
    xy: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None = None,
    sigma_px: float = 12.0,
    sigma_log: float = 0.1,
    prior: float = 1e-3,
    tile: int = 32,
) -> np.ndarray:
    """depth [H, W] (> 0 where valid), measurements at pixels xy [N, 2] (pixel centres at +0.5)
    of depths target [N] with weights [N] in [0, 1] -> depth [H, W] times exp(c) (see the module
    doc). Invalid pixels (non-finite or <= 0) come back unchanged; with no usable measurement the
    depth comes back unchanged."""
    depth = np.asarray(depth, np.float64)
    weight = np.ones(len(xy)) if weight is None else np.asarray(weight, np.float64)
    at = sample_depth(depth, xy)
    ok = np.isfinite(at) & (at > 0) & np.isfinite(target) & (target > 0) & (weight > 0)
    if not ok.any():
        return depth
    xs, ys, w = xy[ok, 0], xy[ok, 1], weight[ok]
    log_at = np.log(at[ok])
    ratio = np.log(target[ok]) - log_at
    r0 = _weighted_median(ratio, w)
    H, W = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    log_depth = np.log(np.where(valid, depth, 1.0)).astype(np.float32)
    correction = np.full((H, W), r0)
    reach = 3.0 * sigma_px  # measurements farther than this in x or y are left out
    xs, ys, w, log_at, ratio = (a.astype(np.float32) for a in (xs, ys, w, log_at, ratio))
    for top in range(0, H, tile):
        for left in range(0, W, tile):
            rows = np.arange(top, min(top + tile, H), dtype=np.float32) + 0.5
            cols = np.arange(left, min(left + tile, W), dtype=np.float32) + 0.5
            near = (ys > rows[0] - reach) & (ys < rows[-1] + reach) & (xs > cols[0] - reach) & (xs < cols[-1] + reach)
            if not near.any():
                continue
            # the spatial kernel is separable: [h, n] x [w, n]
            gy = np.exp(-((rows[:, None] - ys[near]) ** 2) / (2 * sigma_px**2)) * w[near]
            gx = np.exp(-((cols[:, None] - xs[near]) ** 2) / (2 * sigma_px**2))
            block = log_depth[top : top + len(rows), left : left + len(cols), None]
            k = gy[:, None, :] * gx[None, :, :] * np.exp(-((block - log_at[near]) ** 2) / (2 * sigma_log**2))
            correction[top : top + len(rows), left : left + len(cols)] = (
                ((k * ratio[near]).sum(-1) + prior * r0) / (k.sum(-1) + prior))  # fmt: skip
    return np.where(valid, depth * np.exp(correction), depth)


def sample_depth(depth: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear depth [H, W] at continuous pixels xy [N, 2] (pixel centres at +0.5); NaN outside."""
    H, W = depth.shape
    x, y = xy[:, 0] - 0.5, xy[:, 1] - 0.5
    inside = (x >= 0) & (y >= 0) & (x <= W - 1) & (y <= H - 1)
    x0 = np.clip(np.floor(x).astype(np.int64), 0, W - 2)
    y0 = np.clip(np.floor(y).astype(np.int64), 0, H - 2)
    ax, ay = np.clip(x - x0, 0, 1), np.clip(y - y0, 0, 1)
    d = (depth[y0, x0] * (1 - ax) * (1 - ay) + depth[y0, x0 + 1] * ax * (1 - ay)
         + depth[y0 + 1, x0] * (1 - ax) * ay + depth[y0 + 1, x0 + 1] * ax * ay)  # fmt: skip
    return np.where(inside, d, np.nan)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])
