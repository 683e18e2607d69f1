"""A bounded, voxel-downsampled point map for live display.

Points are averaged per cubic voxel, weighted by how many raw points each stored point stands
for, so a voxel's centroid does not depend on how its points were split across frames or merges
at that voxel size. Memory stays bounded: when the map holds more than `budget` points, the
voxel grows until it holds at most half the budget (so merges that coarsen stay rare however
long the stream is).
"""

from __future__ import annotations

import numpy as np

from recon.points import finite_rows, voxel_merge

_COARSEN_STEP = 1.5


class VoxelMap:
    """Accumulates world points [N, 3] with colours [N, 3] into at most `budget` voxel centroids.

    `add` only queues points (cheap, called every frame); `points()` merges the queue into the map.
    """

    def __init__(self, voxel: float, budget: int) -> None:
        if not voxel > 0:
            raise ValueError(f"map voxel must be positive, got {voxel}")
        if budget < 2:
            raise ValueError(f"map budget must be at least 2 points, got {budget}")
        self.voxel = float(voxel)
        self.budget = int(budget)
        self._points = np.zeros((0, 3), np.float32)
        self._colors = np.zeros((0, 3), np.float32)
        self._weights = np.zeros(0, np.float64)
        self._queue: list[tuple[np.ndarray, np.ndarray]] = []
        self._queued = 0

    def __len__(self) -> int:
        """Points in the map once the queue is merged (an upper bound until then)."""
        return len(self._points) + self._queued

    def add(self, points: np.ndarray, colors: np.ndarray) -> None:
        """Queue points [N, 3] and colours [N, 3] (any float range) for the next merge."""
        points, colors = np.asarray(points), np.asarray(colors)
        if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
            raise ValueError(f"expected points [N, 3] and colours [N, 3], got {points.shape} and {colors.shape}")
        finite = finite_rows(points)
        if not finite.any():
            return
        self._queue.append((np.asarray(points[finite], np.float32), np.asarray(colors[finite], np.float32)))
        self._queued += int(finite.sum())
        # Keep the queue itself bounded too, for callers that never ask for the map.
        if self._queued > self.budget:
            self._merge()

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """The map: points [M, 3] float32 and colours [M, 3] float32, M <= budget."""
        self._merge()
        return self._points, self._colors

    def _merge(self) -> None:
        if not self._queue:
            return
        new_points, new_colors = (np.concatenate(parts) for parts in zip(*self._queue))
        merged = voxel_merge(
            np.concatenate([self._points, new_points]),
            np.concatenate([self._colors, new_colors]),
            np.concatenate([self._weights, np.ones(len(new_points))]),
            self.voxel,
        )
        if len(merged[0]) > self.budget:
            while len(merged[0]) > self.budget // 2:
                # Occupied voxels of a surface scale with voxel^-2: one step usually lands under the
                # target, instead of several fixed steps each costing a full merge.
                self.voxel *= max(_COARSEN_STEP, 1.05 * np.sqrt(len(merged[0]) / (self.budget // 2)))
                merged = voxel_merge(*merged, self.voxel)
        self._points, self._colors, self._weights = merged
        self._queue, self._queued = [], 0
