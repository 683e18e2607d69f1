"""Rolling-cache redundancy scores: the Triton kernel against the plain-torch reference.

On CPU the `_check_*` functions run under the Triton interpreter in a worker process
(tests/kernel_worker.py: TRITON_INTERPRET=1 must be set before triton is first imported);
on a GPU in this process. Shapes stay small: the interpreter runs every program in numpy.
"""

import importlib
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import recon.attention
import recon.attention.rolling
from recon.attention import RollingKVCache, scoring
from recon.attention.scoring import redundancy_scores, redundancy_scores_torch
from tests.kernel_worker import DEVICE, ROOT, kernel_worker_fixture

# Scores are cosines in [-1, 1]: errors are absolute. The reference upcasts the very same
# bf16/fp16 values to fp32, so for every input dtype both sides compute in fp32 and differ
# only in summation order (measured: <= 2e-7); the bound leaves 50x headroom. (Against
# fp32 keys before the bf16 rounding the difference is ~6e-4: input rounding, not kernel.)
ATOL = 1e-5

kernel_check = kernel_worker_fixture(__name__)


def _kernels():
    module = importlib.import_module("recon.attention.scoring.triton_kernels")
    assert DEVICE == "cuda" or module.interpreted()
    return module


def _keys(B, H, N, D, dtype=torch.float32, seed=0, spread=0.7):
    """Random keys around a per-head direction, so the mean key is far from zero."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(B, H, N, D, generator=g) + spread * torch.randn(B, H, 1, D, generator=g)
    return keys.to(dtype).to(DEVICE)


def _assert_close(got, ref):
    err = (got.double() - ref.double()).abs().max().item()
    assert err <= ATOL, f"max abs error {err:.3g} > {ATOL:g}"  # the worker has no assertion rewriting


# -- kernel checks (run in the worker on the CPU) ----------------------------------------------


def _check_matches_reference(B, H, N, D, dtype, block_n, split):
    keys = _keys(B, H, N, D, dtype, seed=N + D)
    out = torch.full((B, H, N), float("nan"), device=DEVICE)  # poisoned: every entry must be written
    got = _kernels().redundancy_scores_triton(keys, out=out, block_n=block_n, split=split)
    assert got is out and got.dtype == torch.float32 and got.shape == (B, H, N)
    assert torch.isfinite(got).all()
    ref = redundancy_scores_torch(keys)
    _assert_close(got, ref)
    # And against float64 on the same (rounded) inputs: the kernel's own error.
    _assert_close(got, redundancy_scores_torch(keys.double()))
    if N > 1:
        assert ref.std() > 0.05  # spread scores: not a comparison of constants


def _check_dispatcher_forces_the_kernel():
    keys = _keys(1, 2, 90, 64, torch.bfloat16, seed=5)
    got = redundancy_scores(keys, backend="triton")
    _assert_close(got, redundancy_scores_torch(keys))
    assert torch.equal(got, _kernels().redundancy_scores_triton(keys))  # deterministic: no atomics


def _check_strided_views():
    kernels = _kernels()
    # What the cache passes: a slice of its [B, H, cap, D] buffer, read in place.
    buf = _keys(2, 4, 500, 64, torch.bfloat16, seed=1)
    before = buf.clone()
    view = buf[:, :, 37:411]
    assert not view.is_contiguous()
    _assert_close(kernels.redundancy_scores_triton(view), redundancy_scores_torch(view))
    assert torch.equal(buf, before)
    # A [B, N, H, D] tensor seen as [B, H, N, D], and a last dimension with a stride.
    keys = _keys(1, 40, 3, 64, seed=2).transpose(1, 2)
    _assert_close(kernels.redundancy_scores_triton(keys, block_n=16), redundancy_scores_torch(keys))
    keys = _keys(1, 2, 60, 128, seed=3)[..., ::2]
    assert keys.stride(-1) == 2
    _assert_close(kernels.redundancy_scores_triton(keys), redundancy_scores_torch(keys))


def _check_zero_keys_and_empty():
    kernels = _kernels()
    keys = _keys(1, 2, 40, 64, seed=4)
    keys[:, :, ::7] = 0  # F.normalize maps a zero vector to zero
    got = kernels.redundancy_scores_triton(keys)
    assert torch.equal(got[:, :, ::7], torch.zeros_like(got[:, :, ::7]))
    _assert_close(got, redundancy_scores_torch(keys))
    assert kernels.redundancy_scores_triton(torch.zeros(1, 2, 0, 64, device=DEVICE)).shape == (1, 2, 0)


def _check_evicted_set(dtype):
    # Clustered keys (near-duplicates, as in a static scene); a range of eviction sizes.
    B, H, N, D = 1, 4, 240, 64
    g = torch.Generator().manual_seed(11)
    centres = torch.randn(B, H, 6, D, generator=g)
    keys = centres.repeat_interleave(N // 6, dim=2) + 0.3 * torch.randn(B, H, N, D, generator=g)
    keys = keys.to(dtype).to(DEVICE)
    ref = redundancy_scores_torch(keys)
    got = _kernels().redundancy_scores_triton(keys)
    for n_evict in (1, 17, 120, N - 1):
        ref_top = ref.topk(n_evict, dim=-1)
        got_idx = got.topk(n_evict, dim=-1).indices
        threshold = ref_top.values[..., -1]  # the n_evict-th largest reference score
        for b in range(B):
            for h in range(H):
                differ = set(ref_top.indices[b, h].tolist()) ^ set(got_idx[b, h].tolist())
                for i in differ:  # only near-ties with the boundary may swap
                    assert abs(ref[b, h, i].item() - threshold[b, h].item()) <= 2 * ATOL, (n_evict, b, h, i)


def _check_rolling_cache():
    """Both call sites (rebalance and steady eviction), bf16 buffers read in place."""
    B, H, T, D, L = 1, 2, 24, 64, 2
    original = recon.attention.rolling.redundancy_scores

    def run(backend):
        recon.attention.rolling.redundancy_scores = lambda k: redundancy_scores(k, backend)
        try:
            cache = RollingKVCache(L, budget_tokens=L * 5 * T)
            g = torch.Generator().manual_seed(7)
            for _ in range(9):
                for layer in range(L):
                    k = torch.randn(B, H, T, D, generator=g).to(torch.bfloat16).to(DEVICE)
                    cache.update(layer, k, k + 1)
            return cache
        finally:
            recon.attention.rolling.redundancy_scores = original

    ref, got = run("torch"), run("triton")
    assert got.evicted == ref.evicted > 0
    for layer in range(L):
        cap = ref.capacity(layer)
        assert got.capacity(layer) == cap
        assert torch.equal(got._k[layer][:, :, :cap], ref._k[layer][:, :, :cap])


# -- the tests -------------------------------------------------------------------------------

CASES = [  # B, H, N, D, dtype, block_n, split
    (2, 3, 300, 64, torch.float32, None, None),
    (1, 2, 1, 64, torch.float32, None, None),  # a single token
    (1, 4, 77, 128, torch.bfloat16, None, None),  # N not a multiple of the block
    (2, 2, 130, 64, torch.bfloat16, 16, 3),  # 9 blocks: 3 programs of 4 blocks, the last partial
    (1, 2, 200, 128, torch.float32, 16, 5),
    (1, 3, 50, 48, torch.float16, None, None),  # D not a power of two
    (1, 1, 33, 64, torch.float32, 16, 64),  # more programs asked for than there are blocks
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(x).replace("torch.", "") for x in c))
def test_kernel_matches_reference(kernel_check, case):
    kernel_check("_check_matches_reference", *case)


def test_dispatcher_forces_the_kernel(kernel_check):
    kernel_check("_check_dispatcher_forces_the_kernel")


def test_strided_views_are_read_in_place(kernel_check):
    kernel_check("_check_strided_views")


def test_zero_keys_score_zero_like_the_reference(kernel_check):
    kernel_check("_check_zero_keys_and_empty")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_evicted_set_matches_reference(kernel_check, dtype):
    kernel_check("_check_evicted_set", dtype)


def test_rolling_cache_with_the_kernel_matches_torch(kernel_check):
    kernel_check("_check_rolling_cache")


# -- dispatch (no kernel needed) --------------------------------------------------------------


def test_one_reference_and_the_cache_uses_the_dispatcher():
    assert recon.attention.redundancy_scores is redundancy_scores_torch  # unchanged public name
    assert recon.attention.naive.redundancy_scores is redundancy_scores_torch
    assert recon.attention.rolling.redundancy_scores is redundancy_scores


def test_dispatch_on_cpu_tensors():
    keys = torch.randn(1, 2, 10, 8)
    assert torch.equal(redundancy_scores(keys), redundancy_scores_torch(keys))  # auto: torch on the CPU
    assert torch.equal(redundancy_scores(keys, backend="torch"), redundancy_scores_torch(keys))
    with pytest.raises(ValueError, match="unknown redundancy-score backend"):
        redundancy_scores(keys, backend="cuda")
    assert scoring.BACKENDS == ("auto", "triton", "torch")


def _run(code):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)


def test_works_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # import triton -> ImportError
        "import torch\n"
        "from recon.attention.scoring import redundancy_scores, triton_available\n"
        "keys = torch.randn(1, 2, 10, 8)\n"
        "assert not triton_available()\n"
        "redundancy_scores(keys)\n"
        "try:\n    redundancy_scores(keys, backend='triton')\n"
        "except RuntimeError as e:\n    print('raised', e)\n"
    )
    assert _run(code).stdout.startswith("raised redundancy-score backend 'triton' needs triton")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_cpu_tensors_without_the_interpreter_raise_clearly():
    code = (
        "import torch\n"
        "from recon.attention.scoring import redundancy_scores\n"
        "try:\n    redundancy_scores(torch.randn(1, 2, 10, 8), backend='triton')\n"
        "except RuntimeError as e:\n    print('raised', e)\n"
    )
    assert "TRITON_INTERPRET=1 set before triton is first imported" in _run(code).stdout
