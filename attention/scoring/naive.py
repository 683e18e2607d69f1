"""Plain-torch reference of the rolling cache's redundancy score (test oracle, CPU path).

Shapes: keys [B, H, N, D] (any float dtype, any strides) -> scores [B, H, N] float32.

score[b, h, n] = < k̂[b, h, n], m̂[b, h] >  with  k̂ = k / max(|k|, eps),
                 m̂ = m / max(|m|, eps),   m = mean over n of k̂[b, h, n],   eps = 1e-12
(the eps of `torch.nn.functional.normalize`). Higher = more redundant (evicted first).
"""

from __future__ import annotations

import torch
from torch import Tensor


def redundancy_scores(keys: Tensor) -> Tensor:
    """Cosine similarity of each key to the mean normalised key of the set, per head.

    keys [B, H, N, D] -> scores [B, H, N] (higher = more redundant, evicted first).
    """
    kn = torch.nn.functional.normalize(keys.float(), dim=-1)
    mean = torch.nn.functional.normalize(kn.mean(dim=2, keepdim=True), dim=-1)  # [B, H, 1, D]
    return (kn * mean).sum(dim=-1)
