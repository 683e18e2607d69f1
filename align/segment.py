"""Depth layers: graph-based segmentation of a depth map (Felzenszwalb-Huttenlocher on
log-depth) followed by merging neighbouring regions whose depths meet across their boundary.

Runs on a map downsampled to at most `max_side` pixels per side (nearest neighbour, so no
depths are blended across a discontinuity) and brings the labels back at full resolution.
Labels are 0..n-1 per map, -1 where the depth is invalid (non-finite or <= 0).
"""

from __future__ import annotations

import numpy as np


def _grid_edges(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4-neighbour edges (a, b) between valid pixels of an [h, w] mask, as flat indices [E]."""
    h, w = valid.shape
    idx = np.arange(h * w).reshape(h, w)
    a = np.concatenate((idx[:, :-1].ravel(), idx[:-1, :].ravel()))
    b = np.concatenate((idx[:, 1:].ravel(), idx[1:, :].ravel()))
    flat = valid.ravel()
    keep = flat[a] & flat[b]
    return a[keep], b[keep]


def _roots(parent: list[int]) -> np.ndarray:
    p = np.asarray(parent)
    while True:
        nxt = p[p]
        if np.array_equal(nxt, p):
            return p
        p = nxt


def _compact(roots: np.ndarray, valid: np.ndarray) -> np.ndarray:
    labels = np.full(roots.shape, -1, dtype=np.int64)
    if valid.any():
        labels[valid] = np.unique(roots[valid], return_inverse=True)[1]
    return labels


def felzenszwalb(values: np.ndarray, valid: np.ndarray | None = None, k: float = 0.3, min_size: int = 16) -> np.ndarray:
    """Graph-based segmentation of a scalar map [h, w] -> labels [h, w] (-1 where not valid).

    Edges join 4-neighbours with weight |values_a - values_b|; two regions merge when the edge
    between them is no heavier than either region's largest internal edge plus k / size.
    Regions under `min_size` pixels are then merged into their lightest-edge neighbour.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(v))
    h, w = v.shape
    a, b = _grid_edges(ok)
    weight = np.abs(v.ravel()[a] - v.ravel()[b])
    order = np.argsort(weight, kind="stable")
    a, b, weight = a[order].tolist(), b[order].tolist(), weight[order].tolist()
    parent, size, internal = list(range(h * w)), [1] * (h * w), [0.0] * (h * w)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(ra: int, rb: int, wt: float) -> None:
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size[rb]
        internal[ra] = max(internal[ra], internal[rb], wt)

    for i, j, wt in zip(a, b, weight):
        ri, rj = find(i), find(j)
        if ri != rj and wt <= min(internal[ri] + k / size[ri], internal[rj] + k / size[rj]):
            union(ri, rj, wt)
    # Small regions only grow by merging, so an edge between two regions that are already
    # large enough never qualifies: only edges touching a small region are visited.
    roots = _roots(parent)
    big = np.bincount(roots, minlength=h * w)[roots] >= min_size
    touch = ~(big[np.asarray(a, dtype=np.int64)] & big[np.asarray(b, dtype=np.int64)]) if a else np.zeros(0, bool)
    for e in np.flatnonzero(touch).tolist():
        ri, rj = find(a[e]), find(b[e])
        if ri != rj and (size[ri] < min_size or size[rj] < min_size):
            union(ri, rj, weight[e])
    return _compact(_roots(parent).reshape(h, w), ok)


def merge_similar_layers(labels: np.ndarray, values: np.ndarray, tol: float) -> np.ndarray:
    """Merge neighbouring regions whose mean |value step| across their shared boundary is < tol.

    labels [h, w] (-1 ignored), values [h, w] -> relabelled [h, w] (0..m-1, -1 kept). A smooth
    surface cut in pieces has small steps at its cuts; an occlusion edge has one large step.
    """
    n = int(labels.max()) + 1
    if n <= 1:
        return labels
    a, b = _grid_edges(labels >= 0)
    la, lb = labels.ravel()[a], labels.ravel()[b]
    cross = la != lb
    lo, hi = np.minimum(la, lb)[cross], np.maximum(la, lb)[cross]
    step = np.abs(values.ravel()[a] - values.ravel()[b])[cross]
    pairs, inverse = np.unique(lo * n + hi, return_inverse=True)
    mean_step = np.bincount(inverse, weights=step) / np.bincount(inverse)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for pair in pairs[mean_step < tol].tolist():
        ri, rj = find(pair // n), find(pair % n)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = _roots(parent)
    out = np.full(labels.shape, -1, dtype=np.int64)
    valid = labels >= 0
    out[valid] = np.unique(roots[labels[valid]], return_inverse=True)[1]
    return out


def segment_depth_layers(
    depth: np.ndarray,
    valid: np.ndarray | None = None,
    k: float = 0.3,
    min_size: int = 16,
    merge_tol: float = 0.05,
    max_side: int = 96,
) -> np.ndarray:
    """Depth layers of one depth map [H, W] -> labels [H, W] (0..n-1, -1 where invalid).

    Segments log-depth (so thresholds are relative depth steps) on a map downsampled to at
    most `max_side` pixels per side; `min_size` is counted at that resolution.
    """
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {d.shape}")
    ok = np.isfinite(d) & (d > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    H, W = d.shape
    if not ok.any():
        return np.full((H, W), -1, dtype=np.int64)
    step = max(1, -(-max(H, W) // max_side))
    rows = np.minimum(np.arange(0, H, step) + step // 2, H - 1)
    cols = np.minimum(np.arange(0, W, step) + step // 2, W - 1)
    small_ok = ok[np.ix_(rows, cols)]
    log_d = np.where(ok, np.log(np.where(ok, d, 1.0)), np.nan)[np.ix_(rows, cols)]
    labels = felzenszwalb(log_d, small_ok, k=k, min_size=min_size)
    labels = merge_similar_layers(labels, np.nan_to_num(log_d), merge_tol)
    full = labels[np.ix_(np.arange(H) // step, np.arange(W) // step)]
    # Pixels the coarse grid called valid but that are not (or vice versa) must not mislead.
    full[~ok] = -1
    return full
