"""Local attention pieces: 3D RoPE, the head-wise gate, the sliding-window cache."""

import pytest
import torch

from recon.attention import LocalAttention, RotaryEmbedding3D, WindowKVCache, naive_softmax_attention, time_index


def _rotate(x, pos, head_dim):
    return RotaryEmbedding3D(100.0).tables(torch.tensor(pos), head_dim, torch.float32).apply(x)


@pytest.mark.parametrize("head_dim", [16, 64])  # 16: parts of 5, 5, 6 features (odd leftovers pass through)
def test_rope3d_relative_and_layout(head_dim):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, head_dim, generator=g), torch.randn(2, head_dim, generator=g)
    p = [[3, 1, 2], [5, 4, 0]]
    shifted = [[a + 7, b + 2, c + 5] for a, b, c in p]
    score = (_rotate(q, p, head_dim)[0] * _rotate(k, p, head_dim)[1]).sum()
    score_shifted = (_rotate(q, shifted, head_dim)[0] * _rotate(k, shifted, head_dim)[1]).sum()
    assert torch.allclose(score, score_shifted, atol=1e-4)  # depends on position differences only
    assert torch.allclose(_rotate(q, [[0, 0, 0]] * 2, head_dim), q)  # specials / pose tokens: no rotation
    moved = _rotate(q, [[1, 0, 0]] * 2, head_dim)  # a time step rotates only the time part
    d = head_dim // 3
    assert not torch.allclose(moved[:, :d], q[:, :d]) and torch.allclose(moved[:, d:], q[:, d:])
    if d % 2:  # the odd leftover of the time part is not rotated
        assert torch.allclose(moved[:, d - 1], q[:, d - 1])


def test_time_index_wraps():
    assert [time_index(n, 5) for n in (0, 4, 5, 11)] == [0, 4, 0, 1]
    assert time_index(11, 0) == 11


def test_attention_gate_and_reference():
    torch.manual_seed(0)
    attn = LocalAttention(32, 4)
    torch.nn.init.normal_(attn.gate_proj.weight)
    x = torch.randn(2, 5, 32)
    valid = torch.tensor([[True] * 5, [True, True, False, False, False]])
    gate = attn.gate(x, valid)
    expected = torch.sigmoid(attn.gate_proj(torch.stack((x[0].mean(0), x[1, :2].mean(0)))))
    assert torch.allclose(gate, expected, atol=1e-6)  # masked mean over the valid tokens
    q, k, v = attn.project(x)
    out = attn.attend(q, k, v, gate)
    ref = naive_softmax_attention(q, k, v) * gate[:, :, None, None]
    assert torch.allclose(out, attn.proj(ref.transpose(1, 2).reshape(2, 5, 32)), atol=1e-5)


def _frames(first, count, B=1, H=2, P=3, D=4):
    # Frame f's entries all equal f, so the cache's content says which frames it holds.
    f = torch.arange(first, first + count, dtype=torch.float32)
    return f.view(1, 1, count, 1, 1).expand(B, H, count, P, D).contiguous()


def test_window_cache_is_a_bounded_fifo():
    cache = WindowKVCache(num_layers=1, window=3)
    seen = 0
    for step in (1, 1, 2, 4, 1):  # single frames and multi-frame calls
        k = _frames(seen, step)
        hist_k, hist_v = cache.history(0, k, -k)
        expected = torch.arange(max(0, seen - 3), seen + step, dtype=torch.float32)
        assert torch.equal(hist_k[0, 0, :, 0, 0], expected)  # held past frames, then the new ones, in order
        assert torch.equal(hist_v, -hist_k)
        seen += step
        assert cache.num_frames(0) == min(seen, 3)
    buffer = cache._k[0]
    assert cache.nbytes() == 2 * buffer.numel() * 4  # one preallocated ring for keys, one for values
    cache.history(0, _frames(seen, 1), _frames(seen, 1))
    assert cache._k[0] is buffer and cache.nbytes() == 2 * buffer.numel() * 4  # written in place
    cache.reset()
    assert cache.nbytes() == 0 and cache.num_frames(0) == 0


def test_window_cache_rejects_a_different_frame_size():
    cache = WindowKVCache(num_layers=1, window=2)
    cache.history(0, _frames(0, 1), _frames(0, 1))
    with pytest.raises(ValueError, match="does not match layer 0"):
        cache.history(0, _frames(1, 1, P=5), _frames(1, 1, P=5))
