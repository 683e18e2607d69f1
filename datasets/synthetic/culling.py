"""Per-clip frustum culling: primitives that no frame of the clip can see are not packed.

Padded intersection costs scale with the largest primitive count of a batch, so dropping what
lies outside every frame's view pyramid (by bounding sphere, conservative) is a free speed-up
that cannot change a rendered pixel.
"""

from __future__ import annotations

import numpy as np


def bounding_spheres(kind: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Centres [N, 3] and radii [N] enclosing each primitive; None for unbounded planes."""
    if kind == "plane":
        return None
    if kind == "quad":
        return rows[:, 0:3], np.hypot(rows[:, 9], rows[:, 10])
    if kind == "box":
        return rows[:, 0:3], np.linalg.norm(rows[:, 12:15], axis=1)
    if kind == "sphere":
        return rows[:, 0:3], rows[:, 3]
    centres = np.stack((rows[:, 0], rows[:, 1], (rows[:, 2] + rows[:, 3]) / 2), axis=1)
    return centres, np.hypot(rows[:, 4], (rows[:, 3] - rows[:, 2]) / 2)


def visible(kind: str, rows: np.ndarray, world_from_cam: np.ndarray, tan_x: float, tan_y: float) -> np.ndarray:
    """Bool [N]: may primitive n cover a pixel of any frame? world_from_cam [S, 4, 4]; tan_x, tan_y:
    half-extent of the image plane at unit depth (W / 2fx, H / 2fy)."""
    spheres = bounding_spheres(kind, rows)
    if spheres is None or len(rows) == 0:
        return np.ones(len(rows), dtype=bool)
    centres, radii = spheres
    R, C = world_from_cam[:, None, :3, :3], world_from_cam[:, None, :3, 3]
    p = np.einsum("snij,sni->snj", R, centres[None] - C)  # camera coordinates [S, N, 3]
    r = radii[None] * (1 + 1e-6) + 1e-6
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    inside = z > -r
    for tan, v in ((tan_x, x), (tan_y, y)):
        norm = np.sqrt(1.0 + tan * tan)
        inside &= (v - tan * z) / norm <= r
        inside &= (-v - tan * z) / norm <= r
    return inside.any(axis=0)
