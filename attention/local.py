"""Local (sliding-window) softmax attention with QK-norm, 3D RoPE and a head-wise output gate.

The layer is split into its steps because the keys a query sees are assembled by the
caller (this frame, the window's past frames from a `WindowKVCache`, pose tokens):

    q, k, v = attn.project(x, rope)       x [N, T, C] -> [N, H, T, D] (post-norm, post-RoPE)
    gate    = attn.gate(x, valid)         sigmoid(W_g mean_T(x)) per head, [N, H]
    y       = attn.attend(q, k, v, gate, mask)  -> [N, T, C]
            = attn.output(sdpa(q, k, v, mask), gate)   (callers that run the SDPA themselves)

The gate pools over the T tokens of the call (HorizonStream's "headwise" gate): callers
decide what a call is (a frame, a pose slot, a window row). Parameter names follow the
reference (qkv, q_norm, k_norm, proj, gate_proj).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mha import Attention
from .rope3d import RopeTables


class LocalAttention(Attention):
    """QK-normed softmax attention (the parameters of `Attention`) plus a head-wise sigmoid
    output gate, over a frame and its window of past frames with 3D RoPE."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True, norm_eps: float = 1e-5):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=True, norm_eps=norm_eps)
        self.gate_proj = nn.Linear(dim, num_heads, bias=True)
        nn.init.zeros_(self.gate_proj.weight)
        nn.init.constant_(self.gate_proj.bias, 2.0)  # sigmoid(2) ~ 0.88: starts almost open

    def project(self, x: Tensor, rope: RopeTables | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x [N, T, C] -> q, k, v [N, H, T, D]; rope tables broadcast over [N, H, T, D]."""
        if rope is not None and rope.cos[..., 0, 0].numel() == 1:  # one table for the whole call
            T, D = rope.cos.shape[-2:]  # (the streaming step): [T, D] tables can take the fused kernel
            return super().project(x, rope=(rope.cos.reshape(T, D), rope.sin.reshape(T, D)), rope_index=rope.index)
        return super().project(x, None if rope is None else rope.apply)

    def gate(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """x [N, T, C], valid [N, T] bool or None -> sigmoid gate [N, H] (mean over valid tokens)."""
        if valid is None:
            pooled = x.mean(dim=1)
        else:
            w = valid.to(x.dtype)[..., None]
            pooled = (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)
        return torch.sigmoid(self.gate_proj(pooled))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, gate: Tensor, mask: Tensor | None = None) -> Tensor:
        """q [N, H, T, D], k/v [N, H, S, D], gate [N, H], mask bool broadcastable to
        [N, H, T, S] (True = attend) -> [N, T, C]."""
        return self.output(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), gate)

    def output(self, out: Tensor, gate: Tensor) -> Tensor:
        """Attention output [N, H, T, D], gate [N, H] -> gated and projected [N, T, C]."""
        out = out * gate.to(out.dtype)[:, :, None, None]
        N, H, T, D = out.shape
        return self.proj(out.transpose(1, 2).reshape(N, T, H * D))
