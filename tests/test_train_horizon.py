"""Training tiny-linear from the shipped tiny weights with frozen prefixes, and shipping the result
next to tiny with shared tensors."""

import contextlib
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recon.checkpoint import load_model, read_checkpoint, shipped_weights
from recon.config import get_preset
from recon.model import build_model
from recon.train import freeze, main

ROOT = Path(__file__).resolve().parents[1]
FREEZE = "patch_embed,frame_blocks,depth_head,camera_head.trunk"
ARGS = ["--preset", "tiny-linear", "--init", "tiny", "--height", "56", "--width", "56",
        "--frames-per-step", "6", "--min-frames", "3", "--max-frames", "3", "--steps", "2", "--log-every", "1",
        "--save-every", "2", "--device", "cpu", "--lr", "1e-3", "--warmup", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two steps, 2 clips x 3 frames of 56 x 56 px; returns (out folder, stdout)."""
    out = tmp_path_factory.mktemp("tiny_linear") / "run"
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert main([*ARGS, "--freeze", FREEZE, "--out", str(out)]) == 0
    return out, text.getvalue()


def test_init_from_tiny_loads_the_shared_tensors(run):
    _, text = run
    assert "319 tensors loaded, 80 new" in text
    assert "frozen: 226 parameters" in text


def test_frozen_parameters_stay_and_the_others_train(run):
    out, _ = run
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("loss", "camera", "depth", "scale"))
    trained, config = read_checkpoint(out / "model.safetensors")
    assert config.name == "tiny-linear"
    tiny, _ = read_checkpoint(shipped_weights("tiny"))
    torch.manual_seed(0)  # the trainer's seed: the same fresh initialisation of the new tensors
    model = build_model(get_preset("tiny-linear"))
    frozen = freeze(model, FREEZE)
    fresh = model.state_dict()
    assert len(frozen) == 226 and all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    for k, v in trained.items():
        before = tiny[k].float() if k in tiny and tiny[k].shape == v.shape else fresh[k]
        if k in frozen:
            assert torch.equal(v, before), f"frozen {k} changed"
        else:
            assert not torch.equal(v, before), f"trainable {k} did not change"


def test_resume_needs_the_same_freeze(run, tmp_path):
    out, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    with pytest.raises(SystemExit, match="same"):
        main([*ARGS, "--steps", "3", "--out", str(copy)])  # no --freeze


def test_freeze_rejects_unknown_prefixes():
    with pytest.raises(SystemExit, match="camera_head.trunks"):
        freeze(build_model(get_preset("tiny-linear")), "patch_embed,camera_head.trunks")


def test_derived_shipment_shares_the_frozen_tensors_with_tiny(run, tmp_path):
    out, _ = run
    weights = tmp_path / "weights"
    weights.mkdir()
    index = shipped_weights("tiny")
    for f in (index, *index.parent.glob("tiny-0*.safetensors")):
        shutil.copy(f, weights / f.name)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tool = [sys.executable, str(ROOT / "tools" / "ship_weights.py"), str(out / "model.safetensors")]
    full = subprocess.run([*tool, str(tmp_path / "full"), "--name", "tiny-linear"],
                          check=True, capture_output=True, text=True, env=env)  # fmt: skip
    derived = subprocess.run([*tool, str(weights), "--name", "tiny-linear", "--base", "tiny"],
                             check=True, capture_output=True, text=True, env=env)  # fmt: skip
    full_bytes = sum(f.stat().st_size for f in (tmp_path / "full").iterdir())
    derived_bytes = sum(f.stat().st_size for f in weights.glob("tiny-linear*"))
    print(f"\ntiny-linear fp16 shipment, frozen {FREEZE}: {derived_bytes:,d} bytes with --base tiny, "
          f"{full_bytes:,d} bytes alone\n{derived.stdout}")  # fmt: skip
    assert derived_bytes < full_bytes and "bytes in" in full.stdout
    a, _ = load_model(str(weights / "tiny-linear.index.json"))
    b, _ = load_model(str(tmp_path / "full" / "tiny-linear.index.json"))
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sb)


def test_ddp_with_frozen_prefixes(tmp_path):
    """Frozen parameters are not DDP's concern; every trainable one gets a gradient."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "recon.train", *ARGS, "--freeze", FREEZE, "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sums = json.loads((out / "ddp_checksums.json").read_text())["checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
