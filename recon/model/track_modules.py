"""Building blocks of the point-tracking head (see ``recon.model.track_head``).

Coordinates are always pixel positions ``(x, y)`` in the frame they index, with
``(0, 0)`` the centre of the top-left pixel (``align_corners=True`` convention).

Shapes (B batch, S frames, N tracks, C channels, h/w feature-map size):

* ``sample_bilinear(feats [B,C,h,w], xy [B,...,2]) -> [B,C,...]``
* ``sample_points(feats [B,C,h,w], xy [B,N,2]) -> [B,N,C]``
* ``flow_embedding(xy [...,2], dim) -> [...,2*dim]``
* ``grid_embedding(dim, h, w) -> [1,dim,h,w]``
* ``CorrPyramid(fmaps [B,S,C,h,w]).sample(targets [B,S,N,C], coords [B,S,N,2])
  -> [B,S,N,levels*(2r+1)**2]``
* ``UpdateFormer(x [B,N,S,Din]) -> [B,N,S,Dout]``

Parameter names (``virual_tracks`` included, typo and all) follow the public VGGT
checkpoints so that ``track_head.tracker.*`` weights load strictly.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def sample_bilinear(feats: Tensor, xy: Tensor, padding_mode: str = "border") -> Tensor:
    """Bilinearly sample ``feats [B,C,h,w]`` at pixel positions ``xy [B,Ho,Wo,2]``."""
    h, w = feats.shape[-2:]
    # Sampling positions carry no gradient, as in the trackers these weights come from.
    xy = xy.detach().to(feats.dtype)
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=xy.device, dtype=xy.dtype)
    grid = xy * scale - 1.0
    return F.grid_sample(feats, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def sample_points(feats: Tensor, xy: Tensor) -> Tensor:
    """Features of ``feats [B,C,h,w]`` at points ``xy [B,N,2]`` -> ``[B,N,C]`` (border padding)."""
    out = sample_bilinear(feats, xy[:, :, None, :])  # B,C,N,1
    return out[..., 0].transpose(1, 2)


def flow_embedding(xy: Tensor, dim: int) -> Tensor:
    """Sin/cos code of 2D displacements: ``[..., 2] -> [..., 2*dim]``.

    Each axis gets ``dim`` channels, sin and cos interleaved per frequency; x first.
    The result is float32 whatever the input dtype, as in the checkpoints' reference code.
    """
    freqs = torch.arange(0, dim, 2, device=xy.device, dtype=torch.float32) * (1000.0 / dim)
    parts = []
    for axis in range(2):
        ang = xy[..., axis : axis + 1] * freqs
        parts.append(torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1).float()


def _axis_sincos(dim: int, pos: Tensor) -> Tensor:
    """``pos [M] -> [M, dim]`` as [sin | cos] over ``dim/2`` geometric frequencies (base 1e4)."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / (dim / 2.0))
    ang = pos.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1).float()


def grid_embedding(dim: int, h: int, w: int) -> Tensor:
    """Fixed 2D sin/cos embedding of an ``h x w`` pixel grid -> ``[1, dim, h, w]``.

    The first ``dim/2`` channels encode the column (x), the rest the row (y).
    """
    if dim % 2 or (dim // 2) % 2:
        raise ValueError(f"grid embedding needs dim/2 even, got dim={dim}")
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    emb = torch.cat([_axis_sincos(dim // 2, xs.reshape(-1)), _axis_sincos(dim // 2, ys.reshape(-1))], dim=1)
    return emb.reshape(h, w, dim).permute(2, 0, 1)[None]


class CorrPyramid:
    """Multi-scale correlation lookups between track features and frame features.

    Level ``i`` is the feature map average-pooled by ``2**i``. For every track and frame
    a ``(2r+1)^2`` window of correlations around the current position is read out.
    Correlation is linear in the frame features, so sampling the features on the window
    and then taking the dot product equals bilinearly sampling a full correlation
    volume, without materialising ``N x h x w`` volumes.
    """

    def __init__(self, fmaps: Tensor, num_levels: int, radius: int) -> None:
        self.radius = radius
        self.levels = [fmaps]
        for _ in range(num_levels - 1):
            B, S, C, h, w = self.levels[-1].shape
            pooled = F.avg_pool2d(self.levels[-1].reshape(B * S, C, h, w), kernel_size=2, stride=2)
            self.levels.append(pooled.reshape(B, S, C, *pooled.shape[-2:]))
        d = torch.arange(-radius, radius + 1, device=fmaps.device, dtype=fmaps.dtype)
        # Window order expected by the checkpoints: x offset on the slow axis, y on the fast one.
        dx, dy = torch.meshgrid(d, d, indexing="ij")
        self.offsets = torch.stack([dx, dy], dim=-1).reshape(1, 1, -1, 2)  # 1,1,K,2

    def sample(self, targets: Tensor, coords: Tensor) -> Tensor:
        B, S, N, C = targets.shape
        tgt = targets.reshape(B * S, N, C)
        out = []
        for i, fm in enumerate(self.levels):
            h, w = fm.shape[-2:]
            pos = coords.reshape(B * S, N, 1, 2) / (2**i) + self.offsets.to(coords.dtype)
            window = sample_bilinear(fm.reshape(B * S, C, h, w), pos, padding_mode="zeros")  # BS,C,N,K
            corr = torch.einsum("bcnk,bnc->bnk", window, tgt) / math.sqrt(C)
            out.append(corr.reshape(B, S, N, -1))
        return torch.cat(out, dim=-1)


class Mlp(nn.Module):
    """Two-layer GELU MLP."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout (batch first)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # B,H,L,d

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if context is None:
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            w_q, w_kv = self.in_proj_weight.split([x.shape[-1], 2 * x.shape[-1]])
            b_q, b_kv = self.in_proj_bias.split([x.shape[-1], 2 * x.shape[-1]])
            q = F.linear(x, w_q, b_q)
            k, v = F.linear(context, w_kv, b_kv).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        return self.out_proj(out.transpose(1, 2).flatten(-2))


class SelfAttnBlock(nn.Module):
    """Pre-norm self-attention block.

    The attention residual is added to the *normalised* input; the checkpoints were
    trained that way, so it is kept.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x)
        x = x + self.attn(x)
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention block (same normalised-residual quirk as ``SelfAttnBlock``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.norm1(x)
        x = x + self.cross_attn(x, self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class UpdateFormer(nn.Module):
    """Transformer predicting per-track, per-frame updates.

    Alternates attention along time (per track) with attention across tracks, routed
    through a fixed set of learned virtual tracks so the cost is linear in N.
    ``x [B,N,S,input_dim] -> [B,N,S,output_dim]``.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_size: int,
        output_dim: int,
        depth: int = 6,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))

        def blocks(cls: type[nn.Module]) -> nn.ModuleList:
            return nn.ModuleList([cls(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])

        self.time_blocks = blocks(SelfAttnBlock)
        self.space_virtual_blocks = blocks(SelfAttnBlock)
        self.space_point2virtual_blocks = blocks(CrossAttnBlock)
        self.space_virtual2point_blocks = blocks(CrossAttnBlock)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # Start close to the identity update.
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: Tensor) -> Tensor:
        init = self.input_transform(self.input_norm(x))
        B, N, S, D = init.shape
        V = self.num_virtual_tracks
        tokens = torch.cat([init, self.virual_tracks.expand(B, V, S, D)], dim=1)
        for t_blk, v2p, v_blk, p2v in zip(
            self.time_blocks,
            self.space_virtual2point_blocks,
            self.space_virtual_blocks,
            self.space_point2virtual_blocks,
        ):
            tokens = t_blk(tokens.reshape(B * (N + V), S, D)).reshape(B, N + V, S, D)
            space = tokens.transpose(1, 2).reshape(B * S, N + V, D)
            points, virtual = space[:, :N], space[:, N:]
            virtual = v_blk(v2p(virtual, points))
            points = p2v(points, virtual)
            tokens = torch.cat([points, virtual], dim=1).reshape(B, S, N + V, D).transpose(1, 2)
        out = tokens[:, :N] + init
        return self.flow_head(self.output_norm(out))
