"""HorizonStream-style aggregator: local window attention + KDA linear attention.

Input  images [B, S, 3, H, W] in [0, 1]; a `LinearStreamState` continues a stream.
Output `HorizonLevels`: per level [B, S, P, 2C] (frame block ++ global block, None for
       levels nobody asked for), the pose tokens of the last level [B, S, Wmax, 2C] (token 0
       of each window slot), the window layout, and the index of the first patch token.

Per frame: [register tokens (optional), metric readout token, patches] (P tokens) plus,
per window slot, X pose tokens (the current frame's slot gets pose_token[0], past frames'
slots pose_token[1]). Each level:
  frame block   patches attend within their frame (3D RoPE); each pose slot attends to its
                window frame's patch keys (this level's frame-block keys) and to itself;
  linear block  (levels in `linear_layers`) KDA over the stream's token sequence: per frame,
                its patches in raster order, then its pose slots in window order;
  global block  a frame's patches and pose tokens attend to the patches of the frames in
                its window (itself + the last W) and to the frame's own pose tokens.
Window keys come from `WindowKVCache`s, KDA states from the state: memory is constant.
A one-frame streaming call attends over the window rings in place (horizon_ring.py); it
reads the frame index from the state's device clock only, so once the window is full the
call is the same every frame (capturable as a CUDA graph). Multi-frame calls concatenate
each layer's window history in time order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recon.attention import LinearStreamState, RopeTables, RotaryEmbedding3D
from recon.config import ModelConfig

from .backbone import ImageNormalization, ViTBackbone
from .horizon_blocks import LinearBlock, LocalBlock
from .horizon_layout import WindowLayout
from .horizon_ring import RingStep, slot_attention, store_step, window_keys



@dataclass
class HorizonLevels:
    levels: list[Tensor | None]
    pose: Tensor  # [B, S, Wmax, 2C]
    layout: WindowLayout
    patch_start_idx: int


class HorizonAggregator(nn.Module):
    def __init__(self, c: ModelConfig, init_values: float = 0.01) -> None:
        super().__init__()
        C = c.embed_dim
        self.depth, self.window, self.pose_tokens = c.depth, c.window_frames, c.pose_tokens
        self.period = c.rope_time_period
        self.patch_size = c.patch_size
        self.patch_embed = ViTBackbone(c.img_size, c.patch_size, C, c.backbone_depth, c.backbone_heads,
                                       c.num_register_tokens, c.mlp_ratio)  # fmt: skip
        self.rope = RotaryEmbedding3D(c.rope_freq)
        self.frame_blocks = nn.ModuleList(LocalBlock(C, c.num_heads, c.mlp_ratio, init_values) for _ in range(c.depth))
        self.global_blocks = nn.ModuleList(LocalBlock(C, c.num_heads, c.mlp_ratio, init_values) for _ in range(c.depth))
        self.linear_blocks = nn.ModuleDict({
            str(i): LinearBlock(C, c.num_heads, c.kda_head_dim, c.mlp_ratio, init_values, c.kda_expand_v,
                                c.kda_conv_size, c.kda_allow_neg_eigval)
            for i in sorted(set(c.linear_layers))
        })  # fmt: skip
        # Index 0: the current frame's slot ("reference"), 1: past frames' slots.
        self.pose_token = nn.Parameter(torch.randn(2, c.pose_tokens, C) * 1e-6)
        special = 0
        if c.horizon_register_tokens:
            self.register_token = nn.Parameter(torch.randn(1, 2, c.num_register_tokens, C) * 1e-6)
            special += c.num_register_tokens
        if c.metric_readout:
            self.metric_readout_token = nn.Parameter(torch.randn(1, 1, C) * 1e-6)
            special += 1
        self.patch_start_idx = special
        self.normalize = ImageNormalization()

    def _special_tokens(self, n: int) -> list[Tensor]:
        out = []
        if hasattr(self, "register_token"):
            out.append(self.register_token[:, 1].expand(n, -1, -1))
        if hasattr(self, "metric_readout_token"):
            out.append(self.metric_readout_token.expand(n, -1, -1))
        return out

    def forward(
        self,
        images: Tensor,
        state: LinearStreamState | None = None,
        keep_levels: Iterable[int] | None = None,
        time_start: int | None = None,
        joint: bool = False,
    ) -> HorizonLevels:
        B, S, _, H, W = images.shape
        first = state.num_frames if state is not None else 0
        if joint and first:
            raise ValueError("a joint first window must start the stream")
        keep = set(range(self.depth)) if keep_levels is None else {i % self.depth for i in keep_levels}
        held = state.frame.num_frames(0) if state is not None else 0
        device = images.device
        layout = WindowLayout.build(first, S, self.window, held, joint, device=device)
        X, Wm, C = self.pose_tokens, layout.num_slots, self.pose_token.shape[-1]

        patches = self.patch_embed(self.normalize(images.reshape(B * S, 3, H, W)))
        x_p = torch.cat([*self._special_tokens(B * S), patches], dim=1)  # [B*S, P, C]
        P = x_p.shape[1]
        current = torch.arange(Wm, device=device)[None] == (layout.lengths[:, None] - 1)  # [S, Wm]
        pose = torch.where(current[..., None, None], self.pose_token[0], self.pose_token[1])  # [S, Wm, X, C]
        x_s = pose.to(x_p.dtype).expand(B, -1, -1, -1, -1).reshape(B * S * Wm, X, C)

        clock = state.clock.read(first, device) if state is not None else None
        rope_p, rope_a = self._rope(self._times(S, clock, time_start, device), H, W, Wm * X, B, x_p.dtype)
        ring = None
        if state is not None and S == 1 and not joint:
            ring = RingStep.build(clock, Wm, state.frame.rows)
        ctx = _Context(B, S, P, X, Wm, layout, state, rope_p, rope_a, joint, ring)
        levels: list[Tensor | None] = []
        pose_out = None
        for i in range(self.depth):
            x_p, x_s = (self._frame_level if ring is None else self._frame_ring)(i, x_p, x_s, ctx)
            frame_p, frame_s = x_p, x_s
            x_p, x_s = (self._global_level if ring is None else self._global_ring)(i, x_p, x_s, ctx)
            levels.append(torch.cat((frame_p.view(B, S, P, C), x_p.view(B, S, P, C)), dim=-1) if i in keep else None)
            if i == self.depth - 1:
                first_tok = lambda t: t.view(B, S, Wm, X, C)[..., 0, :]  # noqa: E731
                pose_out = torch.cat((first_tok(frame_s), first_tok(x_s)), dim=-1)
        return HorizonLevels(levels, pose_out, layout, self.patch_start_idx)

    def _times(self, S: int, clock: Tensor | None, time_start: int | None, device) -> Tensor:
        """RoPE time index of the call's frames [S] (long, on the device): the stream index
        (the device clock when streaming) wrapped with the period, or time_start + s."""
        if time_start is not None:
            return torch.arange(time_start, time_start + S, device=device)
        times = torch.arange(S, device=device) if clock is None else clock + torch.arange(S, device=device)
        return times % self.period if self.period > 0 else times

    def _rope(self, times: Tensor, H: int, W: int, extra: int, B: int, dtype) -> tuple[RopeTables, RopeTables]:
        """3D RoPE tables for [B*S, heads, n, D] tensors: the frame's P tokens, and the frame's
        P tokens + `extra` pose tokens at (0, 0, 0)."""
        D = self.frame_blocks[0].attn.head_dim
        S, rows, cols = times.shape[0], H // self.patch_size, W // self.patch_size
        t = self.rope.frame_tables(times, rows, cols, self.patch_start_idx, extra, D, dtype)
        n = t.cos.shape[1]

        def per_frame(x: Tensor) -> Tensor:  # [S, n, D] -> [B*S, 1, n, D] (a view for B == 1)
            return x[None].expand(B, S, n, D).reshape(B * S, 1, n, D)

        cos, sin = per_frame(t.cos), per_frame(t.sin)
        P = n - extra
        return RopeTables(cos[:, :, :P], sin[:, :, :P], t.index), RopeTables(cos, sin, t.index)

    def _frame_level(self, i: int, x_p: Tensor, x_s: Tensor, ctx: "_Context") -> tuple[Tensor, Tensor]:
        blk = self.frame_blocks[i]
        B, S, P, X, Wm = ctx.B, ctx.S, ctx.P, ctx.X, ctx.Wm
        h = blk.norm1(x_p)
        q, k, v = blk.attn.project(h, ctx.rope_p)
        x_p = blk.finish(x_p, blk.attn.attend(q, k, v, blk.attn.gate(h)))
        hist_k, hist_v = ctx.history("frame", i, k, v)
        # Each pose slot sees its window frame's patches and its own tokens.
        h = blk.norm1(x_s)
        q, k, v = blk.attn.project(h)
        idx = ctx.layout.slot_hist.reshape(-1)
        H, D = k.shape[1], k.shape[3]

        def gather(hist: Tensor) -> Tensor:  # [B, H, F, P, D] -> [B*S*Wm, H, P, D]
            return hist.index_select(2, idx).transpose(1, 2).reshape(B * S * Wm, H, P, D)

        keys, values = torch.cat((gather(hist_k), k), dim=2), torch.cat((gather(hist_v), v), dim=2)
        x_s = blk.finish(x_s, blk.attn.attend(q, keys, values, blk.attn.gate(h)))
        return x_p, x_s

    def _global_level(self, i: int, x_p: Tensor, x_s: Tensor, ctx: "_Context") -> tuple[Tensor, Tensor]:
        B, S, P, X, Wm = ctx.B, ctx.S, ctx.P, ctx.X, ctx.Wm
        C = x_p.shape[-1]
        x = torch.cat((x_p, x_s.reshape(B * S, Wm * X, C)), dim=1)  # [B*S, A, C]
        A = x.shape[1]
        if str(i) in self.linear_blocks:
            x = self._linear(i, x, ctx)
        blk = self.global_blocks[i]
        h = blk.norm1(x)
        q, k, v = blk.attn.project(h, ctx.rope_a)
        if ctx.joint:  # the reference pools its gate over the whole first chunk
            gate = blk.attn.gate(h.reshape(B, S * A, C)).repeat_interleave(S, dim=0)
        else:
            gate = blk.attn.gate(h, None if ctx.layout.uniform else ctx.token_valid.repeat(B, 1))
        hist_k, hist_v = ctx.history("temporal", i, k[:, :, :P], v[:, :, :P])
        idx = ctx.layout.slot_hist.reshape(-1)
        H, D = k.shape[1], k.shape[3]

        def window(hist: Tensor) -> Tensor:  # [B, H, F, P, D] -> [B*S, H, Wm*P, D]
            return hist.index_select(2, idx).reshape(B, H, S, Wm * P, D).transpose(1, 2).reshape(B * S, H, Wm * P, D)

        keys = torch.cat((window(hist_k), k[:, :, P:]), dim=2)
        values = torch.cat((window(hist_v), v[:, :, P:]), dim=2)
        mask = None if ctx.layout.uniform else ctx.global_mask.repeat(B, 1, 1, 1)
        x = blk.finish(x, blk.attn.attend(q, keys, values, gate, mask))
        return x[:, :P], x[:, P:].reshape(B * S * Wm, X, C)

    def _frame_ring(self, i: int, x_p: Tensor, x_s: Tensor, ctx: "_Context") -> tuple[Tensor, Tensor]:
        """`_frame_level` of a one-frame streaming call, over the frame ring in place."""
        blk, B, L = self.frame_blocks[i], ctx.B, ctx.Wm
        h = blk.norm1(x_p)
        q, k, v = blk.attn.project(h, ctx.rope_p)  # [B, H, P, D]
        x_p = blk.finish(x_p, blk.attn.attend(q, k, v, blk.attn.gate(h)))
        h = blk.norm1(x_s)
        q_s, k_s, v_s = blk.attn.project(h)  # [B*L, H, X, D], slot order

        def rows(t: Tensor) -> Tensor:  # [B*L, H, X, D] -> [B, H, L, X, D]
            return t.reshape(B, L, *t.shape[1:]).transpose(1, 2)

        ring_k, ring_v = store_step(ctx.state.frame, i, ctx.ring, k, v, rows(k_s), rows(v_s))
        out = slot_attention(q_s, ring_k, ring_v, ctx.ring)
        return x_p, blk.finish(x_s, blk.attn.output(out, blk.attn.gate(h)))

    def _global_ring(self, i: int, x_p: Tensor, x_s: Tensor, ctx: "_Context") -> tuple[Tensor, Tensor]:
        """`_global_level` of a one-frame streaming call, over the temporal ring in place."""
        B, P, X, L = ctx.B, ctx.P, ctx.X, ctx.Wm
        C = x_p.shape[-1]
        x = torch.cat((x_p, x_s.reshape(B, L * X, C)), dim=1)  # [B, A, C]
        if str(i) in self.linear_blocks:
            x = self._linear(i, x, ctx)
        blk = self.global_blocks[i]
        h = blk.norm1(x)
        q, k, v = blk.attn.project(h, ctx.rope_a)  # [B, H, A, D]
        H, D = k.shape[1], k.shape[3]
        slot_k, slot_v = (t[:, :, P:].reshape(B, H, L, X, D) for t in (k, v))
        ring_k, ring_v = store_step(ctx.state.temporal, i, ctx.ring, k[:, :, :P], v[:, :, :P], slot_k, slot_v)
        x = blk.finish(x, blk.attn.attend(q, window_keys(ring_k, L), window_keys(ring_v, L), blk.attn.gate(h)))
        return x[:, :P], x[:, P:].reshape(B * L, X, C)

    def _linear(self, i: int, x: Tensor, ctx: "_Context") -> Tensor:
        B, S, A, C = ctx.B, ctx.S, x.shape[1], x.shape[2]
        seq = x.reshape(B, S * A, C)
        keep = None if ctx.layout.uniform or ctx.joint else ctx.token_valid.reshape(-1)
        state = ctx.state.recurrent.get(i) if ctx.state is not None else None
        y, new_state = self.linear_blocks[str(i)](seq if keep is None else seq[:, keep], state)
        if ctx.state is not None:
            ctx.state.recurrent.set(i, new_state)
        if keep is not None:  # skipped (inactive) tokens pass through unchanged
            out = seq.clone()
            out[:, keep] = y
            y = out
        return y.reshape(B * S, A, C)


class _Context:
    """Per-call constants shared by the level steps."""

    def __init__(self, B, S, P, X, Wm, layout: WindowLayout, state, rope_p, rope_a, joint: bool, ring) -> None:
        self.B, self.S, self.P, self.X, self.Wm = B, S, P, X, Wm
        self.layout, self.state, self.rope_p, self.rope_a, self.joint = layout, state, rope_p, rope_a, joint
        self.ring: RingStep | None = ring
        uniform = layout.uniform
        self.token_valid = None if uniform else layout.token_valid(P, X)
        self.global_mask = None if uniform else layout.global_mask(P, X)

    def history(self, which: str, i: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """This call's patch keys [B*S, H, P, D] -> past + new frames [B, H, F, P, D]."""
        B, S = self.B, self.S
        k = k.reshape(B, S, *k.shape[1:]).transpose(1, 2)
        v = v.reshape(B, S, *v.shape[1:]).transpose(1, 2)
        if self.state is None:
            return k, v
        cache = self.state.frame if which == "frame" else self.state.temporal
        return cache.history(i, k, v, self.P + self.X)
