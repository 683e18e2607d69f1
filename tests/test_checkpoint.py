"""Checkpoint format, VGGT-1B interop and the one-line errors for wrong files."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from recon.checkpoint import CheckpointError, load_model, save_checkpoint
from recon.config import get_preset
from recon.model import GeometryTransformer
from tests.helpers import REDUCED, randomize_

LAYOUT = Path(__file__).parent / "fixtures" / "vggt1b_layout.json"
VGGT_1B_PARAMS = 1_256_537_516  # public VGGT-1B / StreamVGGT checkpoints


@pytest.fixture(scope="module")
def reduced_model():
    return randomize_(GeometryTransformer(REDUCED), seed=5).eval()


def _one_line_error(excinfo, path) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_own_format_round_trip(tmp_path, reduced_model):
    path = tmp_path / "model.safetensors"
    save_checkpoint(reduced_model, path)
    assert not list(tmp_path.glob(".*")), "temporary file left behind"
    loaded, where = load_model(str(path))
    assert where == path and loaded.config == reduced_model.config
    images = torch.rand(1, 2, 3, 42, 70)
    with torch.no_grad():
        a, b = reduced_model(images), loaded(images)
    assert torch.equal(a["depth"], b["depth"]) and torch.equal(a["pose_enc"], b["pose_enc"])


def test_vggt1b_layout_loads_strictly(tmp_path):
    layout = json.loads(LAYOUT.read_text())
    assert len(layout) == 1797
    g = torch.Generator().manual_seed(0)
    # fp16 halves the file; the loader casts to the model's fp32.
    state = {k: torch.randn(shape, generator=g, dtype=torch.float32).half() for k, shape in layout}
    path = tmp_path / "model.pt"
    torch.save(state, path)
    del state
    model, _ = load_model(str(path), preset="vggt-1b")
    assert sum(p.numel() for p in model.parameters()) == VGGT_1B_PARAMS
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert model.config.name == "vggt-1b"
    # Same layout, StreamVGGT's streaming behaviour.
    assert get_preset("streamvggt").camera_cache_layout == "shared"


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_model(str(tmp_path / "nope.pt"))
    assert "not found" in _one_line_error(e, tmp_path / "nope.pt")


def test_not_a_checkpoint(tmp_path):
    for name in ("notes.pt", "notes.safetensors"):
        path = tmp_path / name
        path.write_text("these are not weights\n" * 10)
        with pytest.raises(CheckpointError) as e:
            load_model(str(path))
        _one_line_error(e, path)


def test_truncated_files(tmp_path, reduced_model):
    st = tmp_path / "cut.safetensors"
    save_checkpoint(reduced_model, st)
    pt = tmp_path / "cut.pt"
    torch.save(reduced_model.state_dict(), pt)
    for path in (st, pt):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError) as e:
            load_model(str(path), preset="vggt-1b")
        _one_line_error(e, path)


def test_pickled_code_is_refused(tmp_path):
    for legacy in (False, True):
        path = tmp_path / f"evil_{legacy}.pt"
        # A pickled non-tensor global: weights_only loading must refuse to build it.
        torch.save({"w": torch.zeros(1), "obj": Path("x")}, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(CheckpointError) as e:
            load_model(str(path))
        assert "weights-only" in _one_line_error(e, path)


def test_legacy_pt_format_loads(tmp_path, reduced_model):
    path = tmp_path / "legacy.pt"
    torch.save({"model": reduced_model.state_dict()}, path, _use_new_zipfile_serialization=False)
    from recon.checkpoint import load_weights

    model = GeometryTransformer(REDUCED)
    load_weights(model, path)
    assert torch.equal(model.state_dict()["camera_head.embed_pose.weight"],
                       reduced_model.state_dict()["camera_head.embed_pose.weight"])


def test_other_architecture_names_first_mismatching_keys(tmp_path, reduced_model):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(3), "decoder.bias": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError) as e:
        load_model(str(path), preset="tiny")
    msg = _one_line_error(e, path)
    assert "missing keys" in msg and "unexpected keys" in msg and "encoder.layer.0.weight" in msg


def test_shape_mismatch_names_the_key(tmp_path, reduced_model):
    state = {k: v.clone() for k, v in reduced_model.state_dict().items()}
    state["camera_head.embed_pose.weight"] = torch.zeros(5, 5)
    path = tmp_path / "shapes.safetensors"
    save_file(state, str(path), metadata={"format": "streamrecon", "config": json.dumps(REDUCED.to_dict())})
    with pytest.raises(CheckpointError) as e:
        load_model(str(path))
    msg = _one_line_error(e, path)
    assert "camera_head.embed_pose.weight" in msg and "shape" in msg


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown model preset"):
        load_model("vggt-7b")


def test_sharded_fp16_checkpoint_round_trip(tmp_path, reduced_model):
    files = save_checkpoint(reduced_model, tmp_path / "m.safetensors", dtype=torch.float16, max_shard_bytes=1_000_000)
    shards = [f for f in files if f.suffix == ".safetensors"]
    assert len(shards) >= 2 and all(f.stat().st_size <= 1_100_000 for f in shards)
    assert files[-1].name == "m.index.json"
    model, _ = load_model(str(tmp_path / "m.safetensors"))  # resolves to the index
    ref = reduced_model.state_dict()
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.allclose(v, ref[k].half().float()), k
    (shards[0]).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_model(str(files[-1]))
