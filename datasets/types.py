"""The data types every frame source and dataset reader produces.

Conventions are those of the whole project (docs/ARCHITECTURE.md): images RGB; depth in
metres, 0 where invalid; intrinsics in pixels of *this* image with (0, 0) at the top-left
corner of the top-left pixel; extrinsics camera-from-world [3, 4], OpenCV axes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One image with whatever ground truth the source has."""

    image: np.ndarray  # [H, W, 3] uint8 RGB (uint16 or float32 in [0, 1] are allowed too)
    timestamp: float  # seconds (container time, file time, or clock time for live sources)
    index: int  # position in the source after stride/offset
    depth: np.ndarray | None = None  # [H, W] float32 metres, 0 = invalid
    intrinsic: np.ndarray | None = None  # [3, 3] float64, pixels of `image`
    extrinsic: np.ndarray | None = None  # [3, 4] float64, camera-from-world
    name: str = ""  # file name or a label
    extras: dict = field(default_factory=dict)


class Sequence:
    """A finite, indexable sequence of frames (a dataset scene, an image folder, ...).

    Subclasses implement `__len__` and `frame(i)`; iteration and slicing come for free.
    """

    name: str = "sequence"

    def __len__(self) -> int:
        raise NotImplementedError

    def frame(self, i: int) -> Frame:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Frame:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.frame(i % len(self))

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self.frame(i)

    def has_ground_truth(self) -> bool:
        return len(self) > 0 and self.frame(0).extrinsic is not None
