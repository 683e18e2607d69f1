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

# Linear memory strategy: local window attention + KDA linear attention.
from .linear_state import LinearStreamState, NullKVCache, PoseHistory, RecurrentStates  # noqa: E402
from .local import LocalAttention  # noqa: E402
from .rope3d import RopeTables, RotaryEmbedding3D, frame_positions, time_index  # noqa: E402
from .window import WindowKVCache  # noqa: E402

__all__ += [
    "LinearStreamState",
    "LocalAttention",
    "NullKVCache",
    "PoseHistory",
    "RecurrentStates",
    "RopeTables",
    "RotaryEmbedding3D",
    "WindowKVCache",
    "frame_positions",
    "time_index",
]
