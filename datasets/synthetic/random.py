"""Per-clip random streams: a seeded `torch.Generator` drawn in blocks, consumed as Python floats.

Scene layout and camera paths make many scalar draws; one `torch.rand` per 512 draws keeps that
cheap while every number still comes from a generator seeded for this clip (never global RNG).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch

_BLOCK = 512


def derive_seed(seed: int, tag: str) -> int:
    """A stable 63-bit seed for the sub-stream `tag` of clip `seed` (same on every platform/run)."""
    digest = hashlib.blake2b(f"{int(seed)}:{tag}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class RandomStream:
    """Uniform, normal and categorical draws from a CPU `torch.Generator` seeded by (seed, tag)."""

    def __init__(self, seed: int, tag: str) -> None:
        self._generator = torch.Generator(device="cpu").manual_seed(derive_seed(seed, tag))
        self._buffer: list[float] = []
        self._pos = 0

    def random(self) -> float:
        """One float in [0, 1)."""
        if self._pos == len(self._buffer):
            self._buffer = torch.rand(_BLOCK, dtype=torch.float64, generator=self._generator).tolist()
            self._pos = 0
        self._pos += 1
        return self._buffer[self._pos - 1]

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * self.random()

    def log_uniform(self, low: float, high: float) -> float:
        return math.exp(self.uniform(math.log(low), math.log(high)))

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high] (both included)."""
        return low + min(int(self.random() * (high - low + 1)), high - low)

    def normal(self) -> float:
        # Box-Muller; 1 - u keeps the logarithm finite.
        u, v = 1.0 - self.random(), self.random()
        return math.sqrt(-2.0 * math.log(u)) * math.cos(2.0 * math.pi * v)

    def chance(self, p: float) -> bool:
        return self.random() < p

    def sign(self) -> float:
        return 1.0 if self.random() < 0.5 else -1.0

    def choice(self, options: Sequence, weights: Sequence[float] | None = None):
        if weights is None:
            return options[min(int(self.random() * len(options)), len(options) - 1)]
        x = self.random() * sum(weights)
        for option, w in zip(options, weights):
            x -= w
            if x < 0:
                return option
        return options[-1]

    def unit_vector(self) -> np.ndarray:
        """A direction uniform on the sphere, [3]."""
        x, y, z = self.normal(), self.normal(), self.normal()
        norm = max(math.sqrt(x * x + y * y + z * z), 1e-12)
        return np.array([x / norm, y / norm, z / norm])

    def point_in(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """A point uniform in the axis-aligned box [low, high], [3]."""
        return np.array([self.uniform(lo, hi) for lo, hi in zip(low, high)])
