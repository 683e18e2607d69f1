"""Sliding-window key/value cache: a bounded FIFO of the last `window` frames per layer.

Frames are fixed-size blocks of P tokens ([B, H, S, P, D] per call). Storage per layer is
one preallocated ring [B, H, window, P, D]: a call writes only its new frames (an
index_copy of O(new tokens)); the oldest frames are overwritten, so memory is constant
once the window is full. `history` returns past + new frames in time order (the one
copy attention needs anyway), which the caller slices into per-frame windows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cache import KVCache


class WindowKVCache(KVCache):
    def __init__(self, num_layers: int, window: int) -> None:
        super().__init__(num_layers)
        if window < 1:
            raise ValueError(f"window must be at least one frame, got {window}")
        self.window = window
        self.reset()

    def reset(self) -> None:
        self._k: list[Tensor | None] = [None] * self.num_layers
        self._v: list[Tensor | None] = [None] * self.num_layers
        self._seen = [0] * self.num_layers  # frames ever written, per layer

    def num_frames(self, index: int) -> int:
        """Frames held by layer `index` (at most `window`)."""
        return min(self._seen[index], self.window)

    def num_tokens(self, index: int) -> int:
        k = self._k[index]
        return 0 if k is None else self.num_frames(index) * k.shape[3]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._k + self._v if t is not None)

    def update(self, index: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        raise TypeError("WindowKVCache stores whole frames: call history(index, k, v) with [B, H, S, P, D]")

    def history(self, index: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this call's frames k, v [B, H, S, P, D]; return the held past frames followed
        by the new ones, [B, H, n_past + S, P, D], in time order."""
        B, H, S, P, D = k.shape
        W, seen = self.window, self._seen[index]
        if self._k[index] is None:
            self._k[index] = k.new_empty(B, H, W, P, D)
            self._v[index] = v.new_empty(B, H, W, P, D)
        buf_k, buf_v = self._k[index], self._v[index]
        if buf_k.shape != (B, H, W, P, D) or buf_k.dtype != k.dtype:
            raise ValueError(f"frame block {tuple(k.shape[-2:])} / {k.dtype} does not match layer {index}'s "
                             f"window cache {tuple(buf_k.shape[-2:])} / {buf_k.dtype}")  # fmt: skip
        n = min(seen, W)
        oldest = seen % W if seen >= W else 0  # slot of the oldest held frame
        past_k = [buf_k[:, :, oldest:n], buf_k[:, :, :oldest]] if n == W else [buf_k[:, :, :n]]
        past_v = [buf_v[:, :, oldest:n], buf_v[:, :, :oldest]] if n == W else [buf_v[:, :, :n]]
        hist_k, hist_v = torch.cat(past_k + [k], dim=2), torch.cat(past_v + [v], dim=2)
        m = min(S, W)  # only the newest `window` frames survive the call
        slots = (torch.arange(seen + S - m, seen + S, device=k.device) % W)
        buf_k.index_copy_(2, slots, k[:, :, S - m :])
        buf_v.index_copy_(2, slots, v[:, :, S - m :])
        self._seen[index] = seen + S
        return hist_k, hist_v
