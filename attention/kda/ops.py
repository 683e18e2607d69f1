"""KDA dispatch: fla's Triton kernels on CUDA, our torch forms everywhere else.

`kda(q, k, v, g, beta, ...)` takes the prepared inputs of `recon.attention.kda.naive`
(L2-normalised q/k, log-decay g, beta after the sigmoid) and returns (o, final state).

GPU: fla-core (`pip install fla-core`, module `fla.ops.kda`) provides `chunk_kda` and
`fused_recurrent_kda`; both take an initial state and return the final state, which covers
the per-frame streaming step as well, so no kernel of our own is needed. fla is imported
lazily, only for CUDA tensors; when it is missing (or fails to import) the torch chunked
form runs instead, on any device.

Training: fla's `fused_recurrent_kda` is inference-only (depending on the fla version its
backward raises NotImplementedError, or its output carries no autograd graph at all and
gradients would silently stop there), so when autograd needs gradients of the inputs the
fla path always takes `chunk_kda`, which has a backward; the torch forms are plain
autograd code.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .chunk import kda_chunk
from .naive import kda_recurrent

BACKENDS = ("auto", "fla", "chunk", "recurrent")
# fla's token-by-token kernel wins below this length (the chunk kernel's setup dominates).
_FLA_RECURRENT_MAX_T = 64


@functools.cache
def _fla_ops():
    try:
        from fla.ops.kda import chunk_kda, fused_recurrent_kda
    except Exception:  # missing, or an incompatible triton/torch: fall back to torch
        return None
    return chunk_kda, fused_recurrent_kda


def fla_available() -> bool:
    return _fla_ops() is not None


def kda(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """q, k [B, T, H, K]; v [B, T, H, V]; g [B, T, H, K]; beta [B, T, H]; state [B, H, K, V].

    Returns (o [B, T, H, V], final state [B, H, K, V] float32)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown KDA backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "fla" if q.is_cuda and fla_available() else "chunk"
    if backend == "recurrent":
        return kda_recurrent(q, k, v, g, beta, scale, initial_state)
    if backend == "chunk":
        return kda_chunk(q, k, v, g, beta, scale, initial_state)
    ops = _fla_ops()
    if ops is None:
        raise RuntimeError("KDA backend 'fla' needs the fla-core package (pip install fla-core)")
    chunk_kda, fused_recurrent_kda = ops
    training = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, g, beta, initial_state)
    )
    fn = fused_recurrent_kda if q.shape[1] <= _FLA_RECURRENT_MAX_T and not training else chunk_kda
    state = None if initial_state is None else initial_state.float().contiguous()
    o, final = fn(
        q=q.contiguous(),
        k=k.contiguous(),
        v=v.contiguous(),
        g=g.float().contiguous(),
        beta=beta.to(q.dtype).contiguous(),
        scale=scale,
        initial_state=state,
        output_final_state=True,
    )
    return o, final
