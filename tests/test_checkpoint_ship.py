"""Shipping weights (fp16 shards + index), sharing tensors with a base, and partial initialisation."""

import json
import shutil
from pathlib import Path

import pytest
import torch

import recon.checkpoint as checkpoint
from recon.checkpoint import (CheckpointError, load_matching_weights, load_model, read_checkpoint, save_checkpoint,
                              ship_weights, shipped_weights)  # fmt: skip
from recon.config import get_preset
from recon.model import build_model

TINY = shipped_weights("tiny")


def _copy_tiny(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = [TINY, *TINY.parent.glob("tiny-0*.safetensors")]
    for f in files:
        shutil.copy(f, folder / f.name)
    return sorted(f.name for f in files)


def test_reshipping_tiny_reproduces_the_shipped_files(tmp_path):
    """The tool is how tiny was shipped: same files, same index, same shard contents (the
    shards' headers are not bytewise reproducible: safetensors writes metadata in hash order)."""
    written = ship_weights("tiny", tmp_path, "tiny")
    assert sorted(f.name for f in written) == _copy_tiny(tmp_path / "ref")
    assert (tmp_path / TINY.name).read_bytes() == TINY.read_bytes()
    for f in written:
        if f.suffix == ".safetensors":
            ours, _ = checkpoint._read_safetensors(f)
            ref, _ = checkpoint._read_safetensors(TINY.parent / f.name)
            assert ours.keys() == ref.keys() and all(torch.equal(v, ref[k]) for k, v in ours.items())
    assert not list(tmp_path.glob(".*")), "temporary file left behind"


@pytest.fixture(scope="module")
def derived(tmp_path_factory):
    """A tiny-linear model from tiny with its camera head's pose branch retrained, as a
    training run writes it (fp32), and a folder holding the shipped tiny weights."""
    root = tmp_path_factory.mktemp("ship")
    torch.manual_seed(0)
    model = build_model(get_preset("tiny-linear"))
    report = load_matching_weights(model, TINY)
    assert (len(report["loaded"]), len(report["new"])) == (319, 80)
    with torch.no_grad():
        for p in model.camera_head.pose_branch.parameters():
            p.add_(0.01)
    save_checkpoint(model, root / "trained.safetensors")
    _copy_tiny(root / "weights")
    return model, root


def _fp16(model) -> dict:
    return {k: v.half().float() for k, v in model.state_dict().items()}


def test_derived_weights_share_tensors_and_load_identically(derived, monkeypatch):
    model, root = derived
    weights = root / "weights"
    ship_weights(root / "trained.safetensors", weights, "tiny-linear", max_shard_mb=100)  # an earlier shipment
    assert (weights / "tiny-linear.safetensors").is_file()
    written = ship_weights(root / "trained.safetensors", weights, "tiny-linear", base="tiny")
    assert not (weights / "tiny-linear.safetensors").exists(), "stale single-file shipment left behind"
    spec = json.loads((weights / "tiny-linear.index.json").read_text())
    base_files = set(spec["base"]["sha256"])
    assert spec["base"]["name"] == "tiny" and base_files == {"tiny-00001-of-00002.safetensors",
                                                             "tiny-00002-of-00002.safetensors"}  # fmt: skip
    wmap = spec["weight_map"]
    assert wmap["aggregator.patch_embed.patch_embed.proj.weight"] in base_files
    assert wmap["camera_head.pose_branch.fc1.weight"] not in base_files  # retrained
    assert wmap["metric_head.0.weight"] not in base_files  # not in tiny
    own = sum(f.stat().st_size for f in written)
    alone = ship_weights(root / "trained.safetensors", root / "alone", "tiny-linear")
    assert own < sum(f.stat().st_size for f in alone) / 2

    expected = _fp16(model)
    for spec_ in (str(weights / "tiny-linear.index.json"), str(weights / "tiny-linear.safetensors")):
        loaded, _ = load_model(spec_)
        assert loaded.config.name == "tiny-linear"
        assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", weights)  # as if shipped inside the package
    loaded, where = load_model("tiny-linear")
    assert where == weights / "tiny-linear.index.json"
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())


def _one_line(excinfo, path: Path) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_changed_or_missing_base_shard_is_refused(derived, tmp_path):
    _, root = derived
    weights = tmp_path / "weights"
    shutil.copytree(root / "weights", weights)
    ship_weights(root / "trained.safetensors", weights, "tiny-linear", base="tiny")
    index = weights / "tiny-linear.index.json"
    shard = weights / "tiny-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # one bit of one tensor: still a valid safetensors file, a retrained base
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        load_model(str(index))
    assert "sha256" in _one_line(e, shard)
    load_model(str(shard.parent / "tiny.index.json"))  # the base itself still loads
    (weights / "tiny-00001-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(index)
    assert "missing" in _one_line(e, weights / "tiny-00001-of-00002.safetensors")


def test_base_must_sit_next_to_the_derived_weights(derived, tmp_path):
    _, root = derived
    with pytest.raises(CheckpointError, match="no shipped weights 'tiny'"):
        ship_weights(root / "trained.safetensors", tmp_path, "tiny-linear", base="tiny")
    with pytest.raises(ValueError, match="themselves"):
        ship_weights("tiny", root / "weights", "tiny", base="tiny")


def test_init_is_strict_for_the_same_preset(tmp_path):
    model = build_model(get_preset("tiny"))
    state, _ = read_checkpoint(TINY)
    del state["camera_head.embed_pose.weight"]
    from safetensors.torch import save_file

    path = tmp_path / "tiny_missing.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path),
              metadata={"format": "streamrecon", "config": json.dumps(model.config.to_dict())})  # fmt: skip
    with pytest.raises(CheckpointError, match="missing keys"):
        load_matching_weights(model, path)
    report = load_matching_weights(build_model(get_preset("tiny-linear")), path)  # another preset: partial
    assert len(report["loaded"]) == 318 and "camera_head.embed_pose.weight" in report["new"]
