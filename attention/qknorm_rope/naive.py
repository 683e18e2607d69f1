"""Plain-torch reference of the attention input projection's tail: split, QK-norm, RoPE, cast.

    qkv   [B, T, 3 * H * D]  output of the qkv linear layer (q, k, v concatenated, heads inner)
    q_w, q_b, k_w, k_b [D]   LayerNorm affine parameters of the q and k norms
    cos, sin [T, D]          2D RoPE tables (recon.attention.rope), or None: no rotation
    index [D] (optional)     explicit pairing: rotated = x * cos + x[index] * sin with the
                             sign inside sin (the 3D RoPE tables, recon.attention.rope3d);
                             None: the 2D "rotate half" pairing of recon.attention.rope
    ->  q, k, v [B, H, T, D] in `out_dtype`; q and k LayerNormed over D (fp32 statistics),
        then rotated; v unchanged.

This is what `Attention.project` computes with separate torch ops; the Triton kernel
beside it must agree (tests/test_qknorm_rope_kernel.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..rope import RotaryEmbedding2D


def qk_norm_rope(
    qkv: Tensor,
    num_heads: int,
    q_w: Tensor,
    q_b: Tensor,
    k_w: Tensor,
    k_b: Tensor,
    cos: Tensor | None,
    sin: Tensor | None,
    eps: float = 1e-5,
    out_dtype: torch.dtype | None = None,
    index: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    B, T, C3 = qkv.shape
    D = C3 // (3 * num_heads)
    q, k, v = qkv.reshape(B, T, 3, num_heads, D).permute(2, 0, 3, 1, 4)
    q = F.layer_norm(q.float(), (D,), q_w.float(), q_b.float(), eps)
    k = F.layer_norm(k.float(), (D,), k_w.float(), k_b.float(), eps)
    if cos is not None and index is not None:
        q = q * cos.float() + q.index_select(-1, index) * sin.float()
        k = k * cos.float() + k.index_select(-1, index) * sin.float()
    elif cos is not None:
        q = RotaryEmbedding2D.apply(q, cos.float(), sin.float())
        k = RotaryEmbedding2D.apply(k, cos.float(), sin.float())
    dtype = out_dtype or qkv.dtype
    return q.to(dtype), k.to(dtype), v.to(dtype)
