"""The `outdoor` scene family: a ground plane, buildings, trees, rocks and props around a clearing,
a far skyline beyond the depth cap, and a sky (world frame: see scene.py)."""

from __future__ import annotations

import math

import numpy as np

from .layout import environment
from .random import RandomStream
from .scene import CameraSpace, Scene, SceneBuilder


def _polar(rs: RandomStream, r_low: float, r_high: float) -> np.ndarray:
    angle, radius = rs.uniform(0, 2 * math.pi), rs.uniform(r_low, r_high)
    return radius * np.array([math.cos(angle), math.sin(angle)])


def outdoor(rs: RandomStream) -> Scene:
    b = SceneBuilder("outdoor", rs)
    b.plane([0.0, 0.0, 1.0], 0.0, 12.0)
    clear = rs.uniform(12.0, 25.0)  # radius of the clearing the cameras move in
    safe_radius = 3.5
    targets = []
    for _ in range(rs.integer(6, 14)):  # buildings, outside the clearing
        half = np.array([rs.uniform(2, 10), rs.uniform(2, 10), rs.uniform(2, 15)])
        xy = _polar(rs, clear + math.hypot(half[0], half[1]), 75.0)
        b.box([xy[0], xy[1], half[2]], half, rs.uniform(0, math.pi / 2))
        targets.append([xy[0], xy[1], min(half[2], 4.0)])
    for _ in range(rs.integer(4, 10)):  # trees
        xy, canopy, trunk = _polar(rs, 0.6 * clear, 80.0), rs.uniform(1.2, 3.5), rs.uniform(2.0, 5.0)
        b.cylinder(xy[0], xy[1], 0.0, trunk, rs.uniform(0.15, 0.4))
        b.sphere([xy[0], xy[1], trunk + 0.6 * canopy], canopy)
        targets.append([xy[0], xy[1], trunk])
    for _ in range(rs.integer(2, 6)):  # half-buried rocks
        r = rs.uniform(0.3, 1.5)
        xy = _polar(rs, safe_radius + r, 60.0)
        b.sphere([xy[0], xy[1], r * rs.uniform(-0.5, 0.3)], r)
    for _ in range(rs.integer(0, 4)):  # props (vehicles, crates) inside the clearing
        half = np.array([rs.uniform(0.8, 2.2), rs.uniform(0.7, 1.0), rs.uniform(0.5, 0.8)])
        xy = _polar(rs, safe_radius + math.hypot(half[0], half[1]), max(clear - 2.0, safe_radius + 3.0))
        b.box([xy[0], xy[1], half[2]], half, rs.uniform(0, math.pi))
        targets.append([xy[0], xy[1], half[2]])
    for _ in range(rs.integer(5, 9)):  # far skyline, beyond the depth cap
        half = np.array([rs.uniform(20, 50), rs.uniform(20, 50), rs.uniform(10, 60)])
        xy = _polar(rs, 140.0, 250.0)
        b.box([xy[0], xy[1], half[2]], half, rs.uniform(0, math.pi / 2))
    low = np.array([-0.7 * clear, -0.7 * clear, 1.2])
    high = np.array([0.7 * clear, 0.7 * clear, rs.uniform(3.0, 12.0)])
    space = CameraSpace(low, high, clearance=0.5, scale=3.0, pitch=(-35.0, -5.0), targets=np.array(targets),
                        orbit_center=np.array([0.0, 0.0, 1.0]), orbit_radius=(3.0, 0.6 * clear),
                        safe_point=np.array([0.0, 0.0, 2.0]))  # fmt: skip
    return b.build(environment(rs, True), space)
