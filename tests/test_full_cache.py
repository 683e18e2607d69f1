"""The full (growing) KV cache: reserved capacity and the SDPA backend policy for growing caches."""

from types import SimpleNamespace

import torch
from torch.nn.attention import SDPBackend

from recon.attention import FullKVCache, RollingKVCache
from recon.attention.mha import growing_kv_backends


def _kv(t=7, H=2, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, H, t, D, generator=g), torch.randn(1, H, t, D, generator=g)


def test_reserved_cache_never_reallocates_and_matches_growing_cache():
    reserved, growing = FullKVCache(2, reserve_frames=10), FullKVCache(2)
    pointers = set()
    for step in range(10):
        k, v = _kv(seed=step)
        for layer in range(2):
            kr, vr = reserved.layer(layer).update(k, v)
            kg, vg = growing.layer(layer).update(k, v)
            assert torch.equal(kr, kg) and torch.equal(vr, vg)
        pointers.add(reserved._k[0].data_ptr())
    assert len(pointers) == 1  # one allocation for the whole (known-length) stream
    assert reserved._k[0].shape[2] == 10 * 7 and reserved.num_tokens(0) == 70
    k, v = _kv(seed=99)  # a stream longer than reserved still works: it grows
    kr, _ = reserved.layer(0).update(k, v)
    assert kr.shape[2] == 77 and torch.equal(kr[:, :, -7:], k)


def _fake(shape, cuda=True):
    return SimpleNamespace(shape=shape, is_cuda=cuda)


def test_growing_cache_uses_plan_free_backends_at_every_length():
    q = _fake((1, 16, 1041, 64))
    for frames in (1, 20, 300, 3000):
        allowed = growing_kv_backends(q, _fake((1, 16, 1041 * frames, 64)))
        assert SDPBackend.FLASH_ATTENTION in allowed and SDPBackend.CUDNN_ATTENTION not in allowed
    assert growing_kv_backends(_fake((1, 16, 1041, 64), cuda=False), q) is None  # CPU: torch picks


def test_steady_cache_lets_torch_pick():
    q = _fake((1, 2, 7, 4))
    full = FullKVCache(1)
    assert full.layer(0).sdpa_backends(q, _fake((1, 2, 70, 4))) is not None  # always growing
    rolling = RollingKVCache(1, budget_tokens=22)
    for step in range(4):
        rolling.layer(0).update(*_kv(seed=step))
    assert rolling.steady()
    assert rolling.layer(0).sdpa_backends(q, _fake((1, 2, 22, 4))) is None  # fixed shape: one plan, torch picks


def test_reserved_cache_keeps_its_buffers_across_streams():
    cache = FullKVCache(1, reserve_frames=4)
    cache.layer(0).update(*_kv(seed=0))
    ptr = cache._k[0].data_ptr()
    cache.reset()
    assert cache.num_tokens(0) == 0
    k, v = _kv(seed=1)
    got_k, got_v = cache.layer(0).update(k, v)
    assert cache._k[0].data_ptr() == ptr and torch.equal(got_k, k) and torch.equal(got_v, v)  # no stale tokens
    cache.reset()
    k3, v3 = _kv(H=3, seed=2)  # a stream of another layout gets new buffers
    got_k, _ = cache.layer(0).update(k3, v3)
    assert torch.equal(got_k, k3)
    unreserved = FullKVCache(1)
    unreserved.layer(0).update(*_kv(seed=0))
    unreserved.reset()
    assert unreserved.nbytes() == 0  # without reserved room a reset releases the memory
