"""Fused QK-norm + 2D RoPE for the attention layers: torch reference and Triton kernel.

naive.py           plain-torch reference (CPU path, test oracle)
triton_kernels.py  one fused Triton kernel (CUDA; CPU under TRITON_INTERPRET=1)

`qk_norm_rope(qkv, num_heads, q_w, q_b, k_w, k_b, cos, sin, eps, out_dtype, backend="auto")`:
qkv [B, T, 3*H*D] -> q, k, v [B, H, T, D]. "auto" runs the kernel for CUDA tensors when
triton imports (and D is a power of two), the reference otherwise.
"""

from __future__ import annotations

import functools
import importlib

from torch import Tensor

from .naive import qk_norm_rope as qk_norm_rope_torch

BACKENDS = ("auto", "triton", "torch")
_KERNELS = __name__ + ".triton_kernels"


@functools.cache
def _triton_import_error() -> Exception | None:
    try:
        importlib.import_module(_KERNELS)
    except Exception as exc:  # missing, or an incompatible triton/torch: fall back to torch
        return exc
    return None


def triton_available() -> bool:
    return _triton_import_error() is None


def qk_norm_rope(qkv: Tensor, num_heads: int, *args, backend: str = "auto", **kwargs) -> tuple[Tensor, Tensor, Tensor]:
    """See naive.qk_norm_rope for the arguments and shapes."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown qk_norm_rope backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "auto":
        head_dim = qkv.shape[-1] // (3 * num_heads)
        pow2 = head_dim >= 4 and not head_dim & (head_dim - 1)
        backend = "triton" if qkv.is_cuda and pow2 and triton_available() else "torch"
    if backend == "torch":
        return qk_norm_rope_torch(qkv, num_heads, *args, **kwargs)
    err = _triton_import_error()
    if err is not None:
        raise RuntimeError(f"qk_norm_rope backend 'triton' needs triton ({err})") from err
    return importlib.import_module(_KERNELS).qk_norm_rope_triton(qkv, num_heads, *args, **kwargs)


__all__ = ["BACKENDS", "qk_norm_rope", "qk_norm_rope_torch", "triton_available"]
