"""The CUDA fast path (bf16 heads, CUDA-graph replay) against the plain path, same weights.

Needs a CUDA GPU (skipped elsewhere); run on one with
    python -m pytest -q tests/test_fastpath_gpu.py
Results are recorded in docs/PERFORMANCE.md ("Fast path accuracy").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.checkpoint import load_model
from recon.session import Reconstructor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FIELDS = ("extrinsic", "depth", "depth_conf", "world_points")


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    from recon.datasets.synthetic import SyntheticSequence

    seq = SyntheticSequence(seed=seed, num_frames=n, height=224, width=224)
    return [seq[i].image for i in range(n)]


def _stream(rec: Reconstructor, frames) -> list:
    return [rec.step(f) for f in frames]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def _assert_replay_equals_eager(model, tol: float, **opts) -> None:
    """Stream 24 frames eagerly and with CUDA-graph replay; the outputs must agree to `tol`."""
    frames = _frames(24)
    eager = _stream(Reconstructor(model, fast=False, device="cuda", **opts), frames)
    rec = Reconstructor(model, fast=True, device="cuda", **opts)
    graphed = _stream(rec, frames)
    assert rec._graphed.replays >= 10, "the stream never became steady: nothing was replayed"
    assert rec.state.num_frames == len(frames)
    for a, b in zip(graphed, eager):
        for name in FIELDS:
            assert _rel(getattr(a, name), getattr(b, name)) < tol, name


def test_graph_replay_equals_eager_rolling() -> None:
    """Same precision, same weights: a replayed CUDA graph computes what the eager step does."""
    model, _ = load_model("tiny", device="cuda")
    _assert_replay_equals_eager(model, 1e-5, memory="rolling", budget_frames=4, camera_budget_frames=4)


def test_graph_replay_equals_eager_linear() -> None:
    """The horizon model: its device core is replayed, its pose fusion runs after each replay."""
    from recon.config import get_preset
    from recon.model import build_model

    torch.manual_seed(0)
    _assert_replay_equals_eager(build_model(get_preset("tiny-linear")).eval(), 1e-4)


def test_piecewise_graphs_equal_eager_full() -> None:
    """A growing cache: graphs between the cached attentions, replayed over two streams (the
    second reuses the first stream's captures with its own caches)."""
    model, _ = load_model("tiny", device="cuda")
    streams = [_frames(12, seed=0), _frames(12, seed=1)]
    eager_rec = Reconstructor(model, memory="full", fast=False, device="cuda")
    rec = Reconstructor(model, memory="full", fast=True, device="cuda", reserve_frames=12)
    for frames in streams:
        eager_rec.reset()
        rec.reset()
        eager = _stream(eager_rec, frames)
        graphed = _stream(rec, frames)
        assert rec.state.num_frames == len(frames) and rec.state.temporal.num_tokens(0) == eager_rec.state.temporal.num_tokens(0)
        for a, b in zip(graphed, eager):
            for name in FIELDS:
                assert _rel(getattr(a, name), getattr(b, name)) < 1e-5, name
    piecewise = rec._graphed.piecewise
    assert len(piecewise.steps) == 2  # a stream's first frame, and every later one
    assert piecewise.replays == 2 * 12 - 3  # all but: the first eager step, two captures
    pieces = next(iter(piecewise.steps.values())).pieces
    assert len(pieces) == model.config.depth + model.camera_head.num_cache_slots + 1


def test_piecewise_then_whole_graph_rolling() -> None:
    """A rolling cache fills piecewise, then its steady steps replay as one graph."""
    model, _ = load_model("tiny", device="cuda")
    _assert_replay_equals_eager(model, 1e-5, memory="rolling", budget_frames=6, camera_budget_frames=6)


def test_bf16_matches_fp32() -> None:
    """bf16 end to end (heads included) against the fp32 path: relative error per output."""
    model, _ = load_model("tiny", device="cuda")
    frames = _frames(12)
    ref = _stream(Reconstructor(model, memory="full", precision="fp32", fast=False, device="cuda"), frames)
    out = _stream(Reconstructor(model, memory="full", precision="bf16", device="cuda"), frames)
    errors = {name: max(_rel(getattr(a, name), getattr(b, name)) for a, b in zip(out, ref)) for name in FIELDS}
    print("bf16 vs fp32, worst frame relative error:", {k: f"{v:.2e}" for k, v in errors.items()})
    # bf16 keeps 8 bits of mantissa (relative step 2^-8 = 3.9e-3); errors compound over
    # 5 + 5 attention levels and the DPT head, so allow a few steps.
    assert errors["depth"] < 3e-2 and errors["world_points"] < 3e-2
    assert errors["extrinsic"] < 3e-2
