"""The trainer: runs, logs, checkpoints, resumes, and trains data-parallel under torchrun."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["--preset", "tiny", "--height", "56", "--width", "56", "--frames-per-step", "4", "--min-frames", "2",
        "--max-frames", "2", "--log-every", "1", "--save-every", "2", "--device", "cpu"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_train_logs_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recon.train", *ARGS, "--out", str(out)]
    subprocess.run([*cmd, "--steps", "2"], check=True, capture_output=True, env=_env(), timeout=300)
    assert (out / "last.pt").exists() and (out / "model.safetensors").exists()
    proc = subprocess.run([*cmd, "--steps", "3"], check=True, capture_output=True, text=True, env=_env(), timeout=300)
    assert "resumed from" in proc.stdout and "at step 2" in proc.stdout
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(float(r["loss"]) > 0 for r in rows)
    assert "match" not in rows[0]  # the correspondence loss is off by default

    from recon.checkpoint import load_model

    model, _ = load_model(str(out / "model.safetensors"))
    assert model.config.name == "tiny"


def test_correspondence_loss_is_logged_and_added_to_the_total(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recon.train", *ARGS, "--out", str(out), "--steps", "2", "--match-weight", "0.5"]
    subprocess.run(cmd, check=True, capture_output=True, env=_env(), timeout=300)
    rows = list(csv.DictReader(open(out / "log.csv")))
    for r in rows:
        match = float(r["match"])
        assert match > 0
        terms = 5.0 * float(r["camera"]) + float(r["depth"]) + float(r["points"]) + 0.5 * match
        assert abs(float(r["loss"]) - terms) < 1e-3


def test_correspondence_layers_the_model_lacks_are_a_one_line_error(tmp_path):
    cmd = [sys.executable, "-m", "recon.train", *ARGS, "--out", str(tmp_path / "run"), "--steps", "1",
           "--match-weight", "0.1", "--match-layers", "1,9"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "--match-layers '1,9'" in proc.stderr.strip().splitlines()[-1]


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    pytest.importorskip("torch.distributed.run")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "recon.train", *ARGS, "--steps", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sums = json.loads((out / "ddp_checksums.json").read_text())
    assert sums["world_size"] == 2
    assert sums["checksums"][0] == sums["checksums"][1]
    assert "on 2 x cpu" in proc.stdout


def test_reuse_serves_each_rendering_twice_the_second_time_backwards():
    import torch

    from recon.train import TrainConfig, make_sampler

    cfg = TrainConfig(height=28, width=28, reuse=2)
    sample = make_sampler(cfg, torch.device("cpu"), rank=0, world=1)
    a, b, c = sample(0, 1, 3), sample(1, 1, 3), sample(2, 1, 3)
    for key in ("images", "depth", "extrinsic"):
        assert torch.equal(b[key], a[key].flip(1))
    assert not torch.equal(c["images"], a["images"])  # a new rendering, new seeds
    once = make_sampler(TrainConfig(height=28, width=28), torch.device("cpu"), rank=0, world=1)
    assert torch.equal(once(0, 1, 3)["images"], a["images"])
    assert not torch.equal(once(1, 1, 3)["images"], b["images"])
    with pytest.raises(SystemExit, match="synthetic data only"):
        make_sampler(TrainConfig(data="some/folder", reuse=2), torch.device("cpu"), rank=0, world=1)


def test_heads_configured_for_training_run_all_frames_in_one_pass_with_the_same_result():
    import torch

    from recon.config import get_preset
    from recon.model import build_model
    from recon.train import configure_heads_for_training

    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).eval()
    images = torch.rand(1, 10, 3, 56, 56)
    with torch.no_grad():
        chunked = model(images, causal=True)
        configure_heads_for_training(model, bf16=False)
        whole = model(images, causal=True)
    assert model.depth_head.frames_chunk_size == 0 and model.point_head.frames_chunk_size == 0
    for key in ("depth", "depth_conf", "world_points"):
        torch.testing.assert_close(whole[key], chunked[key], rtol=1e-4, atol=1e-5)


def test_chunked_run_resumes_the_schedule_where_it_stopped(tmp_path):
    import torch

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recon.train", *ARGS, "--out", str(out), "--steps", "1000", "--warmup", "0",
           "--lr", "1e-3", "--min-lr", "1e-5", "--time-limit", "600"]  # fmt: skip
    run = dict(check=True, capture_output=True, text=True, env=_env(), timeout=300)
    proc = subprocess.run([*cmd, "--chunk", "0.001"], **run)
    assert "time limit reached at step 1" in proc.stdout  # the chunk ends the process, not the schedule
    state = torch.load(out / "last.pt", weights_only=True)
    assert 0 < state["elapsed"] < 600
    # Pretend the first process trained for the whole schedule: the next one is at its end.
    state["elapsed"] = 601.0
    torch.save(state, out / "last.pt")
    proc = subprocess.run(cmd, **run)
    assert "(601 s of training)" in proc.stdout and "time limit reached at step 2" in proc.stdout
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert float(rows[0]["lr"]) > 9e-4 and float(rows[1]["lr"]) == 1e-5  # annealed by the time spent
    assert float(rows[1]["time_s"]) > 601
