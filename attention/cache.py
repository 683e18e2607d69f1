"""Caches for causal streaming: what the temporal (cross-frame) attention layers keep of
past frames.

A memory strategy is a `KVCache` subclass; the model only ever calls
`cache.layer(i).update(k, v)` and attends over whatever comes back, so bounded strategies
(rolling, windowed) plug in without touching the model.

Shapes: k, v [B, H, T, D] per layer, post-norm and post-RoPE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend

from .mha import growing_kv_backends


class KVCache:
    """Base class: a stack of per-layer key/value stores."""

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers

    def layer(self, index: int) -> "_LayerSlot":
        return _LayerSlot(self, index)

    def update(self, index: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def num_tokens(self, index: int) -> int:
        raise NotImplementedError

    def nbytes(self) -> int:
        """Bytes held by the cache's tensors (allocated capacity, not just the used part)."""
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def steady(self) -> bool:
        """True when every later step has this step's tensor shapes and control flow (what
        a CUDA graph replay needs); growing caches are never steady."""
        return False

    def count_replayed_step(self) -> None:
        """Host-side bookkeeping of one step that ran as a graph replay (no Python ran)."""


class _LayerSlot:
    __slots__ = ("cache", "index")

    def __init__(self, cache: KVCache, index: int) -> None:
        self.cache, self.index = cache, index

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.cache.update(self.index, k, v)

    def sdpa_backends(self, q: Tensor, k: Tensor) -> list[SDPBackend] | None:
        # A growing cache hands SDPA a new key length every step (see growing_kv_backends).
        return None if self.cache.steady() else growing_kv_backends(q, k)


class FullKVCache(KVCache):
    """Keeps every past token (StreamVGGT behaviour). Memory grows linearly with frames.

    Storage is one preallocated buffer per layer that grows geometrically (x1.25), so
    appending a frame copies that frame only, the whole cache is copied O(log T) times in
    total, and at most a quarter of the buffer is unused capacity. `reserve_frames`: when
    the stream's length is known, the first step allocates room for that many steps of its
    size at once, so the stream never reallocates (a growth of a multi-GB cache costs a
    large allocation and a copy in one frame).
    """

    def __init__(self, num_layers: int, initial_tokens: int = 0, growth: float = 1.25, reserve_frames: int = 0) -> None:
        super().__init__(num_layers)
        self.initial_tokens = initial_tokens
        self.growth = growth
        self.reserve_frames = reserve_frames
        self.reset()

    def reset(self) -> None:
        """Forget every token. A cache with reserved room keeps its buffers for the next
        stream (static buffers: no allocation at its first frame); others release them."""
        if not (self.reserve_frames and hasattr(self, "_k")):
            self._k: list[Tensor | None] = [None] * self.num_layers
            self._v: list[Tensor | None] = [None] * self.num_layers
        self._len = [0] * self.num_layers

    def update(self, index: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        n, t = self._len[index], k.shape[2]
        buf_k = self._k[index]
        if n == 0 and buf_k is not None and not _same_layout(buf_k, k):  # kept buffers of another stream
            buf_k = self._k[index] = self._v[index] = None
        if buf_k is None or n + t > buf_k.shape[2]:
            old = 0 if buf_k is None else buf_k.shape[2]
            reserve = self.reserve_frames * t if buf_k is None else 0
            grow_layer(self, index, k, v, max(n + t, self.initial_tokens, reserve, int(old * self.growth)))
        return append_layer(self, index, k, v)

    def num_tokens(self, index: int) -> int:
        return self._len[index]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._k + self._v if t is not None)


def _same_layout(buf: Tensor, k: Tensor) -> bool:
    return (buf.shape[:2], buf.shape[3], buf.dtype, buf.device) == (k.shape[:2], k.shape[3], k.dtype, k.device)


def grow_layer(cache, index: int, k: Tensor, v: Tensor, capacity: int) -> None:
    """Give layer `index` of a cache with `_k/_v/_len` lists buffers of `capacity` tokens,
    keeping its first `_len[index]` tokens (one copy; shaped like the new k/v)."""
    B, H, _, D = k.shape
    n = cache._len[index]
    new_k, new_v = k.new_empty(B, H, capacity, D), v.new_empty(B, H, capacity, D)
    if cache._k[index] is not None and n:
        new_k[:, :, :n], new_v[:, :, :n] = cache._k[index][:, :, :n], cache._v[index][:, :, :n]
    cache._k[index], cache._v[index] = new_k, new_v


def append_layer(cache, index: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Write this step's k/v after layer `index`'s tokens; return all of them (new last)."""
    n, t = cache._len[index], k.shape[2]
    cache._k[index][:, :, n : n + t] = k
    cache._v[index][:, :, n : n + t] = v
    cache._len[index] = n + t
    return cache._k[index][:, :, : n + t], cache._v[index][:, :, : n + t]


@dataclass
class StreamState:
    """Everything a causal model carries from one step to the next.

    temporal: cache of the aggregator's cross-frame layers (one slot per layer);
    camera:   cache of the camera head's trunk (one slot per layer and refinement
              iteration, or per layer only in StreamVGGT's shared layout);
    num_frames: frames consumed so far (decides first-frame tokens).
    """

    temporal: KVCache
    camera: KVCache
    num_frames: int = 0
    extras: dict = field(default_factory=dict)

    def nbytes(self) -> int:
        return self.temporal.nbytes() + self.camera.nbytes()

    def reset(self) -> None:
        self.temporal.reset()
        self.camera.reset()
        self.num_frames = 0
        self.extras.clear()

    def steady(self) -> bool:
        """Whether the next one-frame step can be captured once and replayed for all later ones."""
        return self.num_frames > 0 and self.temporal.steady() and self.camera.steady()

    def count_replayed_step(self) -> None:
        self.num_frames += 1
        self.temporal.count_replayed_step()
        self.camera.count_replayed_step()
