"""Sliding-window key/value cache: a ring of the last frames per layer (horizon aggregator).

Storage per layer is one preallocated ring for keys and one for values, [B, H, R, T, D]:
R = window + 1 rows (a frame's window: its W past frames and itself), T tokens per row.
Frame f lives in row f % R, so rows are *not* in time order; softmax attention does not
care about key order and keys are stored post-RoPE, so a streaming step attends over the
ring in place. The first P tokens of a row are the frame's patch keys; the caller may use
the other T - P tokens as scratch (the aggregator puts there the keys of the pose slot
that looks at the row's frame, rewritten every step). Memory is constant from the first
call on.

    ring(i, B, H, T, D, dtype, device)  the ring of layer i (allocated on first use)
    store(i, rows, k, v, start)         in-place write of k/v [B, H, n, t, D] into `rows` [n]
                                        (a device index) at tokens start .. start+t
    advance(i, frames)                  host bookkeeping: frames written to layer i
    history(i, k, v, T)                 multi-frame calls: store k/v [B, H, S, P, D] and return
                                        the held past frames then the new ones, in time order
                                        [B, H, n_past + S, P, D] (one copy)
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
        self.rows = window + 1
        self.reset()

    def reset(self) -> None:
        self._k: list[Tensor | None] = [None] * self.num_layers
        self._v: list[Tensor | None] = [None] * self.num_layers
        self._seen = [0] * self.num_layers  # frames ever written, per layer

    def num_frames(self, index: int) -> int:
        """Past frames layer `index` holds for the next frame's window (at most `window`)."""
        return min(self._seen[index], self.window)

    def num_tokens(self, index: int) -> int:
        """Tokens of the held past frames (rows of T tokens, scratch included)."""
        k = self._k[index]
        return 0 if k is None else self.num_frames(index) * k.shape[3]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._k + self._v if t is not None)

    def steady(self) -> bool:
        """Every layer allocated and its window full: each later one-frame step is the same."""
        return all(k is not None for k in self._k) and all(s >= self.window for s in self._seen)

    def count_replayed_step(self) -> None:
        self._seen = [s + 1 for s in self._seen]

    def update(self, index: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        raise TypeError("WindowKVCache stores whole frames: use ring/store or history(index, k, v)")

    def ring(self, index: int, B: int, H: int, T: int, D: int, dtype, device) -> tuple[Tensor, Tensor]:
        """Layer `index`'s key and value rings [B, H, R, T, D], allocated on first use."""
        if self._k[index] is None:
            self._k[index] = torch.zeros(B, H, self.rows, T, D, dtype=dtype, device=device)
            self._v[index] = torch.zeros(B, H, self.rows, T, D, dtype=dtype, device=device)
        buf_k = self._k[index]
        if buf_k.shape != (B, H, self.rows, T, D) or buf_k.dtype != dtype:
            raise ValueError(f"frame block {(B, H, T, D)} / {dtype} does not match layer {index}'s window cache "
                             f"{tuple(buf_k.shape[:2]) + tuple(buf_k.shape[3:])} / {buf_k.dtype}")  # fmt: skip
        return buf_k, self._v[index]

    def store(self, index: int, rows: Tensor, k: Tensor, v: Tensor, start: int = 0) -> None:
        """Write k, v [B, H, n, t, D] into rows `rows` [n] (long, on the ring's device), tokens
        start .. start + t, in place (no host synchronisation)."""
        t = k.shape[3]
        self._k[index][:, :, :, start : start + t].index_copy_(2, rows, k)
        self._v[index][:, :, :, start : start + t].index_copy_(2, rows, v)

    def advance(self, index: int, frames: int = 1) -> None:
        self._seen[index] += frames

    def history(self, index: int, k: Tensor, v: Tensor, row_tokens: int | None = None) -> tuple[Tensor, Tensor]:
        """Store this call's frames k, v [B, H, S, P, D] (rows of `row_tokens` >= P tokens);
        return the held past frames followed by the new ones, [B, H, n_past + S, P, D]."""
        B, H, S, P, D = k.shape
        buf_k, buf_v = self.ring(index, B, H, row_tokens or P, D, k.dtype, k.device)
        seen, R = self._seen[index], self.rows
        n = self.num_frames(index)
        past = torch.arange(seen - n, seen, device=k.device) % R
        hist_k = torch.cat((buf_k[:, :, :, :P].index_select(2, past), k), dim=2)
        hist_v = torch.cat((buf_v[:, :, :, :P].index_select(2, past), v), dim=2)
        m = min(S, self.window)  # the next call needs the newest `window` frames only
        rows = torch.arange(seen + S - m, seen + S, device=k.device) % R
        self.store(index, rows, k[:, :, S - m :], v[:, :, S - m :])
        self.advance(index, S)
        return hist_k, hist_v
