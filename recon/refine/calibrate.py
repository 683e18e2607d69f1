"""Focal length from image matches alone (Mendonca-Cipolla self-calibration).

For a pair of views with fundamental matrix F and the true intrinsics K, E = K^T F K is an
essential matrix: its two non-zero singular values are equal. With the principal point at the
image centre and square pixels, one unknown remains, the focal length f; the cost
    c(f) = (s1 - s2) / (s1 + s2),    s1 >= s2 the larger singular values of K(f)^T F K(f)
is 0 at the true focal. Costs of many pairs are summed over a grid of log-focal values, and the
minimum is the stream's focal. Pairs whose matches a homography explains about as well (a camera
that only rotates, or a single plane) say nothing about f and are skipped.
"""

from __future__ import annotations

import cv2
import numpy as np


def essential_cost(F: np.ndarray, focals: np.ndarray, principal_point: tuple[float, float]) -> np.ndarray:
    """F [3, 3] (x2^T F x1 = 0 in pixels), candidate focals [G] -> c(f) [G] in [0, 1]."""
    cx, cy = principal_point
    K = np.zeros((len(focals), 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = focals
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = cx, cy, 1.0
    E = np.swapaxes(K, 1, 2) @ F @ K
    s = np.linalg.svd(E, compute_uv=False)
    return (s[:, 0] - s[:, 1]) / np.maximum(s[:, 0] + s[:, 1], 1e-300)


class FocalEstimator:
    """Accumulates c(f) over view pairs; `focal()` is the minimum over the grid (None until
    `min_pairs` informative pairs were seen)."""

    def __init__(self, width: int, height: int, min_pairs: int = 5, min_matches: int = 40,
                 homography_ratio: float = 0.9, ransac_px: float = 1.0) -> None:  # fmt: skip
        side = max(width, height)
        self.principal_point = (width / 2.0, height / 2.0)
        self.grid = np.exp(np.linspace(np.log(0.2 * side), np.log(4.0 * side), 181))
        self.cost = np.zeros(len(self.grid))
        self.pairs = 0
        self.min_pairs, self.min_matches = min_pairs, min_matches
        self.homography_ratio, self.ransac_px = homography_ratio, ransac_px

    def add_pair(self, xy1: np.ndarray, xy2: np.ndarray) -> bool:
        """Matched pixels [N, 2] of two views. Returns whether the pair was used."""
        if len(xy1) < self.min_matches:
            return False
        try:
            F, f_mask = cv2.findFundamentalMat(xy1, xy2, cv2.FM_RANSAC, self.ransac_px, 0.999, 2000)
            if F is None or F.shape != (3, 3) or f_mask is None:
                return False
            f_inliers = int(f_mask.sum())
            if f_inliers < self.min_matches:
                return False
            _, h_mask = cv2.findHomography(xy1, xy2, cv2.RANSAC, self.ransac_px)
        except cv2.error:  # degenerate point sets
            return False
        if h_mask is not None and h_mask.sum() >= self.homography_ratio * f_inliers:
            return False  # rotation-only or planar: F is not determined by the motion
        self.cost += essential_cost(F, self.grid, self.principal_point)
        self.pairs += 1
        return True

    def focal(self, prior: float | None = None, weight: float = 0.0) -> float | None:
        """The minimum of the mean pair cost + weight * (log f - log prior)^2 (a prior focal,
        e.g. the model's, keeps weakly determined streams near it)."""
        if self.pairs < self.min_pairs:
            return None
        cost = self.cost / self.pairs
        if prior is not None:
            cost = cost + weight * (np.log(self.grid) - np.log(prior)) ** 2
        i = int(np.argmin(cost))
        if 0 < i < len(self.grid) - 1:  # parabola through the three lowest grid values (in log f)
            a, b, c = cost[i - 1 : i + 2]
            denom = a - 2 * b + c
            step = np.log(self.grid[1] / self.grid[0])
            offset = 0.5 * (a - c) / denom if denom > 0 else 0.0
            return float(np.exp(np.log(self.grid[i]) + np.clip(offset, -1, 1) * step))
        return float(self.grid[i])
