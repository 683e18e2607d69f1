"""Memory strategies: how a stream keeps (or forgets) its past.

Each strategy builds the `StreamState` a model streams with. Strategies are looked up by
name, so the session and the CLI never special-case them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from recon.attention import FullKVCache, RollingKVCache, StreamState

StrategyFactory = Callable[..., StreamState]
_STRATEGIES: dict[str, StrategyFactory] = {}


def register(name: str) -> Callable[[StrategyFactory], StrategyFactory]:
    def wrap(factory: StrategyFactory) -> StrategyFactory:
        _STRATEGIES[name] = factory
        return factory

    return wrap


def available() -> list[str]:
    return sorted(_STRATEGIES)


def make_state(name: str, model, **options) -> StreamState:
    if name not in _STRATEGIES:
        raise ValueError(f"unknown memory strategy {name!r}; available: {', '.join(available())}")
    return _STRATEGIES[name](model, **options)


@register("full")
def full(model, reserve_frames: int = 0) -> StreamState:
    """Causal KV cache of every past frame (StreamVGGT behaviour); memory grows per frame.
    reserve_frames: allocate room for that many frames at the first frame (a stream of known
    length then never reallocates its cache)."""
    return StreamState(
        temporal=FullKVCache(model.config.depth, reserve_frames=reserve_frames),
        camera=FullKVCache(model.camera_head.num_cache_slots, reserve_frames=reserve_frames),
    )


@register("rolling")
def rolling(
    model,
    budget_tokens: int | None = None,
    budget_mb: float | None = None,
    budget_frames: int | None = None,
    camera_budget_frames: int = 64,
) -> StreamState:
    """Bounded cache: anchor frame + the least redundant past tokens (InfiniteVGGT
    behaviour). Budget in tokens (per head, summed over layers), MB, or frames' worth of
    tokens (default 16 frames: 1.6 GB of bf16 keys/values for vggt-1b at 518x392). With no
    bound at all, use `full`."""
    if budget_tokens is None and budget_mb is None and budget_frames is None:
        budget_frames = 16
    return StreamState(
        temporal=RollingKVCache(model.config.depth, budget_tokens, budget_mb, budget_frames),
        camera=RollingKVCache(model.camera_head.num_cache_slots, budget_frames=camera_budget_frames, rebalance=False),
    )


@register("window")
def window(model, size: int = 20, overlap: int = 5, **options):
    """Offline model over overlapping windows of `size` frames sharing `overlap`, each aligned
    to the map by Sim(3) and layer-wise depth scale (see recon.windowed); predictions come
    per window, so use `Reconstructor.push` / `flush`. Other options: `WindowConfig`'s."""
    from recon.align.layerwise import LayerConfig
    from recon.windowed import make_windowed_stream

    if "layers" not in options:  # segment a window's depth maps in parallel on machines with cores to spare
        cores = os.cpu_count() or 1
        options["layers"] = LayerConfig(workers=min(8, cores // 2) if cores >= 8 else 0)
    return make_windowed_stream(model, size=size, overlap=overlap, **options)


@register("linear")
def linear(model) -> StreamState:
    """Constant memory: sliding-window caches of the last W frames (local attention) plus
    the KDA recurrent states of the linear layers (HorizonStream behaviour). Needs a model
    of the "horizon" architecture (e.g. the `tiny-linear` or `horizonstream` presets)."""
    config = model.config
    if getattr(config, "architecture", "vggt") != "horizon" or not config.linear_layers:
        raise ValueError(f"memory strategy 'linear' needs a model with linear-attention layers "
                         f"(architecture 'horizon', e.g. preset 'tiny-linear'); model {config.name!r} has none")
    return model.init_state()
