"""The KDA layer (parameter names follow fla's `KimiDeltaAttention`, so its checkpoints map 1:1).

    q, k, v = silu(causal_conv(W_q x)), ..., ...      short depthwise causal convolutions
    g       = -exp(A_log) * softplus(f_proj(x) + dt_bias)   per-key-channel log-decay
    beta    = sigmoid(b_proj(x))   (x2 with negative eigenvalues allowed)
    o       = KDA(l2norm(q), l2norm(k), v, g, beta)         see recon.attention.kda.naive
    y       = o_proj(rmsnorm(o) * w * sigmoid(g_proj(x)))   gated RMSNorm per head

Input x [B, T, C] is one causal token sequence; a `KDALayerState` (recurrent state +
the convolutions' last inputs) continues it across calls, so feeding a sequence in pieces
equals feeding it at once. The state's size never depends on T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .naive import kda_gate, l2_normalize
from .ops import kda


@dataclass
class KDALayerState:
    """recurrent [B, H, K, V] float32; conv: the last (kernel-1) inputs of the q, k, v
    convolutions, each [B, D, kernel-1] (empty tuple without convolutions)."""

    recurrent: Tensor
    conv: tuple[Tensor, ...] = ()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.recurrent, *self.conv))

    def detached_copy(self) -> "KDALayerState":
        """A copy owning compact tensors (a conv tail may be a view into a whole call's input)."""
        return KDALayerState(self.recurrent.clone(), tuple(t.clone() for t in self.conv))

    def copy_(self, other: "KDALayerState") -> None:
        """Overwrite in place with `other`'s values (same shapes): the tensors stay the same
        objects, as a CUDA-graph replay needs."""
        self.recurrent.copy_(other.recurrent)
        for mine, theirs in zip(self.conv, other.conv, strict=True):
            mine.copy_(theirs)


class CausalConv1d(nn.Module):
    """Depthwise causal convolution over time followed by SiLU; weight [D, 1, kernel]."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor, past: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [B, T, D], past [B, D, kernel-1] (zeros when None) -> (y [B, T, D], new past)."""
        B, T, D = x.shape
        xt = x.transpose(1, 2)
        if past is None:
            past = xt.new_zeros(B, D, self.kernel_size - 1)
        full = torch.cat((past.to(xt.dtype), xt), dim=2)
        y = F.conv1d(full, self.weight.to(xt.dtype), None if self.bias is None else self.bias.to(xt.dtype), groups=D)
        return F.silu(y).transpose(1, 2), full[:, :, full.shape[2] - (self.kernel_size - 1) :]


class GatedRMSNorm(nn.Module):
    """rmsnorm(x) * weight * sigmoid(gate) over the last dim (fla's FusedRMSNormGated, sigmoid)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor, gate: Tensor) -> Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return (y * torch.sigmoid(gate.float())).to(x.dtype)


class KDALayer(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: int,
        expand_v: float = 1.0,
        conv_size: int = 4,
        conv_bias: bool = False,
        allow_neg_eigval: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        head_v_dim = int(head_dim * expand_v)
        if head_v_dim != head_dim * expand_v:
            raise ValueError(f"expand_v={expand_v} gives a non-integer value head dim for head_dim={head_dim}")
        self.num_heads, self.head_k_dim, self.head_v_dim = num_heads, head_dim, head_v_dim
        self.allow_neg_eigval = allow_neg_eigval
        self.conv_size = conv_size
        key_dim, value_dim = num_heads * head_dim, num_heads * head_v_dim
        self.q_proj = nn.Linear(hidden_size, key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, value_dim, bias=False)
        if conv_size > 0:
            self.q_conv1d = CausalConv1d(key_dim, conv_size, conv_bias)
            self.k_conv1d = CausalConv1d(key_dim, conv_size, conv_bias)
            self.v_conv1d = CausalConv1d(value_dim, conv_size, conv_bias)
        self.f_proj = nn.Sequential(
            nn.Linear(hidden_size, head_v_dim, bias=False), nn.Linear(head_v_dim, key_dim, bias=False)
        )
        self.b_proj = nn.Linear(hidden_size, num_heads, bias=False)
        # Decay-rate init as in Kimi Linear / fla: rates in [1, 16], time steps in [1e-3, 0.1].
        self.A_log = nn.Parameter(torch.empty(num_heads).uniform_(1, 16).log())
        dt = torch.exp(torch.rand(key_dim) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.g_proj = nn.Sequential(
            nn.Linear(hidden_size, head_v_dim, bias=False), nn.Linear(head_v_dim, value_dim, bias=True)
        )
        self.o_norm = GatedRMSNorm(head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(value_dim, hidden_size, bias=False)

    def init_state(self, batch: int, device: torch.device) -> KDALayerState:
        H, K, V = self.num_heads, self.head_k_dim, self.head_v_dim
        conv = ()
        if self.conv_size > 0:
            w = self.conv_size - 1
            conv = tuple(torch.zeros(batch, H * d, w, device=device) for d in (K, K, V))
        return KDALayerState(torch.zeros(batch, H, K, V, device=device), conv)

    def forward(
        self, x: Tensor, state: KDALayerState | None = None, backend: str = "auto"
    ) -> tuple[Tensor, KDALayerState]:
        """x [B, T, C] -> (y [B, T, C], state after the last token)."""
        B, T, _ = x.shape
        H, K, V = self.num_heads, self.head_k_dim, self.head_v_dim
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        conv_state: tuple[Tensor, ...] = ()
        if self.conv_size > 0:
            past = state.conv if state is not None and state.conv else (None, None, None)
            (q, cq), (k, ck), (v, cv) = (
                conv(t, p) for conv, t, p in zip((self.q_conv1d, self.k_conv1d, self.v_conv1d), (q, k, v), past)
            )
            conv_state = (cq, ck, cv)
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q = l2_normalize(q.reshape(B, T, H, K))
        k = l2_normalize(k.reshape(B, T, H, K))
        v = v.reshape(B, T, H, V)
        g = kda_gate(self.f_proj(x).reshape(B, T, H, K), self.A_log, self.dt_bias)
        beta = torch.sigmoid(self.b_proj(x).float()) * (2.0 if self.allow_neg_eigval else 1.0)
        o, recurrent = kda(q, k, v, g, beta, initial_state=None if state is None else state.recurrent, backend=backend)
        o = self.o_norm(o, self.g_proj(x).reshape(B, T, H, V))
        return self.o_proj(o.reshape(B, T, H * V).to(x.dtype)), KDALayerState(recurrent, conv_state)
