"""Plain-torch reference of softmax attention, used as the test oracle for the fused path.

Shapes: q [B, H, Tq, D], k/v [B, H, Tk, D], mask [Tq, Tk] bool (True = may attend) or None.
"""

from __future__ import annotations

import torch
from torch import Tensor


def naive_softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(dim=-1) @ v.float()).to(q.dtype)


def redundancy_scores(keys: Tensor) -> Tensor:
    """Cosine similarity of each key to the mean normalised key of the set, per head.

    keys [B, H, N, D] -> scores [B, H, N] (higher = more redundant, evicted first).
    """
    kn = torch.nn.functional.normalize(keys.float(), dim=-1)
    mean = torch.nn.functional.normalize(kn.mean(dim=2, keepdim=True), dim=-1)  # [B, H, 1, D]
    return (kn * mean).sum(dim=-1)
