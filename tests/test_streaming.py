"""Streaming frame by frame must equal the block-causal batch forward."""

import pytest
import torch

from recon.attention import block_causal_mask, naive_softmax_attention
from recon.model import GeometryTransformer
from recon.session import Reconstructor
from tests.helpers import REDUCED, randomize_

OUTPUTS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_(GeometryTransformer(REDUCED), seed=1).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(1, 5, 3, 42, 70, generator=torch.Generator().manual_seed(2))


def _stream(model, images, chunks):
    state = model.init_state()
    outs, start = [], 0
    for n in chunks:
        outs.append(model(images[:, start : start + n], state=state))
        start += n
    return {k: torch.cat([o[k] for o in outs], dim=1) for k in OUTPUTS}, state


@torch.no_grad()
@pytest.mark.parametrize("chunks", [(1, 1, 1, 1, 1), (2, 3), (1, 4)])
def test_stream_equals_causal_batch(model, images, chunks):
    batch = model(images, causal=True)
    streamed, state = _stream(model, images, chunks)
    assert state.num_frames == 5
    for k in OUTPUTS:
        diff = (streamed[k] - batch[k]).abs().max().item()
        assert diff <= 1e-4, f"{k}: max abs diff {diff}"


@torch.no_grad()
def test_causal_differs_from_bidirectional_except_nothing_leaks_backwards(model, images):
    causal = model(images, causal=True)
    bidir = model(images, causal=False)
    # Later frames change what earlier frames see only in the bidirectional model.
    assert (causal["depth"] - bidir["depth"]).abs().max() > 1e-3
    prefix = model(images[:, :2], causal=True)
    assert torch.allclose(prefix["depth"], causal["depth"][:, :2], atol=1e-5)
    assert torch.allclose(prefix["pose_enc"], causal["pose_enc"][:, :2], atol=1e-5)


@torch.no_grad()
def test_first_frame_is_world_origin_token_variant(model, images):
    # The second stream frame must use the "later frame" tokens: streaming frame 1 alone
    # from a fresh state (where it becomes frame 0) gives a different result.
    streamed, _ = _stream(model, images, (1, 1))
    fresh = model(images[:, 1:2], state=model.init_state())
    assert (streamed["pose_enc"][:, 1] - fresh["pose_enc"][:, 0]).abs().max() > 1e-4


@torch.no_grad()
def test_reconstructor_step_matches_batch(model, images):
    rec = Reconstructor(model, memory="full", device="cpu", width=70)
    frames = [(images[0, i].permute(1, 2, 0).numpy() * 255).round().astype("uint8") for i in range(3)]
    preds = [rec.step(f, timestamp=float(i)) for i, f in enumerate(frames)]
    batch_in = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])[None]
    batch = model(batch_in, causal=True)
    for i, p in enumerate(preds):
        assert p.index == i and p.timestamp == float(i)
        assert p.depth.shape == (42, 70) and p.world_points.shape == (42, 70, 3)
        assert abs(p.depth - batch["depth"][0, i].numpy()).max() <= 1e-4
        assert abs(p.extrinsic - batch["extrinsic"][0, i].numpy()).max() <= 1e-4
    assert rec.memory_bytes() > 0
    rec.reset()
    assert rec.num_frames == 0 and rec.memory_bytes() == 0


def test_sdpa_masked_attention_matches_naive_reference():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 12, 16, generator=g) for _ in range(3))
    mask = block_causal_mask(3, 4)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(fused, naive_softmax_attention(q, k, v, mask), atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("memory,options", [("full", {"reserve_frames": 4}), ("rolling", {"budget_frames": 3})])
def test_reset_stream_equals_a_fresh_session(model, images, memory, options):
    """`reset()` forgets the stream in place: the next stream predicts what a new session does,
    and a reserved `full` cache serves it from the same buffers (no allocation at its frame 0)."""
    frames = [(images[0, i].permute(1, 2, 0).numpy() * 255).round().astype("uint8") for i in range(3)]
    rec = Reconstructor(model, memory=memory, device="cpu", width=70, **options)
    for f in frames[::-1]:
        rec.step(f)
    buffer = rec.state.temporal._k[0].data_ptr()
    rec.reset()
    again = [rec.step(f) for f in frames]
    fresh_rec = Reconstructor(model, memory=memory, device="cpu", width=70, **options)
    fresh = [fresh_rec.step(f) for f in frames]
    for a, b in zip(again, fresh):
        assert a.index == b.index and abs(a.depth - b.depth).max() <= 1e-5
        assert abs(a.extrinsic - b.extrinsic).max() <= 1e-5
    if memory == "full":
        assert rec.state.temporal._k[0].data_ptr() == buffer
