"""Fused Triton kernel: qkv -> (LayerNorm + 2D RoPE on q and k, cast) -> q, k, v [B, H, T, D].

One program handles BLOCK_T tokens of one head: it reads that head's q, k and v slices of
the qkv rows once, normalises q and k over D in fp32, rotates them with the [T, D] cos/sin
tables and writes all three, contiguous and in the output dtype. In torch the same work
is a permute, two LayerNorms with fp32 outputs, ~10 elementwise RoPE ops and three casts
(~15 launches and as many passes over q and k) per attention layer.

RoPE pairs feature i with i + D/4 inside each half (the VGGT "rotate half" layout,
recon.attention.rope): rotated[i] = x[i] cos[i] + sign(i) x[partner(i)] sin[i], with
partner/sign (+D/4, -1) in quarters 0 and 2, (-D/4, +1) in quarters 1 and 3; or, given an
explicit pairing `index` [D] (3D RoPE, recon.attention.rope3d), partner = index with the
sign already in the sin table. The partner's normalised value is recomputed from its raw
value and the row statistics.

Under TRITON_INTERPRET=1 (set before triton is imported) it runs on CPU tensors (tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _norm_rope_store(
    src_ptr, w_ptr, b_ptr, out_ptr, out_off, mask, offs_d, partner, sign, cos, sin, eps,
    D: tl.constexpr, HAS_ROPE: tl.constexpr,
):  # fmt: skip
    """LayerNorm over D (fp32) of the [BLOCK_T, D] rows at src_ptr, rotate, store."""
    x = tl.load(src_ptr + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / D
    xc = x - mean[:, None]
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    w = tl.load(w_ptr + offs_d).to(tl.float32)
    bias = tl.load(b_ptr + offs_d).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :] + bias[None, :]
    if HAS_ROPE:
        xp = tl.load(src_ptr + partner[None, :], mask=mask, other=0.0).to(tl.float32)
        wp = tl.load(w_ptr + partner).to(tl.float32)
        bp = tl.load(b_ptr + partner).to(tl.float32)
        yp = (xp - mean[:, None]) * rstd[:, None] * wp[None, :] + bp[None, :]
        y = y * cos + sign[None, :] * yp * sin
    tl.store(out_ptr + out_off, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _qk_norm_rope_kernel(
    qkv_ptr, q_out, k_out, v_out,
    qw_ptr, qb_ptr, kw_ptr, kb_ptr, cos_ptr, sin_ptr, index_ptr,
    T, H, eps,
    D: tl.constexpr,
    BLOCK_T: tl.constexpr,
    HAS_ROPE: tl.constexpr,
    EXPLICIT_PAIRS: tl.constexpr,
):  # fmt: skip
    pid_t = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    mask = (offs_t < T)[:, None]
    offs_d = tl.arange(0, D)
    if EXPLICIT_PAIRS:
        partner = tl.load(index_ptr + offs_d).to(tl.int32)
        sign = tl.full((D,), 1.0, tl.float32)
    else:
        first_of_pair = ((offs_d // (D // 4)) % 2) == 0
        partner = tl.where(first_of_pair, offs_d + D // 4, offs_d - D // 4)
        sign = tl.where(first_of_pair, -1.0, 1.0)

    # Row start of each token in qkv [B, T, 3, H, D], at this head.
    row = ((b.to(tl.int64) * T + offs_t.to(tl.int64)) * (3 * H * D) + h * D)[:, None]
    out_off = ((b.to(tl.int64) * H + h) * T + offs_t.to(tl.int64))[:, None] * D + offs_d[None, :]
    cos = 0.0
    sin = 0.0
    if HAS_ROPE:
        tab = offs_t.to(tl.int64)[:, None] * D + offs_d[None, :]
        cos = tl.load(cos_ptr + tab, mask=mask, other=0.0).to(tl.float32)
        sin = tl.load(sin_ptr + tab, mask=mask, other=0.0).to(tl.float32)
    _norm_rope_store(qkv_ptr + row, qw_ptr, qb_ptr, q_out, out_off, mask, offs_d, partner, sign, cos, sin, eps,
                     D, HAS_ROPE)  # fmt: skip
    _norm_rope_store(qkv_ptr + row + H * D, kw_ptr, kb_ptr, k_out, out_off, mask, offs_d, partner, sign, cos, sin,
                     eps, D, HAS_ROPE)  # fmt: skip
    v = tl.load(qkv_ptr + row + 2 * H * D + offs_d[None, :], mask=mask, other=0.0)
    tl.store(v_out + out_off, v.to(v_out.dtype.element_ty), mask=mask)


def qk_norm_rope_triton(
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
    out: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as `naive.qk_norm_rope`; D must be a power of two (64 or 128 in practice).
    `out`: preallocated contiguous (q, k, v) [B, H, T, D] to write into."""
    B, T, C3 = qkv.shape
    H = num_heads
    D = C3 // (3 * H)
    if D & (D - 1) or D < 4:
        raise ValueError(f"the fused kernel needs a power-of-two head dim, got {D}")
    qkv = qkv.contiguous()
    dtype = out_dtype or qkv.dtype
    if out is None:
        out = tuple(torch.empty(B, H, T, D, dtype=dtype, device=qkv.device) for _ in range(3))
    if any(t.shape != (B, H, T, D) or t.dtype != dtype or not t.is_contiguous() for t in out):
        raise ValueError(f"out must be three contiguous [{B}, {H}, {T}, {D}] {dtype} tensors")
    q, k, v = out
    has_rope = cos is not None
    if has_rope:
        if cos.shape != (T, D) or sin.shape != (T, D):
            raise ValueError(f"RoPE tables must be [T, D] = [{T}, {D}], got {tuple(cos.shape)}")
        cos, sin = cos.contiguous(), sin.contiguous()
    explicit = has_rope and index is not None
    if explicit and index.shape != (D,):
        raise ValueError(f"the RoPE pairing index must be [D] = [{D}], got {tuple(index.shape)}")
    block_t = 32 if D <= 64 else 16
    grid = (triton.cdiv(T, block_t), B * H)
    _qk_norm_rope_kernel[grid](
        qkv, q, k, v, q_w, q_b, k_w, k_b,
        cos if has_rope else q_w, sin if has_rope else q_w, index.contiguous() if explicit else q_w,
        T, H, eps, D=D, BLOCK_T=block_t, HAS_ROPE=has_rope, EXPLICIT_PAIRS=explicit,
    )  # fmt: skip
    return q, k, v
