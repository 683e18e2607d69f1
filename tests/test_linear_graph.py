"""The `linear` strategy's steady step is CUDA-graph safe (checked on the CPU).

recon.fastpath captures `model.graph_core` once `state.steady()` and replays it for every
later frame, calling `state.count_replayed_step()` after each replay and running
`model.graph_finish` eagerly. `tests.graph_replay` emulates that on the CPU: it records
the core's aten ops (raising on host synchronisation) and replays them on the recorded
tensors with no Python, so host values baked into the step, replaced state objects or
counters a replay forgets all show up as differences from an eager stream.
"""

import pytest
import torch

from recon import memory
from recon.model import build_model
from tests.graph_replay import HostSyncError, StepRecorder
from tests.helpers import randomize_
from tests.test_linear_stream import LINEAR

FRAMES = 9  # window 2: steady from frame 2 on; RoPE period 3 wraps twice during the replays
OUTPUTS = ("pose_enc", "depth", "depth_conf", "world_points", "metric_scale", "window_pose_enc")


@pytest.fixture(scope="module")
def model():
    m = randomize_(build_model(LINEAR), seed=3).eval()
    with torch.no_grad():
        m.camera_head.pose_branch.fc2.bias[7:] += 1.0
    return m


@pytest.fixture(scope="module")
def images():
    return torch.rand(1, FRAMES, 3, 42, 56, generator=torch.Generator().manual_seed(4))


def _state_tensors(state) -> dict[str, torch.Tensor]:
    out = {"clock": state.clock.frames}
    for name in ("frame", "temporal"):
        cache = getattr(state, name)
        out.update({f"{name}.k{i}": t for i, t in enumerate(cache._k)})
        out.update({f"{name}.v{i}": t for i, t in enumerate(cache._v)})
    for i, layer in state.recurrent.layers.items():
        out[f"kda{i}"] = layer.recurrent
        out.update({f"kda{i}.conv{j}": t for j, t in enumerate(layer.conv)})
    return out


def _counters(state) -> tuple:
    return (state.num_frames, tuple(state.frame._seen), tuple(state.temporal._seen), state.poses.seen,
            int(state.clock.frames))  # fmt: skip


@torch.inference_mode()
def test_replayed_core_equals_eager_stream(model, images):
    eager_state, graph_state = memory.make_state("linear", model), memory.make_state("linear", model)
    recorder = static_images = core = None
    replays = 0
    for n in range(FRAMES):
        frame = images[:, n : n + 1]
        expected = model(frame, state=eager_state)
        if not graph_state.steady():
            assert recorder is None  # steady stays steady
            got = model(frame, state=graph_state)
        elif recorder is None:  # capture (on the CPU the recorded step also computes)
            static_images = frame.clone()
            held = {k: t.data_ptr() for k, t in _state_tensors(graph_state).items()}
            with StepRecorder() as recorder:
                core = model.graph_core(static_images, graph_state)
            got = model.graph_finish(core, graph_state)
        else:
            static_images.copy_(frame)
            recorder.replay()
            graph_state.count_replayed_step()
            got = model.graph_finish(core, graph_state)
            replays += 1
        for k in OUTPUTS:
            assert torch.allclose(got[k], expected[k], atol=1e-5, rtol=1e-5), f"frame {n}: {k}"
        assert _counters(graph_state) == _counters(eager_state), f"frame {n}"
    assert replays == FRAMES - LINEAR.window_frames - 1
    mine, theirs = _state_tensors(graph_state), _state_tensors(eager_state)
    assert {k: t.data_ptr() for k, t in mine.items()} == held  # every update in place
    for k, t in mine.items():
        assert torch.allclose(t, theirs[k], atol=1e-5), k
    # After the replays the stream goes on eagerly (e.g. a capture is dropped) and still agrees.
    frame = images[:, :1]
    got, expected = model(frame, state=graph_state), model(frame, state=eager_state)
    assert torch.allclose(got["pose_enc"], expected["pose_enc"], atol=1e-5)
    assert _counters(graph_state) == _counters(eager_state)


@torch.inference_mode()
def test_steady_steps_make_identical_calls_without_host_syncs(model, images):
    state = memory.make_state("linear", model)
    for n in range(LINEAR.window_frames):
        model(images[:, n : n + 1], state=state)
    assert state.steady()
    signatures = []
    for n in range(LINEAR.window_frames, LINEAR.window_frames + 3):
        frame = images[:, n : n + 1].clone()
        with StepRecorder() as recorder:
            core = model.graph_core(frame, state)
        model.graph_finish(core, state)
        signatures.append(recorder.signature())
    assert signatures[0] == signatures[1] == signatures[2]  # same ops, shapes and host arguments


@torch.inference_mode()
def test_recorder_catches_host_syncs_and_frozen_values():
    x = torch.arange(4.0)
    for bad in (lambda: x.sum().item(), lambda: x[x > 1], lambda: x.tolist(), lambda: bool(x[0]),
                lambda: torch.tensor([1.0, 2.0]), lambda: x.nonzero()):  # fmt: skip
        with pytest.raises(HostSyncError), StepRecorder():
            bad()
    counter, host = torch.zeros(1), [0]
    with StepRecorder() as rec:  # a host value baked in, and an in-place device update
        out = counter + host[0]
        counter.add_(1)
    host[0] = 5
    rec.replay()
    assert out.item() == 1 and counter.item() == 2  # the replay read the device counter, not `host`
