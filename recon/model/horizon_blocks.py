"""Blocks of the horizon aggregator (parameter names follow HorizonStream's Block).

LocalBlock   pre-norm block around `LocalAttention`; the aggregator drives the attention
             step by step (keys come from window caches), then calls `finish`.
LinearBlock  pre-norm block around a `KDALayer` over one causal token sequence.
"""

from __future__ import annotations

from torch import Tensor, nn

from recon.attention import LocalAttention
from recon.attention.kda import KDALayer, KDALayerState

from .blocks import LayerNorm, LayerScale, Mlp


class LocalBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, init_values: float = 0.01) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = LocalAttention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def finish(self, x: Tensor, attn_out: Tensor) -> Tensor:
        """Residuals: x + ls1(attention output), then the MLP branch."""
        x = x + self.ls1(attn_out)
        return x + self.ls2(self.mlp(self.norm2(x)))


class LinearBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        mlp_ratio: float = 4.0,
        init_values: float = 0.01,
        expand_v: float = 1.0,
        conv_size: int = 4,
        allow_neg_eigval: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = KDALayer(dim, num_heads, head_dim, expand_v, conv_size, allow_neg_eigval=allow_neg_eigval)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: Tensor, state: KDALayerState | None = None) -> tuple[Tensor, KDALayerState]:
        """x [B, T, C] (tokens in stream order) -> (x, state after the last token)."""
        y, state = self.attn(self.norm1(x), state)
        x = x + self.ls1(y)
        return x + self.ls2(self.mlp(self.norm2(x))), state
