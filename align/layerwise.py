"""Layer-wise scale alignment of a window to the map (float64 numpy).

A single Sim(3) cannot fix a monocular model that, in one window, puts the foreground too
close relative to the background: each depth layer carries its own scale error. So:

1. segment every depth map of the (Sim(3)-aligned) window into depth layers
   (`recon.align.segment`);
2. on each shared (overlap) frame, link the window's layers to the map's layers of the same
   frame by mask IoU, and fit a robust scale on each linked pair's confident pixels
   (map depth vs window depth); a layer's correction is the IoU-weighted geometric mean;
3. carry corrections forward in time: a layer of frame t+1 takes the IoU-weighted geometric
   mean of the frame-t layers it overlaps (same pixels, so this assumes modest motion
   between consecutive frames); layers linked to nothing keep the Sim(3) alone (factor 1);
4. multiply depth by the per-pixel factor and move world points along their camera rays.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
from dataclasses import dataclass

import numpy as np

from .prediction import WindowPrediction, scale_along_rays
from .segment import segment_depth_layers
from .sim3 import robust_scale


@dataclass(frozen=True)
class LayerConfig:
    k: float = 0.3  # Felzenszwalb threshold on log-depth steps
    min_size: int = 16  # smallest layer, pixels at the segmentation resolution
    merge_tol: float = 0.05  # merge neighbours whose boundary log-depth step is below this
    max_side: int = 96  # segmentation resolution
    min_iou: float = 0.3  # link two layers only above this mask IoU
    min_pixels: int = 20  # confident pixels a linked pair needs to measure a scale
    max_correction: float = 4.0  # corrections are clamped to [1/x, x]
    conf_quantile: float = 0.3  # pixels below this confidence quantile do not measure
    loss: str = "cauchy"
    workers: int = 0  # processes segmenting a window's frames in parallel (0: in this process)


def segment_layers(depth: np.ndarray, config: LayerConfig = LayerConfig()) -> np.ndarray:
    """Depth layers of every frame: depth [S, H, W] -> labels [S, H, W] (-1 invalid)."""
    segment = functools.partial(segment_depth_layers, valid=None, k=config.k, min_size=config.min_size,
                                merge_tol=config.merge_tol, max_side=config.max_side)  # fmt: skip
    if config.workers > 1 and len(depth) > 1:
        # Segmentation is a Python union-find: processes, not threads, run it in parallel.
        return np.stack(list(_pool(config.workers).map(segment, depth)))
    return np.stack([segment(d) for d in depth])


@functools.cache
def _pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    # fork: workers start at once and need no importable __main__ (scripts, notebooks). They
    # run numpy only, never torch or CUDA, which are what make forking a CUDA process unsafe.
    context = multiprocessing.get_context("fork")
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)


def link_segments(labels_a: np.ndarray, labels_b: np.ndarray, min_iou: float) -> tuple[np.ndarray, ...]:
    """Layers of two label maps [H, W] that overlap with IoU >= min_iou.

    Returns (ia [L], ib [L], iou [L]): label of a, label of b, their mask IoU.
    """
    na, nb = int(labels_a.max()) + 1, int(labels_b.max()) + 1
    if na <= 0 or nb <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    area_a = np.bincount(labels_a[labels_a >= 0], minlength=na)
    area_b = np.bincount(labels_b[labels_b >= 0], minlength=nb)
    both = (labels_a >= 0) & (labels_b >= 0)
    inter = np.bincount(labels_a[both] * nb + labels_b[both], minlength=na * nb).reshape(na, nb)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    ia, ib = np.nonzero(iou >= max(min_iou, 1e-12))
    return ia, ib, iou[ia, ib]


def _weighted_log_mean(index: np.ndarray, values: np.ndarray, weights: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-target weighted mean of `values` grouped by `index` -> (mean [n], has_value [n])."""
    wsum = np.bincount(index, weights=weights, minlength=n)
    vsum = np.bincount(index, weights=weights * values, minlength=n)
    has = wsum > 0
    return np.where(has, vsum / np.where(has, wsum, 1.0), 0.0), has


def measure_layer_scales(
    labels: np.ndarray, depth: np.ndarray, map_labels: np.ndarray, map_depth: np.ndarray, usable: np.ndarray,
    config: LayerConfig = LayerConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Log scale correction of each layer of one shared frame, measured against the map.

    labels, depth: the window's layers and depth [H, W]; map_labels, map_depth: the map's for
    the same frame [H, W]; usable [H, W]: pixels allowed to measure. Returns
    (log_correction [n], measured [n]) for the window's n layers.
    """  # fmt: skip
    n = int(labels.max()) + 1
    ia, ib, iou = link_segments(labels, map_labels, config.min_iou)
    logs, keep = np.zeros(len(ia)), np.zeros(len(ia), dtype=bool)
    for i, (a, b) in enumerate(zip(ia.tolist(), ib.tolist())):
        pix = usable & (labels == a) & (map_labels == b)
        if pix.sum() >= config.min_pixels:
            logs[i] = np.log(robust_scale(depth[pix], map_depth[pix], loss=config.loss).scale)
            keep[i] = True
    return _weighted_log_mean(ia[keep], logs[keep], iou[keep], max(n, 0))


def propagate_layer_scales(
    labels: np.ndarray, prev_labels: np.ndarray, prev_log: np.ndarray, prev_has: np.ndarray, min_iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """Carry log corrections [m] (valid where prev_has [m]) of frame t's layers prev_labels
    [H, W] to frame t+1's layers labels [H, W] -> (log_correction [n], has_value [n])."""
    n = int(labels.max()) + 1
    ia, ib, iou = link_segments(labels, prev_labels, min_iou)
    keep = prev_has[ib] if len(ib) else np.zeros(0, dtype=bool)
    return _weighted_log_mean(ia[keep], prev_log[ib[keep]], iou[keep], max(n, 0))


@dataclass
class LayerAlignment:
    scale: np.ndarray  # [S, H, W] per-pixel depth factor (1 where no layer was linked)
    labels: np.ndarray  # [S, H, W] depth layers of the window (-1 invalid)
    measured_layers: int  # layers measured directly on the shared frames
    corrected_layers: int  # layers with any correction (measured or carried forward)


def layerwise_corrections(
    window: WindowPrediction, map_part: WindowPrediction, map_labels: np.ndarray | None = None,
    config: LayerConfig = LayerConfig(),
) -> LayerAlignment:
    """Per-pixel depth corrections of a Sim(3)-aligned window against the map.

    window: S frames, the first O of which are the map's frames `map_part` (O, same H, W);
    map_labels [O, H, W]: the map's layers of those frames (segmented here when None).
    """  # fmt: skip
    O = len(map_part)
    if O > len(window) or map_part.hw != window.hw:
        raise ValueError(f"map part ({O} frames of {map_part.hw}) does not fit the window "
                         f"({len(window)} frames of {window.hw})")  # fmt: skip
    labels = segment_layers(window.depth, config)
    if map_labels is None:
        map_labels = segment_layers(map_part.depth, config)
    scale = np.ones(window.depth.shape)
    prev = None
    measured = corrected = 0
    for t in range(len(window)):
        n = int(labels[t].max()) + 1
        log_c, has = np.zeros(max(n, 0)), np.zeros(max(n, 0), dtype=bool)
        if t < O:
            usable = _confident(window.depth[t], window.depth_conf[t], config.conf_quantile)
            usable &= _confident(map_part.depth[t], map_part.depth_conf[t], config.conf_quantile)
            log_c, has = measure_layer_scales(labels[t], window.depth[t], map_labels[t], map_part.depth[t], usable, config)
            measured += int(has.sum())
        if prev is not None:
            carried, carried_has = propagate_layer_scales(labels[t], *prev, config.min_iou)
            log_c = np.where(has, log_c, carried)
            has = has | carried_has
        limit = np.log(config.max_correction)
        log_c = np.clip(np.where(has, log_c, 0.0), -limit, limit)
        corrected += int(has.sum())
        inside = labels[t] >= 0
        scale[t][inside] = np.exp(log_c[labels[t][inside]])
        prev = (labels[t], log_c, has)
    return LayerAlignment(scale, labels, measured, corrected)


def _confident(depth: np.ndarray, conf: np.ndarray, quantile: float) -> np.ndarray:
    ok = np.isfinite(depth) & (depth > 0) & np.isfinite(conf)
    if ok.any() and quantile > 0:
        ok &= conf >= np.quantile(conf[ok], quantile)
    return ok


def apply_depth_scale(window: WindowPrediction, scale: np.ndarray) -> WindowPrediction:
    """Multiply depth [S, H, W] by `scale` [S, H, W] and move world points along their rays."""
    if scale.shape != window.depth.shape:
        raise ValueError(f"scale must match depth {window.depth.shape}, got {scale.shape}")
    points = window.world_points
    return WindowPrediction(
        window.extrinsic, window.intrinsic, window.depth * scale, window.depth_conf,
        None if points is None else scale_along_rays(points, window.extrinsic, scale), window.points_conf,
    )  # fmt: skip
