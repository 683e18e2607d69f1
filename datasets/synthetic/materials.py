"""Procedural materials: per-clip colour palettes and per-primitive texture parameters.

A material is one row of `NUM_COLUMNS` floats (column indices below) read by `shading.py`:
two colours mixed by a weighted sum of four patterns evaluated on the 3D hit point
(fBm noise, stripes, 3D checkers, blobs), times a low-frequency colour variation and a
fine-detail noise, so no surface is a large uniform area.
"""

from __future__ import annotations

import colorsys

import numpy as np

from .random import RandomStream

COLOR_A = slice(0, 3)
COLOR_B = slice(3, 6)
FREQUENCY = 6  # noise lattice units per metre
OFFSET = slice(7, 10)  # texture-space offset, so equal materials do not repeat
W_FBM, W_STRIPES, W_CHECKER, W_BLOBS = 10, 11, 12, 13
STRIPES = slice(14, 17)  # stripe normal scaled by stripes per metre
CHECKER_FREQUENCY = 17  # checker cells per metre
COLOR_VARIATION = 18
DETAIL = 19
NUM_COLUMNS = 20

_PATTERN_WEIGHTS = (0.35, 0.2, 0.15, 0.3)  # fbm, stripes, checker, blobs


def luminance(rgb: np.ndarray) -> float:
    return float(0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2])


def make_palette(rs: RandomStream, size: int = 6) -> np.ndarray:
    """Colours [size, 3] in [0, 1] with photo-like statistics: mostly muted, related hues,
    a wide spread of brightness, sometimes one more saturated complementary accent."""
    base = rs.random()
    colours = []
    for i in range(size):
        hue = base + 0.08 * rs.normal()
        accent = i == size - 1 and rs.chance(0.4)
        hue += 0.5 if accent else 0.0
        saturation = rs.uniform(0.0, 1.0) ** 2 * (0.75 if accent else 0.5) + 0.02
        value = rs.uniform(0.2, 0.9)
        colours.append(colorsys.hsv_to_rgb(hue % 1.0, saturation, value))
    return np.asarray(colours)


def make_material(rs: RandomStream, palette: np.ndarray, size: float) -> np.ndarray:
    """One material row [NUM_COLUMNS] for a surface whose characteristic size is `size` metres."""
    size = min(max(float(size), 0.02), 20.0)
    row = np.zeros(NUM_COLUMNS)
    a = palette[rs.integer(0, len(palette) - 1)] * rs.uniform(0.85, 1.15)
    b = palette[rs.integer(0, len(palette) - 1)] * rs.uniform(0.85, 1.15)
    if abs(luminance(a) - luminance(b)) < 0.18:
        b = a * 0.45 if luminance(a) > 0.45 else np.minimum(a * 1.8 + 0.15, 1.0)
    row[COLOR_A], row[COLOR_B] = np.minimum(np.maximum(a, 0.02), 1.0), np.minimum(np.maximum(b, 0.02), 1.0)
    row[FREQUENCY] = 1.0 / (size * rs.log_uniform(0.06, 0.4))
    row[OFFSET] = [rs.uniform(0.0, 64.0) for _ in range(3)]
    main = rs.choice(range(4), _PATTERN_WEIGHTS)
    second = rs.choice([k for k in range(4) if k != main])
    share = rs.uniform(0.0, 0.35)
    row[W_FBM + main] += 1.0 - share
    row[W_FBM + second] += share
    row[STRIPES] = rs.unit_vector() / (size * rs.log_uniform(0.03, 0.25))
    row[CHECKER_FREQUENCY] = 1.0 / (size * rs.log_uniform(0.04, 0.3))
    row[COLOR_VARIATION] = rs.uniform(0.1, 0.35)
    row[DETAIL] = rs.uniform(0.2, 0.45)
    return row
