"""The streaming step of the horizon aggregator: attention over the window rings in place.

A one-frame streaming call (frame n, L = min(n + 1, W + 1) window slots, slot j <-> frame
n - L + 1 + j, the current frame last) keeps its window in `WindowKVCache` rings of
R = W + 1 rows, frame f in row f % R, each row [P patch keys, X scratch keys]:

  * the frame's patch keys go to its row, then every slot's X pose keys go to the scratch
    tokens of its frame's row (`RingStep.slot_rows`);
  * frame level: slot j attends to row slot_rows[j] only (its frame's patches + itself).
    The rings seen as [L, H, P + X, D] are a view for B == 1; the queries are permuted to
    ring order instead of copying keys (`slot_attention`);
  * global level: every token of the frame attends to rows 0..L-1 as one key sequence
    [B, H, L * (P + X), D] (a view): all window patches + all of the frame's pose tokens.

Softmax attention is invariant to the key order and keys are stored post-RoPE, so this
equals the batch path's time-ordered concatenation. Rows and permutations come from the
state's device frame counter: nothing host-side depends on the frame index once L = R.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.attention import WindowKVCache


@dataclass
class RingStep:
    """Ring rows of a one-frame streaming step."""

    slots: int  # L, window slots of the frame
    current: Tensor  # [1] long, the frame's row
    slot_rows: Tensor  # [L] long, row of each window slot's frame
    row_slots: Tensor  # [L] long, window slot of each row < L (inverse of slot_rows)

    @classmethod
    def build(cls, clock: Tensor, slots: int, rows: int) -> "RingStep":
        """clock [1] long: the frame's stream index n (on the device); rows: R."""
        j = torch.arange(slots, device=clock.device)
        base = clock - (slots - 1)  # frame of slot 0
        slot_rows = (base + j) % rows
        return cls(slots, slot_rows[slots - 1 :], slot_rows, (j - base) % rows)


def store_step(
    cache: WindowKVCache, index: int, step: RingStep, k: Tensor, v: Tensor, k_slots: Tensor, v_slots: Tensor
) -> tuple[Tensor, Tensor]:
    """Write the frame's patch keys k, v [B, H, P, D] to its row and each slot's pose keys
    [B, H, L, X, D] to its frame's row (tokens P .. P+X), in place; return the rings
    [B, H, R, P + X, D] of layer `index`."""
    B, H, P, D = k.shape
    ring_k, ring_v = cache.ring(index, B, H, P + k_slots.shape[3], D, k.dtype, k.device)
    cache.store(index, step.current, k[:, :, None], v[:, :, None])
    cache.store(index, step.slot_rows, k_slots, v_slots, start=P)
    cache.advance(index)
    return ring_k, ring_v


def slot_attention(q: Tensor, ring_k: Tensor, ring_v: Tensor, step: RingStep) -> Tensor:
    """q [B*L, H, X, D] in slot order; rings [B, H, R, T, D] -> [B*L, H, X, D] in slot order,
    slot j attending to all T tokens of row slot_rows[j]."""
    B, H, _, T, D = ring_k.shape
    L = step.slots
    X = q.shape[2]
    keys = ring_k[:, :, :L].transpose(1, 2).reshape(B * L, H, T, D)  # a view for B == 1
    values = ring_v[:, :, :L].transpose(1, 2).reshape(B * L, H, T, D)
    q_rows = q.reshape(B, L, H, X, D).index_select(1, step.row_slots).reshape(B * L, H, X, D)
    out = F.scaled_dot_product_attention(q_rows, keys, values)
    return out.reshape(B, L, H, X, D).index_select(1, step.slot_rows).reshape(B * L, H, X, D)


def window_keys(ring: Tensor, slots: int) -> Tensor:
    """Ring [B, H, R, T, D] -> its first `slots` rows as one key sequence [B, H, slots*T, D] (a view)."""
    B, H, _, T, D = ring.shape
    return ring[:, :, :slots].reshape(B, H, slots * T, D)
