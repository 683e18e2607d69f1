"""Bounded strategies stream 2,000 frames of the tiny presets within their configured bound.

Counts the tensor bytes held by the stream's caches and states after every frame (no
timing). Frames are 28x28 so the test stays cheap; memory per token does not depend on it.
"""

import torch

from recon.config import get_preset
from recon.memory import make_state
from recon.model import build_model

FRAMES = 2000


def _frames(n: int):
    base = torch.rand(1, 1, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    for i in range(n):
        yield torch.roll(base, shifts=i % 28, dims=-1)  # a panning camera


@torch.no_grad()
def test_rolling_stays_within_budget_for_2000_frames():
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).eval()
    budget_mb, camera_frames = 0.25, 32
    state = make_state("rolling", model, budget_mb=budget_mb, camera_budget_frames=camera_frames)
    camera_bound = camera_frames * model.camera_head.num_cache_slots * 2 * (2 * model.config.embed_dim) * 4
    bound = budget_mb * 2**20 + camera_bound  # k and v in fp32
    filled_at = None
    for i, frame in enumerate(_frames(FRAMES)):
        model(frame, state=state)
        if filled_at is None and state.temporal.evicted > 0:
            filled_at = i
        if filled_at is not None:
            assert state.nbytes() <= bound, f"frame {i}: {state.nbytes()} > {bound}"
    assert filled_at is not None and filled_at < 200
    assert state.num_frames == FRAMES


@torch.no_grad()
def test_linear_state_is_constant_for_2000_frames():
    torch.manual_seed(0)
    model = build_model(get_preset("tiny-linear")).eval()
    state = make_state("linear", model)
    window = model.config.window_frames
    bound = None
    for i, frame in enumerate(_frames(FRAMES)):
        model(frame, state=state)
        if i == window:  # the sliding windows are full from here on
            bound = state.nbytes()
        if bound is not None:
            assert state.nbytes() <= bound, f"frame {i}: {state.nbytes()} > {bound}"
    assert bound is not None and state.nbytes() == bound
    assert state.num_frames == FRAMES
