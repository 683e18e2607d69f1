"""Fused QK-norm + 2D RoPE: the Triton kernel against the plain-torch reference.

On CPU the checks run under the Triton interpreter in a worker process (tests/kernel_worker.py);
on a GPU in this process. Fresh random inputs per case; outputs poisoned before the kernel.
"""

import importlib

import pytest
import torch

from recon.attention.qknorm_rope import qk_norm_rope, qk_norm_rope_torch
from recon.attention.rope import RotaryEmbedding2D, grid_positions
from recon.attention.rope3d import RotaryEmbedding3D, frame_positions
from tests.kernel_worker import DEVICE, kernel_worker_fixture

kernel_check = kernel_worker_fixture(__name__)


def _inputs(B, T, H, D, dtype, seed, rope=True):
    g = torch.Generator().manual_seed(seed)
    # Offset and spread per channel, so the LayerNorm statistics matter.
    qkv = torch.randn(B, T, 3 * H * D, generator=g) * 2 + torch.randn(3 * H * D, generator=g)
    params = [torch.randn(D, generator=g) * 0.5 + (1 if i % 2 == 0 else 0) for i in range(4)]
    cos = sin = None
    if rope:
        rows = max(1, int(T**0.5))
        pos = grid_positions(rows, -(-T // rows), 1, device=None)[:T]
        cos, sin = RotaryEmbedding2D(100.0).tables(pos, D, torch.float32)
        cos, sin = cos.to(DEVICE), sin.to(DEVICE)
    return qkv.to(dtype).to(DEVICE), [p.to(DEVICE) for p in params], cos, sin


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _check_matches_reference(B, T, H, D, in_dtype, out_dtype, rope):
    kernels = importlib.import_module("recon.attention.qknorm_rope.triton_kernels")
    qkv, params, cos, sin = _inputs(B, T, H, D, in_dtype, seed=T * 7 + D, rope=rope)
    got = kernels.qk_norm_rope_triton(qkv, H, *params, cos, sin, 1e-5, out_dtype)
    ref = qk_norm_rope_torch(qkv, H, *params, cos, sin, 1e-5, out_dtype)
    for name, g, r in zip("qkv", got, ref):
        assert g.shape == (B, H, T, D) and g.dtype == out_dtype and g.is_contiguous(), name
        assert torch.isfinite(g).all(), name
        # fp32 out: same fp32 arithmetic, different summation order. bf16 out: both round the
        # same fp32 values, so at most one bf16 step (2^-8 relative) apart, on some entries.
        tol = 1e-6 if out_dtype == torch.float32 else 8e-3
        err = _rel(g, r)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:g}"
    if rope and T > 1:  # the rotation is really applied (a lone special token sits at (0, 0)): differs from normalisation alone
        plain = qk_norm_rope_torch(qkv, H, *params, None, None, 1e-5, out_dtype)
        assert _rel(plain[0], ref[0]) > 1e-2


def _tables_3d(rows, cols, time, D):
    pos = frame_positions(rows, cols, 5, time, device=None)  # 5 special tokens at (0, 0, 0)
    t = RotaryEmbedding3D(100.0).tables(pos, D, torch.float32)
    return t.cos.to(DEVICE), t.sin.to(DEVICE), t.index.to(DEVICE)


def _check_matches_reference_3d(rows, cols, H, D, in_dtype, out_dtype):
    kernels = importlib.import_module("recon.attention.qknorm_rope.triton_kernels")
    cos, sin, index = _tables_3d(rows, cols, 6, D)
    T = cos.shape[0]
    qkv, params, _, _ = _inputs(1, T, H, D, in_dtype, seed=T + D, rope=False)
    got = kernels.qk_norm_rope_triton(qkv, H, *params, cos, sin, 1e-5, out_dtype, index=index)
    ref = qk_norm_rope_torch(qkv, H, *params, cos, sin, 1e-5, out_dtype, index=index)
    tol = 1e-6 if out_dtype == torch.float32 else 8e-3
    for name, g, r in zip("qkv", got, ref):
        assert g.shape == (1, H, T, D) and g.dtype == out_dtype and torch.isfinite(g).all(), name
        assert _rel(g, r) <= tol, f"{name}: relative error {_rel(g, r):.2e} > {tol:g}"
    two_d = qk_norm_rope_torch(qkv, H, *params, cos, sin, 1e-5, out_dtype)  # the other pairing differs
    assert _rel(two_d[0], ref[0]) > 1e-2


def _check_every_output_written():
    kernels = importlib.import_module("recon.attention.qknorm_rope.triton_kernels")
    qkv, params, cos, sin = _inputs(1, 45, 2, 32, torch.float32, seed=1)
    ref = qk_norm_rope_torch(qkv, 2, *params, cos, sin, 1e-5, torch.float32)
    for poison in (float("nan"), 1e30):
        out = tuple(torch.full(r.shape, poison, device=r.device) for r in ref)
        got = kernels.qk_norm_rope_triton(qkv, 2, *params, cos, sin, 1e-5, torch.float32, out=out)
        assert all(g is o for g, o in zip(got, out))
        assert all(torch.isfinite(t).all() and _rel(t, r) < 1e-6 for t, r in zip(got, ref))


def _check_dispatcher_forces_the_kernel():
    qkv, params, cos, sin = _inputs(2, 20, 2, 16, torch.float32, seed=3)
    got = qk_norm_rope(qkv, 2, *params, cos, sin, 1e-5, torch.float32, backend="triton")
    ref = qk_norm_rope(qkv, 2, *params, cos, sin, 1e-5, torch.float32, backend="torch")
    assert max(_rel(g, r) for g, r in zip(got, ref)) < 1e-6


@pytest.mark.parametrize(
    "B, T, H, D, in_dtype, out_dtype, rope",
    [
        (1, 37, 2, 64, torch.float32, torch.float32, True),  # T not a multiple of the block
        (2, 5, 3, 16, torch.float32, torch.float32, True),
        (1, 33, 2, 64, torch.float32, torch.float32, False),  # QK-norm only
        (1, 40, 1, 128, torch.bfloat16, torch.float32, True),  # bf16 in, fp32 out: exact math
        (1, 70, 2, 64, torch.bfloat16, torch.bfloat16, True),  # the inference case
        (1, 1, 1, 64, torch.float32, torch.float32, True),  # a single token
    ],
)
def test_kernel_matches_reference(kernel_check, B, T, H, D, in_dtype, out_dtype, rope):
    kernel_check("_check_matches_reference", B, T, H, D, in_dtype, out_dtype, rope)


@pytest.mark.parametrize("rows, cols, H, D, in_dtype, out_dtype", [
    (3, 5, 2, 64, torch.float32, torch.float32),  # D = 64: parts of 21, 21, 22 features (odd leftovers pass)
    (2, 4, 1, 32, torch.float32, torch.float32),
    (4, 6, 2, 64, torch.bfloat16, torch.bfloat16),  # the inference case
])  # fmt: skip
def test_kernel_matches_reference_with_3d_rope_pairing(kernel_check, rows, cols, H, D, in_dtype, out_dtype):
    kernel_check("_check_matches_reference_3d", rows, cols, H, D, in_dtype, out_dtype)


def test_reference_with_3d_pairing_is_local_attentions_rotation():
    """The index form of the reference is exactly LocalAttention's unfused QK-norm + 3D RoPE."""
    from recon.attention import LocalAttention

    torch.manual_seed(0)
    attn = LocalAttention(64 * 2, 2).eval()
    for norm in (attn.q_norm, attn.k_norm):
        torch.nn.init.normal_(norm.weight, 1.0, 0.3), torch.nn.init.normal_(norm.bias, 0.0, 0.3)
    pos = frame_positions(3, 4, 5, 7, device=None)
    tables = RotaryEmbedding3D(100.0).tables(pos, 64, torch.float32)
    x = torch.randn(1, pos.shape[0], 128)
    with torch.no_grad():
        q, k, v = attn.project(x, tables)
        ref = qk_norm_rope_torch(attn.qkv(x), 2, attn.q_norm.weight, attn.q_norm.bias, attn.k_norm.weight,
                                 attn.k_norm.bias, tables.cos, tables.sin, 1e-5, torch.float32, index=tables.index)  # fmt: skip
        plain_q = attn.q_norm(attn.qkv(x).reshape(1, -1, 3, 2, 64).permute(2, 0, 3, 1, 4)[0])
    for g, r in zip((q, k, v), ref):
        assert _rel(g, r) < 1e-6
    assert _rel(tables.apply(plain_q), q) < 1e-6


def test_kernel_writes_every_output(kernel_check):
    kernel_check("_check_every_output_written")


def test_dispatcher_forces_the_kernel(kernel_check):
    kernel_check("_check_dispatcher_forces_the_kernel")


def test_auto_uses_torch_on_cpu_tensors():
    qkv, params, cos, sin = _inputs(1, 10, 2, 16, torch.float32, seed=4)
    if qkv.is_cuda:
        pytest.skip("CPU dispatch only")
    got = qk_norm_rope(qkv, 2, *params, cos, sin, 1e-5, torch.float32)
    ref = qk_norm_rope_torch(qkv, 2, *params, cos, sin, 1e-5, torch.float32)
    assert all(torch.equal(g, r) for g, r in zip(got, ref))


def test_unknown_backend_is_an_error():
    qkv, params, cos, sin = _inputs(1, 4, 1, 16, torch.float32, seed=5)
    with pytest.raises(ValueError, match="unknown qk_norm_rope backend"):
        qk_norm_rope(qkv, 1, *params, cos, sin, backend="cuda")
