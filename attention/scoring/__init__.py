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

import functools
import importlib

from torch import Tensor

from .naive import redundancy_scores as redundancy_scores_torch

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


def redundancy_scores(keys: Tensor, backend: str = "auto") -> Tensor:
    """keys [B, H, N, D] -> scores [B, H, N] float32 (higher = more redundant, evicted first)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown redundancy-score backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "triton" if keys.is_cuda and triton_available() else "torch"
    if backend == "torch":
        return redundancy_scores_torch(keys)
    err = _triton_import_error()
    if err is not None:
        raise RuntimeError(f"redundancy-score backend 'triton' needs triton ({err})") from err
    return importlib.import_module(_KERNELS).redundancy_scores_triton(keys)


__all__ = ["BACKENDS", "redundancy_scores", "redundancy_scores_torch", "triton_available"]
