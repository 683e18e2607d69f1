"""Bounded `rolling` cache: equals `full` when unbounded, keeps its anchor, stays in budget."""

import pytest
import torch

from recon.attention import FullKVCache, RollingKVCache, StreamState, redundancy_scores
from recon.memory import make_state
from recon.model import GeometryTransformer
from tests.helpers import REDUCED, randomize_


@pytest.fixture(scope="module")
def model():
    return randomize_(GeometryTransformer(REDUCED), seed=3).eval()


def _frames(n, seed=0):
    return torch.rand(1, n, 3, 42, 70, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_unbounded_rolling_equals_full_exactly(model):
    images = _frames(6)
    full = model.init_state()
    unbounded = StreamState(RollingKVCache(REDUCED.depth), RollingKVCache(model.camera_head.num_cache_slots))
    for i in range(6):
        a = model(images[:, i : i + 1], state=full)
        b = model(images[:, i : i + 1], state=unbounded)
        for key in ("pose_enc", "depth", "world_points", "world_points_conf"):
            assert torch.equal(a[key], b[key]), (i, key)


@torch.no_grad()
def test_bounded_cache_keeps_anchor_and_budget(model):
    images = _frames(14, seed=1)
    state = make_state("rolling", model, budget_frames=4, camera_budget_frames=3)
    reference = FullKVCache(REDUCED.depth)  # to read the first frame's keys back
    anchor = None
    for i in range(14):
        model(images[:, i : i + 1], state=state)
        if i == 0:
            model(images[:, :1], state=StreamState(reference, FullKVCache(model.camera_head.num_cache_slots)))
            tokens = state.temporal.anchor_tokens
            anchor = [reference._k[layer][:, :, :tokens].clone() for layer in range(REDUCED.depth)]
        cache = state.temporal
        for layer in range(REDUCED.depth):
            assert torch.equal(cache._k[layer][:, :, : cache.anchor_tokens], anchor[layer]), (i, layer)
    per_token = 2 * 1 * REDUCED.num_heads * (REDUCED.embed_dim // REDUCED.num_heads) * 4
    assert cache.evicted > 0
    assert cache.nbytes() <= cache.total_budget * per_token
    assert cache.total_budget == 4 * cache.anchor_tokens * REDUCED.depth
    caps = [cache.capacity(i) for i in range(REDUCED.depth)]
    assert all(c is not None for c in caps) and len(set(caps)) >= 1


def _naive_step(keys: torch.Tensor, new: torch.Tensor, cap: int, anchors: int) -> torch.Tensor:
    """Reference: evict the most redundant candidates by concatenation and sorting.
    keys [B, H, n, D], new [B, H, T, D] -> the kept set [B, H, cap, D] (order irrelevant)."""
    n_evict = keys.shape[2] + new.shape[2] - cap
    if n_evict <= 0:
        return torch.cat((keys, new), dim=2)
    scores = redundancy_scores(keys[:, :, anchors:])
    keep = scores.topk(keys.shape[2] - anchors - n_evict, dim=-1, largest=False).indices + anchors
    kept = keys.gather(2, keep[..., None].expand(-1, -1, -1, keys.shape[3]))
    return torch.cat((keys[:, :, :anchors], kept, new), dim=2)


def _as_set(x: torch.Tensor) -> torch.Tensor:
    # Sort rows lexicographically per head so two slot orders compare equal.
    flat = x[..., 0] * 1e6 + x[..., 1]
    return x.gather(2, flat.argsort(dim=-1)[..., None].expand_as(x))


def test_eviction_matches_naive_reference_and_keeps_new_tokens_last():
    g = torch.Generator().manual_seed(0)
    B, H, T, D = 1, 3, 5, 8
    cache = RollingKVCache(1, budget_tokens=4 * T + 1, rebalance=False)
    ref = None
    for step in range(12):
        k = torch.randn(B, H, T, D, generator=g)
        keys, _ = cache.update(0, k, k.clone())
        assert torch.equal(keys[:, :, -T:], k), "new tokens must come last"
        ref = k if ref is None else _naive_step(ref, k, cache.capacity(0) or 10**9, T)
        assert torch.allclose(_as_set(keys), _as_set(ref)), step
    assert cache.evicted > 0


def test_budget_validation():
    with pytest.raises(ValueError, match="at most one"):
        RollingKVCache(2, budget_tokens=10, budget_mb=1)
    cache = RollingKVCache(2, budget_tokens=10)
    with pytest.raises(ValueError, match="below the minimum"):
        cache.update(0, torch.zeros(1, 1, 8, 4), torch.zeros(1, 1, 8, 4))
