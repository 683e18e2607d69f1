"""Multi-head self-attention with optional QK-norm, 2D RoPE and a KV-cache hook.

Shapes: tokens [B, T, C]; heads H, head_dim D = C / H. Keys and values handed to a cache
are post-norm, post-RoPE [B, H, T, D], so a cache never has to re-rotate anything.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .graph_break import graph_break
from .qknorm_rope import qk_norm_rope
from .rope import RotaryEmbedding2D
from .rope3d import RopeTables


# cuDNN's fused attention, torch's first choice on Hopper, builds an execution plan for
# every new key length: 30-45 ms of host time per new shape (H200, torch 2.11), which a
# cache that grows pays on every frame, and past ~250 frames of vggt-1b keys it also stalled
# single frames by ~250 ms. FlashAttention needs no plan; it is as fast on short caches and
# ~10 % slower than a planned cuDNN call on 300-frame ones. So attention over a growing cache
# runs the plan-free backends at every length. Caches with a fixed shape (steady; CUDA-graph
# replay) build their plan once: torch picks.
_NO_PLAN_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def growing_kv_backends(q: Tensor, k: Tensor) -> list[SDPBackend] | None:
    """SDPA backends for q [B, H, Tq, D] over a growing cache's keys k [B, H, Tk, D]: the
    plan-free ones on CUDA, None (torch picks) elsewhere."""
    return _NO_PLAN_BACKENDS if q.is_cuda else None


class LayerKV(Protocol):
    """One attention layer's view of a cache (see recon.attention.cache)."""

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this step's keys/values [B, H, T, D]; return what to attend over,
        [B, H, T_past + T, D], the new tokens last."""
        ...

    def sdpa_backends(self, q: Tensor, k: Tensor) -> list[SDPBackend] | None:
        """Which SDPA backends to allow for q over the returned k (None: torch picks)."""
        ...


class Attention(nn.Module):
    # Training probes (recon.losses_match): when keep_qk is set, forward keeps this call's
    # queries and keys [B, H, T, D] in kept_qk for a loss on the attention itself.
    keep_qk = False
    kept_qk: tuple[Tensor, Tensor] | None = None

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def project(
        self,
        x: Tensor,
        rotate=None,
        rope: tuple[Tensor, Tensor] | None = None,
        rope_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, T, C] -> q, k, v [B, H, T, D]: QK-norm, then the position embedding (RoPE
        tables `rope` = (cos, sin) [T, D] with the 2D pairing, or with the explicit pairing
        `rope_index` [D] and signed sin (3D RoPE); or any `rotate` function applied to q and
        k), in the compute dtype. Inference on CUDA with [T, D] tables runs one fused kernel."""
        B, T, _ = x.shape
        autocast = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype
        qkv = self.qkv(x)
        if rotate is None and self._fusable(qkv, rope):
            cos, sin = rope if rope is not None else (None, None)
            qn, kn = self.q_norm, self.k_norm
            return qk_norm_rope(qkv, self.num_heads, qn.weight, qn.bias, kn.weight, kn.bias, cos, sin, qn.eps, dtype,
                                index=rope_index)  # fmt: skip
        q, k, v = qkv.reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None and rope_index is not None:
            rotate = RopeTables(rope[0], rope[1], rope_index).apply
        elif rope is not None:
            rotate = functools.partial(RotaryEmbedding2D.apply, cos=rope[0], sin=rope[1])
        if rotate is not None:
            q, k = rotate(q), rotate(k)
        if autocast:
            # LayerNorm/RoPE come out of autocast in fp32; cache and attend in bf16 instead
            # of keeping fp32 keys around (half the cache memory and bandwidth).
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        return q, k, v

    def _fusable(self, qkv: Tensor, rope: tuple[Tensor, Tensor] | None) -> bool:
        if not qkv.is_cuda or torch.is_grad_enabled() or not isinstance(self.q_norm, nn.LayerNorm):
            return False
        return rope is None or tuple(rope[0].shape) == (qkv.shape[1], self.head_dim)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        attn_mask: Tensor | None = None,
        kv: LayerKV | None = None,
    ) -> Tensor:
        """x [B, T, C]; rope (cos, sin) broadcastable to [B, H, T, D]; attn_mask bool
        [T, T] over the new tokens (True = attend) or None; kv: this layer's cache slot."""
        B, T, C = x.shape
        q, k, v = self.project(x, rope=rope)
        if self.keep_qk:
            self.kept_qk = (q, k)
        if kv is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:  # the cache's key length changes per step: not part of a captured CUDA graph
            out = graph_break(attend_with_cache, q, k, v, kv, attn_mask)
        return self.proj(out.transpose(1, 2).reshape(B, T, C))


def attend_with_cache(q: Tensor, k: Tensor, v: Tensor, kv: LayerKV, attn_mask: Tensor | None = None) -> Tensor:
    """Store this step's k, v [B, H, T, D] in the cache slot `kv`, then attend q [B, H, T, D]
    over the cached past and the new tokens; attn_mask bool [T, T] over the new tokens."""
    k, v = kv.update(k, v)
    if attn_mask is not None and attn_mask.shape[-1] != k.shape[2]:
        # The mask covers the new tokens; cached past tokens are visible to all.
        past = attn_mask.new_ones(attn_mask.shape[0], k.shape[2] - attn_mask.shape[-1])
        attn_mask = torch.cat((past, attn_mask), dim=-1)
    backends = kv.sdpa_backends(q, k)
    with sdpa_kernel(backends) if backends else contextlib.nullcontext():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def block_causal_mask(num_frames: int, tokens_per_frame: int, device=None) -> Tensor:
    """Bool mask [S*P, S*P]: a token sees all tokens of its own frame and of earlier frames."""
    frame = torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)
    return frame[:, None] >= frame[None, :]
