"""Plain-torch reference of softmax attention, used as the test oracle for the fused path.

Shapes: q [B, H, Tq, D], k/v [B, H, Tk, D], mask [Tq, Tk] bool (True = may attend) or None.
The rolling cache's `redundancy_scores` reference lives in `scoring/naive.py` (re-exported here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .scoring.naive import redundancy_scores  # noqa: F401  (re-export; one implementation)


def naive_softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(dim=-1) @ v.float()).to(q.dtype)

