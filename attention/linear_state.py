"""Stream state of the `linear` memory strategy: constant size, whatever the stream length.

    frame      WindowKVCache   rings of the last W + 1 frames' patch keys/values (+ scratch
                               rows for pose-slot keys) of every frame block
    temporal   WindowKVCache   the same for every global (cross-frame) block
    camera     NullKVCache     the camera head only looks inside one frame's window
    recurrent  RecurrentStates KDA state + short-convolution tails of every linear layer
    clock      FrameClock      the stream's frame count as a device tensor (RoPE time index
                               and ring rows of a step that may be replayed as a CUDA graph)
    poses      PoseHistory     raw absolute poses of the last W frames (+ the first frame),
                               for fusing relative window poses into absolute ones

`nbytes()` counts every tensor held.

CUDA-graph protocol (recon.fastpath): once the windows are full, `steady()` is True and a
one-frame step has fixed shapes and control flow. Every update of the model's core step is
in place (ring writes at rows computed from `clock`, recurrent states copied into their
tensors, `clock` incremented on the device); `count_replayed_step()` does the host
bookkeeping of a replayed core step (frame count, the caches' counters). The pose fusion
(`poses`) runs eagerly after every step and keeps its own counter.
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

    def steady(self) -> bool:
        return True


class RecurrentStates:
    """One `KDALayerState` per linear layer: stored at the first call, then overwritten in
    place (the same tensors for the whole stream)."""

    def __init__(self) -> None:
        self.layers: dict[int, KDALayerState] = {}

    def get(self, index: int) -> KDALayerState | None:
        return self.layers.get(index)

    def set(self, index: int, state: KDALayerState) -> None:
        held = self.layers.get(index)
        if held is None:
            self.layers[index] = state.detached_copy()
        else:
            held.copy_(state)

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.layers.values())

    def reset(self) -> None:
        self.layers.clear()


class FrameClock:
    """Frames consumed so far, as a long tensor [1] on the model's device (None until the
    first step). A device-side mirror of `StreamState.num_frames` for what a captured step
    computes from the frame index; advanced in place by the step itself."""

    def __init__(self) -> None:
        self.frames: Tensor | None = None

    def read(self, num_frames: int, device) -> Tensor:
        """The counter (created from the host count on first use)."""
        if self.frames is None:
            self.frames = torch.full((1,), num_frames, dtype=torch.long, device=device)
        return self.frames

    def advance(self, frames: int) -> None:
        self.frames.add_(frames)

    def nbytes(self) -> int:
        return 0 if self.frames is None else self.frames.numel() * self.frames.element_size()

    def reset(self) -> None:
        self.frames = None


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
    clock: FrameClock = field(default_factory=FrameClock)
    poses: PoseHistory = None  # type: ignore[assignment]

    @classmethod
    def create(cls, depth: int, window: int) -> "LinearStreamState":
        return cls(temporal=WindowKVCache(depth, window), camera=NullKVCache(0),
                   frame=WindowKVCache(depth, window), poses=PoseHistory(window))  # fmt: skip

    def nbytes(self) -> int:
        parts = (self.temporal, self.camera, self.frame, self.recurrent, self.clock, self.poses)
        return sum(p.nbytes() for p in parts)

    def reset(self) -> None:
        super().reset()
        self.frame.reset()
        self.recurrent.reset()
        self.clock.reset()
        self.poses.reset()

    def steady(self) -> bool:
        """The windows are full (every later one-frame core step has this step's shapes and
        control flow) and every state tensor exists."""
        ready = self.clock.frames is not None
        return ready and self.num_frames >= self.frame.window and self.frame.steady() and self.temporal.steady()

    def count_replayed_step(self) -> None:
        """Host bookkeeping of one replayed core step (the pose history is not part of it)."""
        self.num_frames += 1
        self.frame.count_replayed_step()
        self.temporal.count_replayed_step()
