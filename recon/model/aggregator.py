"""Alternating-attention aggregator: frame-wise attention, then temporal attention.

Input  images [B, S, 3, H, W] in [0, 1].
Output a list with one entry per depth level: [B, S, P, 2C], the concatenation of the
       frame-block and the temporal-block outputs of that level (None for levels nobody
       asked for, to save memory), and `patch_start_idx`, the index of the first patch
       token in P (camera token, then register tokens, then patches).

Temporal attention is
  * bidirectional over the S frames (offline VGGT behaviour) when `causal=False`;
  * block-causal over frames when `causal=True` (a frame sees itself and the past);
  * block-causal against a cache when a `StreamState` is given: past frames come from
    the cache, so streaming frame by frame equals one causal batch forward.
Frame 0 of a stream gets the first-frame camera/register tokens, all others the second.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from recon.attention import RotaryEmbedding2D, StreamState, block_causal_mask, grid_positions

from .backbone import ImageNormalization, ViTBackbone
from .blocks import Block



class Aggregator(nn.Module):
    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        num_register_tokens: int,
        backbone_depth: int,
        backbone_heads: int,
        rope_freq: float = 100.0,
        init_values: float = 0.01,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.depth = depth
        self.num_heads = num_heads
        self.patch_embed = ViTBackbone(
            img_size, patch_size, embed_dim, backbone_depth, backbone_heads, num_register_tokens, mlp_ratio
        )
        self.rope = RotaryEmbedding2D(rope_freq)

        def block() -> Block:
            return Block(embed_dim, num_heads, mlp_ratio, init_values=init_values, qk_norm=True)

        self.frame_blocks = nn.ModuleList(block() for _ in range(depth))
        self.global_blocks = nn.ModuleList(block() for _ in range(depth))
        # Index 0: first frame of a sequence; index 1: every later frame.
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, num_register_tokens, embed_dim) * 1e-6)
        self.patch_start_idx = 1 + num_register_tokens
        self._rope_cache: dict[tuple, tuple[Tensor, Tensor]] = {}
        self.normalize = ImageNormalization()
        # Recompute block activations in the backward pass instead of storing them.
        self.gradient_checkpointing = False

    def _special_tokens(self, B: int, S: int, first_index: int) -> Tensor:
        """Camera + register tokens for frames first_index .. first_index+S-1: [B*S, 1+R, C]."""
        variant = (torch.arange(S, device=self.camera_token.device) + first_index > 0).long()
        special = torch.cat((self.camera_token, self.register_token), dim=2)[0]  # [2, 1+R, C]
        return special[variant].unsqueeze(0).expand(B, -1, -1, -1).reshape(B * S, *special.shape[1:])

    def _rope_tables(self, rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (rows, cols, dtype, device)
        if key not in self._rope_cache:
            pos = grid_positions(rows, cols, self.patch_start_idx, device=device)
            self._rope_cache[key] = self.rope.tables(pos, self.frame_blocks[0].attn.head_dim, dtype)
        return self._rope_cache[key]

    def forward(
        self,
        images: Tensor,
        state: StreamState | None = None,
        causal: bool = True,
        keep_levels: Iterable[int] | None = None,
    ) -> tuple[list[Tensor | None], int]:
        B, S, C_in, H, W = images.shape
        if C_in != 3:
            raise ValueError(f"expected 3 input channels, got {C_in}")
        if state is not None and not causal:
            raise ValueError("a stream state implies causal attention")
        keep = set(range(self.depth)) if keep_levels is None else {i % self.depth for i in keep_levels}

        x = self.normalize(images.reshape(B * S, 3, H, W))
        patches = self.patch_embed(x)  # [B*S, hw, C]
        first_index = state.num_frames if state is not None else 0
        tokens = torch.cat((self._special_tokens(B, S, first_index).to(patches.dtype), patches), dim=1)
        P, C = tokens.shape[1], tokens.shape[2]

        cos, sin = self._rope_tables(H // self.patch_size, W // self.patch_size, tokens.dtype, tokens.device)
        frame_rope = (cos, sin)
        temporal_rope = (cos, sin) if S == 1 else (cos.repeat(S, 1), sin.repeat(S, 1))

        mask = None
        if causal and S > 1:
            mask = block_causal_mask(S, P, device=tokens.device)

        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()

        def run(block: nn.Module, x: Tensor, **kw) -> Tensor:
            return checkpoint(block, x, use_reentrant=False, **kw) if recompute else block(x, **kw)

        outputs: list[Tensor | None] = []
        for i in range(self.depth):
            tokens = run(self.frame_blocks[i], tokens.reshape(B * S, P, C), rope=frame_rope)
            frame_out = tokens.reshape(B, S, P, C)
            kv = state.temporal.layer(i) if state is not None else None
            tokens = run(self.global_blocks[i], tokens.reshape(B, S * P, C), rope=temporal_rope, attn_mask=mask, kv=kv)
            outputs.append(torch.cat((frame_out, tokens.reshape(B, S, P, C)), dim=-1) if i in keep else None)
        return outputs, self.patch_start_idx
