"""Layout helpers shared by the scene families: lighting / sky environments and free spots."""

from __future__ import annotations

import colorsys
import math

import numpy as np

from . import scene as S
from .random import RandomStream


def environment(rs: RandomStream, outdoor: bool, lamp=(0.0, 0.0, 0.0), lamp_range: float = 1.0) -> np.ndarray:
    """One environment row [NUM_ENV] (scene.py): sun + sky + fog + depth cap outdoors; key, fill
    and a point lamp at `lamp` indoors."""
    env = np.zeros(S.NUM_ENV)
    env[S.GAIN] = rs.uniform(0.9, 1.2) * (1.0 + 0.05 * np.array([rs.normal() for _ in range(3)]))
    if outdoor:
        elevation, azimuth = math.radians(rs.uniform(20, 70)), rs.uniform(0, 2 * math.pi)
        sun = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                        math.sin(elevation)])  # fmt: skip
        env[S.AMBIENT] = rs.uniform(0.3, 0.45)
        env[S.SUN_1] = sun * rs.uniform(0.5, 0.8)
        env[S.SUN_2] = np.array([0.0, 0.0, 1.0]) * rs.uniform(0.1, 0.25)
        env[S.INV_FOG] = 1.0 / rs.uniform(150, 400)
        env[S.MAX_DEPTH] = 120.0
        env[S.HORIZON] = hsv(rs.uniform(0.53, 0.62), rs.uniform(0.05, 0.3), rs.uniform(0.75, 0.95))
        env[S.ZENITH] = hsv(rs.uniform(0.57, 0.65), rs.uniform(0.3, 0.7), rs.uniform(0.5, 0.85))
        env[S.CLOUDS] = rs.uniform(0.0, 0.8)
    else:
        key = np.array([rs.normal(), rs.normal(), rs.uniform(0.5, 2.0)])
        env[S.AMBIENT] = rs.uniform(0.25, 0.45)
        env[S.SUN_1] = key / np.linalg.norm(key) * rs.uniform(0.35, 0.65)
        env[S.SUN_2] = rs.unit_vector() * rs.uniform(0.1, 0.3)
        env[S.LAMP], env[S.LAMP_POWER], env[S.LAMP_RANGE] = lamp, rs.uniform(0.2, 0.6), lamp_range
        env[S.MAX_DEPTH] = 1e4
    return env


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def free_spot(rs: RandomStream, low, high, radius: float, keep_out: list, tries: int = 20):
    """A position (x, y) in [low, high] whose disc of `radius` misses every (centre, r) in keep_out."""
    for _ in range(tries):
        xy = np.array([rs.uniform(low[0], high[0]), rs.uniform(low[1], high[1])])
        if all(np.hypot(*(xy - c)) > radius + r for c, r in keep_out):
            return xy
    return None
