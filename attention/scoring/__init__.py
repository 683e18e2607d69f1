"""Redundancy scores of the rolling KV cache: torch reference and fused Triton kernel.

naive.py           plain-torch reference (CPU path, test oracle)
triton_kernels.py  fused two-pass Triton kernel (CUDA; CPU under TRITON_INTERPRET=1)

`redundancy_scores(keys, backend="auto")`: keys [B, H, N, D] -> scores [B, H, N] float32.
"auto" runs the kernel for CUDA tensors when triton imports, the reference otherwise;
"triton" forces the kernel (CPU tensors need TRITON_INTERPRET=1 set before triton is
first imported in the process); "torch" forces the reference. Triton is imported lazily, so
this package works without it.
"""

from __future__ import annotations

from torch import Tensor

from ..lazy_kernels import BACKENDS, LazyKernels
from .naive import redundancy_scores as redundancy_scores_torch

_KERNELS = LazyKernels(__name__ + ".triton_kernels", "redundancy-score")


def triton_available() -> bool:
    return _KERNELS.available()


def redundancy_scores(keys: Tensor, backend: str = "auto") -> Tensor:
    """keys [B, H, N, D] -> scores [B, H, N] float32 (higher = more redundant, evicted first)."""
    if _KERNELS.choose(backend, keys.is_cuda) == "torch":
        return redundancy_scores_torch(keys)
    return _KERNELS.require().redundancy_scores_triton(keys)


__all__ = ["BACKENDS", "redundancy_scores", "redundancy_scores_torch", "triton_available"]
