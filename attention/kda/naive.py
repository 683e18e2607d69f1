"""Kimi Delta Attention (KDA): the readable recurrent reference (CPU path and test oracle).

Per head a state S [K, V] is updated token by token with a gated delta rule whose decay is
learned per key channel and depends on the data:

    S_t = (I - beta_t k_t k_t^T) Diag(exp(g_t)) S_{t-1} + beta_t k_t v_t^T
    o_t = scale * S_t^T q_t

which is the convention of fla's `naive_recurrent_kda` (decay first, then the delta update
reads the decayed state). Memory is the state only: it never depends on the sequence length.

Shapes (fla's layout): q, k [B, T, H, K]; v [B, T, H, V]; g [B, T, H, K] log-decay (<= 0);
beta [B, T, H]; state [B, H, K, V] (float32). The helpers below turn a layer's raw
projections into those inputs exactly as fla's fused kernels do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kda_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Token-by-token KDA. Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] fp32)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    q, k, v, g, beta = (x.float() for x in (q, k, v, g, beta))
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.float().clone()
    out = q.new_empty(B, T, H, V)
    for t in range(T):
        S = S * g[:, t].exp()[..., None]  # Diag(a_t) S
        k_t = k[:, t]  # [B, H, K]
        residual = v[:, t] - torch.einsum("bhk,bhkv->bhv", k_t, S)
        S = S + torch.einsum("bhk,bhv->bhkv", beta[:, t, :, None] * k_t, residual)
        out[:, t] = torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S)
    return out.to(v.dtype), S


def kda_gate(g_raw: Tensor, A_log: Tensor, dt_bias: Tensor | None = None) -> Tensor:
    """Log-decay per key channel: -exp(A_log) * softplus(g_raw + dt_bias).

    g_raw [..., H, K], A_log [H], dt_bias [H * K] -> [..., H, K] float32 (always <= 0).
    """
    H, K = g_raw.shape[-2:]
    x = g_raw.float()
    if dt_bias is not None:
        x = x + dt_bias.float().view(H, K)
    return -A_log.float().exp().view(H, 1) * F.softplus(x)


def l2_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim (fla's in-kernel L2 norm)."""
    x32 = x.float()
    return (x32 * torch.rsqrt((x32 * x32).sum(-1, keepdim=True) + eps)).to(x.dtype)
