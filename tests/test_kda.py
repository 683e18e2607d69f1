"""KDA (gated delta-rule linear attention): chunked form and GPU kernels against the recurrence."""

import pytest
import torch

from recon.attention.kda import KDALayer, fla_available, kda, kda_chunk, kda_recurrent, l2_normalize


def _inputs(B=2, T=45, H=3, K=8, V=12, decay=3.0, beta_max=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = l2_normalize(torch.randn(B, T, H, K, generator=g))
    k = l2_normalize(torch.randn(B, T, H, K, generator=g))
    v = torch.randn(B, T, H, V, generator=g)
    log_decay = -decay * torch.rand(B, T, H, K, generator=g)
    beta = beta_max * torch.rand(B, T, H, generator=g)
    state = torch.randn(B, H, K, V, generator=g)
    return q, k, v, log_decay, beta, state


def test_recurrence_is_the_gated_delta_rule():
    # S_t = (I - b k k^T) Diag(a) S_{t-1} + b k v^T, o_t = scale * S_t^T q_t, written out with matrices.
    q, k, v, g, beta, s0 = _inputs(B=1, T=6, H=1, K=4, V=3)
    o, final = kda_recurrent(q, k, v, g, beta, scale=0.5, initial_state=s0)
    S = s0[0, 0]
    for t in range(6):
        kt, bt = k[0, t, 0], beta[0, t, 0]
        decay = torch.diag(g[0, t, 0].exp())
        S = (torch.eye(4) - bt * torch.outer(kt, kt)) @ decay @ S + bt * torch.outer(kt, v[0, t, 0])
        assert torch.allclose(o[0, t, 0], 0.5 * S.T @ q[0, t, 0], atol=1e-5)
    assert torch.allclose(final[0, 0], S, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [4, 16, 64])
@pytest.mark.parametrize("decay,beta_max", [(3.0, 1.0), (60.0, 2.0)])  # strong decay; negative eigenvalues
def test_chunk_equals_recurrent(chunk_size, decay, beta_max):
    q, k, v, g, beta, s0 = _inputs(decay=decay, beta_max=beta_max)  # T=45: a partial last chunk
    o_ref, s_ref = kda_recurrent(q, k, v, g, beta, initial_state=s0)
    o, s = kda_chunk(q, k, v, g, beta, initial_state=s0, chunk_size=chunk_size)
    assert (o - o_ref).abs().max() <= 1e-4
    assert (s - s_ref).abs().max() <= 1e-4


def test_chunk_without_initial_state_and_dispatch():
    q, k, v, g, beta, _ = _inputs(T=20)
    o_ref, s_ref = kda_recurrent(q, k, v, g, beta)
    o, s = kda(q, k, v, g, beta)  # auto on the CPU: the chunked form
    assert torch.allclose(o, o_ref, atol=1e-4) and torch.allclose(s, s_ref, atol=1e-4)
    with pytest.raises(ValueError, match="unknown KDA backend 'cuda'"):
        kda(q, k, v, g, beta, backend="cuda")


def test_layer_in_pieces_equals_whole_sequence():
    torch.manual_seed(0)
    layer = KDALayer(hidden_size=32, num_heads=2, head_dim=8, conv_size=4).eval()
    x = torch.randn(2, 23, 32)
    with torch.no_grad():
        whole, final = layer(x)
        state, pieces = None, []
        for a, b in ((0, 1), (1, 3), (3, 10), (10, 23)):  # pieces shorter than the conv kernel too
            y, state = layer(x[:, a:b], state)
            pieces.append(y)
    assert (torch.cat(pieces, dim=1) - whole).abs().max() <= 1e-5
    assert (state.recurrent - final.recurrent).abs().max() <= 1e-5
    # Constant-size state: the same bytes after 1 token and after 23.
    _, one = layer(x[:, :1])
    assert one.nbytes() == state.nbytes() == final.nbytes()


@pytest.mark.skipif(not (torch.cuda.is_available() and fla_available()), reason="needs CUDA and fla-core")
@pytest.mark.parametrize("T", [37, 300])  # fla's fused_recurrent (<= 64 tokens) and chunk kernels
def test_fla_kernels_match_recurrence(T):
    q, k, v, g, beta, s0 = (x.cuda() for x in _inputs(B=2, T=T, H=4, K=64, V=64, decay=1.0))
    o_ref, s_ref = kda_recurrent(q, k, v, g, beta, initial_state=s0)
    o, s = kda(q, k, v, g, beta, initial_state=s0, backend="fla")
    assert (o.float() - o_ref).abs().max() <= 2e-3  # the kernels use TF32 tensor-core products
    assert (s.float() - s_ref).abs().max() <= 2e-3


def test_fla_dispatch_trains_with_the_chunk_kernel(monkeypatch):
    """fla's fused_recurrent_kda has no backward: with gradients needed, even short sequences
    take chunk_kda; inference on short sequences keeps the recurrent kernel."""
    import recon.attention.kda.ops as ops

    called = []

    def fake(name):
        def fn(q, k, v, g, beta, scale, initial_state, output_final_state):
            called.append(name)
            return kda_chunk(q, k, v, g, beta, scale, initial_state)

        return fn

    monkeypatch.setattr(ops, "_fla_ops", lambda: (fake("chunk"), fake("recurrent")))
    q, k, v, g, beta, _ = _inputs(T=20)
    kda(q, k, v, g, beta, backend="fla")
    v.requires_grad_(True)
    with torch.no_grad():
        kda(q, k, v, g, beta, backend="fla")
    o, _ = kda(q, k, v, g, beta, backend="fla")
    o.sum().backward()
    assert called == ["recurrent", "recurrent", "chunk"] and v.grad is not None
