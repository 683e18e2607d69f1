"""Attention layers, position embeddings and caches (installed as `recon.attention`)."""

from .cache import FullKVCache, KVCache, StreamState
from .mha import Attention, block_causal_mask
from .naive import naive_softmax_attention, redundancy_scores
from .rolling import RollingKVCache
from .rope import RotaryEmbedding2D, grid_positions

__all__ = [
    "Attention",
    "FullKVCache",
    "KVCache",
    "RollingKVCache",
    "RotaryEmbedding2D",
    "StreamState",
    "block_causal_mask",
    "grid_positions",
    "naive_softmax_attention",
    "redundancy_scores",
]
