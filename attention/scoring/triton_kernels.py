"""Fused Triton redundancy scores for the rolling KV cache (same result as `naive.py`).

keys [B, H, N, D] (bf16 / fp16 / fp32, any strides: the cache passes a slice of its
[B, H, cap, D] buffer, read in place) -> scores [B, H, N] float32.

Two launches over a (split, B*H) grid; program (s, bh) owns the BLOCK_N-row blocks
[s * BLOCKS_PER_PROG, (s + 1) * BLOCKS_PER_PROG) of head bh:

1. `_normalized_key_sum_kernel`: sum of the L2-normalised keys over its blocks, fp32,
   written to partials [B*H, split, D] (every entry written: no zero fill, no atomics,
   so the result is deterministic run to run).
2. `_redundancy_score_kernel`: reduces the `split` partials of its head (a few KB, from
   L2), divides by N and normalises -> m̂, then writes <k, m̂> / max(|k|, eps) per token.

Keys are read twice in their stored dtype and never copied or upcast in memory; the
torch reference makes an fp32 copy, a normalised copy and a product (~5 passes).

Under TRITON_INTERPRET=1 the kernels run on CPU tensors (slow; tests only). The variable
must be set before triton is first imported in the process: it is read at every
`@triton.jit`, and triton.language's own helpers (tl.sum, tl.zeros) are decorated when
triton is imported. `interpreted()` says whether this module can run on the CPU.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

EPS = 1e-12  # torch.nn.functional.normalize's default
_MAX_SPLIT = 64  # programs per head; pass 2 reads all of a head's partials


@triton.jit
def _load_key_block(base, block, N, D, stride_n, stride_d, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Keys of rows [block * BLOCK_N, (block + 1) * BLOCK_N) as fp32 [BLOCK_N, BLOCK_D] (0 outside),
    their row indices and row mask."""
    offs_n = block * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < N
    ptrs = base + offs_n[:, None].to(tl.int64) * stride_n + offs_d[None, :] * stride_d
    k = tl.load(ptrs, mask=mask_n[:, None] & (offs_d < D)[None, :], other=0.0).to(tl.float32)
    return k, offs_n, mask_n


@triton.jit
def _normalized_key_sum_kernel(
    k_ptr,
    part_ptr,
    N,
    H,
    D,
    stride_b,
    stride_h,
    stride_n,
    stride_d,
    SPLIT,
    EPS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCKS_PER_PROG: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    base = k_ptr + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    first = pid_s * BLOCKS_PER_PROG
    for i in range(0, BLOCKS_PER_PROG):
        k, offs_n, mask_n = _load_key_block(base, first + i, N, D, stride_n, stride_d, BLOCK_N, BLOCK_D)
        inv = 1.0 / tl.maximum(tl.sqrt(tl.sum(k * k, axis=1)), EPS)  # masked rows: k = 0 -> 0
        acc += k * inv[:, None]
    part = tl.sum(acc, axis=0)
    tl.store(part_ptr + (pid_bh.to(tl.int64) * SPLIT + pid_s) * D + offs_d, part, mask=mask_d)


@triton.jit
def _redundancy_score_kernel(
    k_ptr,
    part_ptr,
    out_ptr,
    N,
    H,
    D,
    stride_b,
    stride_h,
    stride_n,
    stride_d,
    SPLIT,
    EPS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCKS_PER_PROG: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    # Mean normalised key of this head, from the partial sums of pass 1.
    offs_s = tl.arange(0, BLOCK_S)
    p_ptrs = part_ptr + pid_bh.to(tl.int64) * SPLIT * D + offs_s[:, None] * D + offs_d[None, :]
    p = tl.load(p_ptrs, mask=(offs_s[:, None] < SPLIT) & mask_d[None, :], other=0.0)
    mean = tl.sum(p, axis=0) / N
    mean = mean / tl.maximum(tl.sqrt(tl.sum(mean * mean, axis=0)), EPS)

    base = k_ptr + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h
    out_base = out_ptr + pid_bh.to(tl.int64) * N
    first = pid_s * BLOCKS_PER_PROG
    for i in range(0, BLOCKS_PER_PROG):
        k, offs_n, mask_n = _load_key_block(base, first + i, N, D, stride_n, stride_d, BLOCK_N, BLOCK_D)
        dot = tl.sum(k * mean[None, :], axis=1)
        norm = tl.sqrt(tl.sum(k * k, axis=1))
        tl.store(out_base + offs_n, dot / tl.maximum(norm, EPS), mask=mask_n)


def interpreted() -> bool:
    """True when these kernels and triton.language's helpers were built for the Triton
    interpreter, i.e. TRITON_INTERPRET=1 was set before triton was imported (CPU tensors)."""
    jit = triton.runtime.jit.JITFunction
    return not isinstance(_redundancy_score_kernel, jit) and not isinstance(tl.sum, jit)


@functools.cache
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _block_n(block_d: int) -> int:
    return max(16, min(64, 8192 // block_d))  # <= 8K fp32 values per tile


def redundancy_scores_triton(
    keys: Tensor,
    *,
    out: Tensor | None = None,
    block_n: int | None = None,
    split: int | None = None,
) -> Tensor:
    """keys [B, H, N, D] -> scores [B, H, N] float32 (see `naive.redundancy_scores`).

    out: optional contiguous float32 [B, H, N] buffer to write into (every entry written).
    block_n / split: tile rows (power of two) and programs per head; None = heuristics.
    """
    if keys.dim() != 4:
        raise ValueError(f"keys must be [B, H, N, D], got shape {tuple(keys.shape)}")
    if keys.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"keys must be float32, float16 or bfloat16, got {keys.dtype}")
    B, H, N, D = keys.shape
    if out is None:
        out = torch.empty(B, H, N, dtype=torch.float32, device=keys.device)
    elif out.shape != (B, H, N) or out.dtype != torch.float32 or not out.is_contiguous() or out.device != keys.device:
        raise ValueError("out must be a contiguous float32 [B, H, N] tensor on the keys' device")
    if not keys.is_cuda and not interpreted():
        raise RuntimeError("the Triton redundancy-score kernel needs CUDA tensors, or (CPU tensors) "
                           "TRITON_INTERPRET=1 set before triton is first imported in the process")
    if B * H == 0 or N == 0:
        return out
    if D == 0:
        return out.zero_()
    block_d = triton.next_power_of_2(D)
    block_n = block_n or _block_n(block_d)
    if block_n & (block_n - 1):
        raise ValueError(f"block_n must be a power of two, got {block_n}")
    n_blocks = triton.cdiv(N, block_n)
    if split is None:
        programs = 8 * _num_sms(keys.device.index or 0) if keys.is_cuda else 4
        split = min(n_blocks, _MAX_SPLIT, max(1, triton.cdiv(programs, B * H)))
    # A power of two, and a constexpr: few compiled variants, and a loop bound the
    # interpreter takes (it cannot use a runtime int as a range bound with numpy >= 2.4).
    blocks_per_prog = triton.next_power_of_2(triton.cdiv(n_blocks, max(1, min(split, n_blocks))))
    split = triton.cdiv(n_blocks, blocks_per_prog)  # every program owns at least one block
    partials = torch.empty(B * H, split, D, dtype=torch.float32, device=keys.device)
    grid = (split, B * H)
    common = dict(N=N, H=H, D=D, stride_b=keys.stride(0), stride_h=keys.stride(1), stride_n=keys.stride(2),
                  stride_d=keys.stride(3), SPLIT=split, EPS=EPS, BLOCK_N=block_n, BLOCK_D=block_d,
                  BLOCKS_PER_PROG=blocks_per_prog)  # fmt: skip
    with torch.cuda.device(keys.device) if keys.is_cuda else contextlib.nullcontext():
        _normalized_key_sum_kernel[grid](keys, partials, **common)
        _redundancy_score_kernel[grid](keys, partials, out, BLOCK_S=triton.next_power_of_2(split), **common)
    return out

