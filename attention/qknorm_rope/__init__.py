"""Fused QK-norm + 2D RoPE for the attention layers: torch reference and Triton kernel.

naive.py           plain-torch reference (CPU path, test oracle)
triton_kernels.py  one fused Triton kernel (CUDA; CPU under TRITON_INTERPRET=1)

`qk_norm_rope(qkv, num_heads, q_w, q_b, k_w, k_b, cos, sin, eps, out_dtype, backend="auto")`:
qkv [B, T, 3*H*D] -> q, k, v [B, H, T, D]. "auto" runs the kernel for CUDA tensors when
triton imports (and D is a power of two), the reference otherwise.
"""

from __future__ import annotations

from torch import Tensor

from ..lazy_kernels import BACKENDS, LazyKernels
from .naive import qk_norm_rope as qk_norm_rope_torch

_KERNELS = LazyKernels(__name__ + ".triton_kernels", "qk_norm_rope")


def triton_available() -> bool:
    return _KERNELS.available()


def qk_norm_rope(qkv: Tensor, num_heads: int, *args, backend: str = "auto", **kwargs) -> tuple[Tensor, Tensor, Tensor]:
    """See naive.qk_norm_rope for the arguments and shapes."""
    head_dim = qkv.shape[-1] // (3 * num_heads)
    pow2 = head_dim >= 4 and not head_dim & (head_dim - 1)
    if _KERNELS.choose(backend, qkv.is_cuda and pow2) == "torch":
        return qk_norm_rope_torch(qkv, num_heads, *args, **kwargs)
    return _KERNELS.require().qk_norm_rope_triton(qkv, num_heads, *args, **kwargs)


__all__ = ["BACKENDS", "qk_norm_rope", "qk_norm_rope_torch", "triton_available"]
