"""The `linear` memory strategy: streaming equals the causal batch forward, in constant memory."""

import pytest
import torch

from recon import memory
from recon.config import get_preset
from recon.model import GeometryTransformer, HorizonTransformer, build_model
from recon.session import Reconstructor
from tests.helpers import REDUCED, randomize_

# Window of 2 past frames, RoPE period 3: 7 frames fill the window and wrap the time index.
LINEAR = REDUCED.replace(name="reduced-linear", architecture="horizon", window_frames=2, pose_tokens=2,
                         rope_time_period=3, linear_layers=(1, 3), kda_head_dim=8, metric_hidden=(16,))  # fmt: skip
OUTPUTS = ("pose_enc", "depth", "depth_conf", "world_points", "metric_scale")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = randomize_(build_model(LINEAR), seed=1).eval()
    with torch.no_grad():
        m.camera_head.pose_branch.fc2.bias[7:] += 1.0  # else ReLU zeroes the field of view
    return m


@pytest.fixture(scope="module")
def images():
    return torch.rand(1, 7, 3, 42, 56, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def batch(model, images):
    with torch.no_grad():
        return model(images)


def _stream(model, images, chunks):
    state = memory.make_state("linear", model)
    outs, start, sizes = [], 0, []
    with torch.no_grad():
        for n in chunks:
            outs.append(model(images[:, start : start + n], state=state))
            start += n
            sizes.append(state.nbytes())
    return {k: torch.cat([o[k] for o in outs], dim=1) for k in OUTPUTS}, state, sizes


def _close(a, b, tol=1e-4):
    # Absolute 1e-4 on values of order one; world points and translations scale with depth.
    return ((a - b).abs() / b.abs().clamp(min=1)).max().item() <= tol


@pytest.mark.parametrize("chunks", [(1,) * 7, (2, 3, 2), (1, 6)])
def test_stream_equals_causal_batch(model, images, batch, chunks):
    streamed, state, _ = _stream(model, images, chunks)
    assert state.num_frames == 7
    for k in OUTPUTS:
        assert _close(streamed[k], batch[k]), f"{k}: max abs diff {(streamed[k] - batch[k]).abs().max():.3g}"


def test_memory_is_constant_after_the_window_fills(model, images):
    _, state, sizes = _stream(model, images, (1,) * 7)
    assert sizes[0] > 0 and len(set(sizes[LINEAR.window_frames :])) == 1
    assert state.recurrent.nbytes() > 0 and state.frame.nbytes() > 0 and state.temporal.nbytes() > 0
    parts = (state.frame, state.temporal, state.recurrent, state.clock, state.poses)
    assert state.nbytes() == sum(p.nbytes() for p in parts)


def test_batch_forward_is_causal(model, images, batch):
    with torch.no_grad():
        prefix = model(images[:, :4])
    for k in OUTPUTS:
        assert _close(prefix[k], batch[k][:, :4]), k
    first = batch["extrinsic"][0, 0]
    assert torch.allclose(first, torch.eye(3, 4), atol=1e-5)  # world = first camera
    assert (batch["metric_scale"] > 0).all() and batch["metric_scale"].std() > 1e-4


def test_reconstructor_streams_with_linear_memory(model, images, batch):
    rec = Reconstructor(model, memory="linear", device="cpu", width=56)
    frames = [(images[0, i].permute(1, 2, 0).numpy() * 255).round().astype("uint8") for i in range(4)]
    preds = [rec.step(f) for f in frames]
    with torch.no_grad():
        ref = model(torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])[None])
    for i, p in enumerate(preds):
        assert abs(p.depth - ref["depth"][0, i].numpy()).max() <= 1e-4
        assert abs(p.extrinsic - ref["extrinsic"][0, i].numpy()).max() <= 1e-4
    assert rec.memory_bytes() > 0
    rec.reset()
    assert rec.num_frames == 0 and rec.memory_bytes() == 0


def test_linear_strategy_needs_linear_layers():
    with pytest.raises(ValueError, match="model 'reduced' has none"):
        memory.make_state("linear", GeometryTransformer(REDUCED))


def test_horizon_model_rejects_other_states_and_bidirectional_mode(model, images):
    with pytest.raises(ValueError, match="memory strategy 'linear'"):
        model(images[:, :1], state=memory.make_state("full", model))
    with pytest.raises(ValueError, match="causal only"):
        model(images[:, :2], causal=False)


def test_presets():
    tiny_linear = get_preset("tiny-linear")
    assert isinstance(build_model(tiny_linear), HorizonTransformer)  # the architecture switch
    with torch.device("meta"):
        n = sum(p.numel() for p in build_model(tiny_linear).parameters())
        n_tiny = sum(p.numel() for p in build_model(get_preset("tiny")).parameters())
    assert 0.8 * n_tiny < n < 1.2 * n_tiny  # same size class as `tiny`
