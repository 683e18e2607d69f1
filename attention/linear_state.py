"""Stream state of the `linear` memory strategy: constant size, whatever the stream length.

    frame      WindowKVCache   last W frames' patch keys/values of every frame block
    temporal   WindowKVCache   the same for every global (cross-frame) block
    camera     NullKVCache     the camera head only looks inside one frame's window
    recurrent  RecurrentStates KDA state + short-convolution tails of every linear layer
    poses      PoseHistory     raw absolute poses of the last W frames (+ the first frame),
                               for fusing relative window poses into absolute ones

`nbytes()` counts every tensor held.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .cache import KVCache, StreamState
from .kda.layer import KDALayerState
from .window import WindowKVCache


class NullKVCache(KVCache):
    """A cache that holds nothing (for parts of a model without cross-frame attention)."""

    def update(self, index: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return k, v

    def num_tokens(self, index: int) -> int:
        return 0

    def nbytes(self) -> int:
        return 0

    def reset(self) -> None:
        pass


class RecurrentStates:
    """One `KDALayerState` per linear layer, replaced (not grown) at every call."""

    def __init__(self) -> None:
        self.layers: dict[int, KDALayerState] = {}

    def get(self, index: int) -> KDALayerState | None:
        return self.layers.get(index)

    def set(self, index: int, state: KDALayerState) -> None:
        self.layers[index] = state

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.layers.values())

    def reset(self) -> None:
        self.layers.clear()


class PoseHistory:
    """Ring of the raw absolute camera-from-world poses [B, 3, 4] of the last `window` frames,
    plus the first frame's (outputs are expressed relative to it)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.reset()

    def reset(self) -> None:
        self._ring: Tensor | None = None
        self.first: Tensor | None = None
        self.seen = 0

    def push(self, w2c: Tensor) -> None:
        if self._ring is None:
            self._ring = w2c.new_empty(w2c.shape[0], self.window, 3, 4)
            self.first = w2c.clone()
        self._ring[:, self.seen % self.window] = w2c
        self.seen += 1

    def last(self, count: int) -> Tensor:
        """The last `count` poses (count <= held), oldest first: [B, count, 3, 4]."""
        if count > min(self.seen, self.window):
            raise ValueError(f"asked for {count} past poses, only {min(self.seen, self.window)} held")
        idx = torch.arange(self.seen - count, self.seen, device=self._ring.device) % self.window
        return self._ring.index_select(1, idx)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self._ring, self.first) if t is not None)


@dataclass
class LinearStreamState(StreamState):
    frame: WindowKVCache = None  # type: ignore[assignment]
    recurrent: RecurrentStates = field(default_factory=RecurrentStates)
    poses: PoseHistory = None  # type: ignore[assignment]

    @classmethod
    def create(cls, depth: int, window: int) -> "LinearStreamState":
        return cls(temporal=WindowKVCache(depth, window), camera=NullKVCache(0),
                   frame=WindowKVCache(depth, window), poses=PoseHistory(window))  # fmt: skip

    def nbytes(self) -> int:
        parts = (self.temporal, self.camera, self.frame, self.recurrent, self.poses)
        return sum(p.nbytes() for p in parts)

    def reset(self) -> None:
        super().reset()
        self.frame.reset()
        self.recurrent.reset()
        self.poses.reset()
