"""Graph breaks (recon.attention.graph_break): every cached attention of a streaming step is
routed through one, so a piecewise CUDA-graph capture (recon.fastpath) can cut there."""

from __future__ import annotations

import torch

from recon.attention import FullKVCache
from recon.attention.cache import _LayerSlot
from recon.attention.graph_break import graph_break, set_recorder
from recon.config import get_preset
from recon.model import build_model


class _Counting:
    def __init__(self, state) -> None:
        self.state, self.slots = state, []

    def split(self, fn, args):
        self.slots += [a for a in args if isinstance(a, _LayerSlot)]
        return fn(*args)


def test_without_a_recorder_graph_break_is_a_call() -> None:
    assert graph_break(lambda a, b: a + b, torch.ones(2), torch.ones(2)).tolist() == [2.0, 2.0]


def test_every_cached_attention_of_a_step_is_a_graph_break() -> None:
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).eval()
    images = torch.rand(1, 1, 3, 56, 56)
    plain_state, state = model.init_state(), model.init_state()
    with torch.no_grad():
        for _ in range(2):
            expected = model(images, state=plain_state)
            recorder = _Counting(state)
            previous = set_recorder(recorder)
            try:
                out = model(images, state=state)
            finally:
                set_recorder(previous)
            # one break per temporal layer and per camera-head cache slot, each on this stream's caches
            caches = [s.cache for s in recorder.slots]
            assert caches.count(state.temporal) == model.config.depth
            assert caches.count(state.camera) == model.camera_head.num_cache_slots
            assert sorted(s.index for s in recorder.slots if s.cache is state.temporal) == list(range(model.config.depth))
            torch.testing.assert_close(out["depth"], expected["depth"])
    assert isinstance(state.temporal, FullKVCache) and state.temporal.num_tokens(0) == plain_state.temporal.num_tokens(0)


def test_piecewise_graphs_serve_vggt_family_stream_states_only() -> None:
    from recon.fastpath import PiecewiseGraphs

    torch.manual_seed(0)
    tiny = build_model(get_preset("tiny")).eval()
    assert PiecewiseGraphs(tiny).supports(tiny.init_state())  # full
    from recon.memory import make_state

    assert PiecewiseGraphs(tiny).supports(make_state("rolling", tiny))
    horizon = build_model(get_preset("tiny-linear")).eval()  # host-side pose fusion: not piecewise
    assert not PiecewiseGraphs(horizon).supports(horizon.init_state())
