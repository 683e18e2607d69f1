"""Transformer building blocks shared by the backbone, the aggregator and the heads.

Parameter names follow the DINOv2 / VGGT layout (norm1, attn, ls1, norm2, mlp, ls2) so
public checkpoints load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.attention import Attention
from recon.attention.mha import LayerKV


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm that stays in bf16 when its input and weights are bf16 (a bf16 model on
    CUDA): statistics are still fp32 inside the kernel, and the output is rounded to bf16
    once, as autocast would round it for the next matmul anyway. Under plain autocast
    LayerNorm runs in fp32: an up-cast, an fp32 kernel over twice the bytes, and a down-cast
    per call (~6 % of a vggt-1b-sized streaming step on an H200)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.bfloat16 and self.weight is not None and self.weight.dtype == torch.bfloat16:
            with torch.autocast(x.device.type, enabled=False):
                return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return super().forward(x)


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: float | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        attn_mask: Tensor | None = None,
        kv: LayerKV | None = None,
    ) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope=rope, attn_mask=attn_mask, kv=kv))
        return x + self.ls2(self.mlp(self.norm2(x)))
