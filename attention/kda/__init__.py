"""Kimi Delta Attention: gated delta-rule linear attention with per-channel decay.

naive.py  recurrent reference (CPU path, test oracle) and input helpers
chunk.py  chunkwise-parallel torch form (equal, faster on the CPU)
ops.py    dispatch (fla's Triton kernels on CUDA when installed)
layer.py  the layer: projections, short convolutions, gates, gated RMSNorm
"""

from .chunk import kda_chunk
from .layer import CausalConv1d, GatedRMSNorm, KDALayer, KDALayerState
from .naive import kda_gate, kda_recurrent, l2_normalize
from .ops import fla_available, kda

__all__ = [
    "CausalConv1d",
    "GatedRMSNorm",
    "KDALayer",
    "KDALayerState",
    "fla_available",
    "kda",
    "kda_chunk",
    "kda_gate",
    "kda_recurrent",
    "l2_normalize",
]
