"""The command line: bad input gets one line and a non-zero exit; runs write their outputs."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from recon.checkpoint import save_checkpoint
from recon.cli import EXIT_ERROR, main
from recon.model import GeometryTransformer
from tests.helpers import REDUCED, randomize_

TUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "tum_fr3_office_17kf"


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "reduced.safetensors"
    save_checkpoint(randomize_(GeometryTransformer(REDUCED), seed=4), path)
    return str(path)


@pytest.fixture()
def frames_dir(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    return folder


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, [line for line in err if not line.startswith("recon: warning")]


@pytest.mark.parametrize("memory", ["full", "rolling", "window"])
def test_run_writes_exports_and_recording(tmp_path, capsys, small_model, frames_dir, memory):
    out = tmp_path / "out"
    code = main(["run", str(frames_dir), "--model", small_model, "--out", str(out), "--export", "ply,traj",
                 "--rrd", str(out / "rec.rrd"), "--width", "70", "--quiet", "--memory", memory])
    assert code == 0
    assert (out / "points.ply").stat().st_size > 0 and (out / "rec.rrd").stat().st_size > 0
    assert len((out / "trajectory_tum.txt").read_text().strip().splitlines()) == 1 + 4


def test_run_with_refine_writes_the_refined_trajectory(tmp_path, small_model, frames_dir):
    out = tmp_path / "out"
    code = main(["run", str(frames_dir), "--model", small_model, "--out", str(out), "--export", "traj",
                 "--width", "70", "--quiet", "--refine"])  # fmt: skip
    assert code == 0
    assert len((out / "trajectory_tum.txt").read_text().strip().splitlines()) == 1 + 4


@pytest.mark.parametrize("case", ["missing_path", "empty_folder", "corrupt_video", "webcam", "unknown_preset",
                                  "wrong_checkpoint", "unwritable_out", "two_budgets", "negative_final_frames"])
def test_bad_input_one_line_error(tmp_path, capsys, small_model, frames_dir, case):
    model = small_model
    source = str(frames_dir)
    out = []
    if case == "missing_path":
        source = str(tmp_path / "nope.mp4")
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        source = str(tmp_path / "empty")
    elif case == "corrupt_video":
        (tmp_path / "bad.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
        source = str(tmp_path / "bad.mp4")
    elif case == "webcam":
        source = "97"
    elif case == "unknown_preset":
        model = "vggt-9b"
    elif case == "wrong_checkpoint":
        (tmp_path / "w.pt").write_text("not weights")
        model = str(tmp_path / "w.pt")
    elif case == "unwritable_out":
        (tmp_path / "file").write_text("x")
        out = ["--out", str(tmp_path / "file" / "sub")]
    elif case == "two_budgets":
        out = ["--memory", "rolling", "--budget-mb", "10", "--budget-frames", "4"]
    elif case == "negative_final_frames":
        out = ["--refine", "--final-frames", "-1"]
    code, err = _run(capsys, "run", source, "--model", model, "--width", "70", "--quiet", *out)
    assert code == EXIT_ERROR
    assert len(err) == 1 and err[0].startswith("recon: error: "), err
    assert "Traceback" not in err[0]


def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "recon.cli", "run", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_ERROR
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("recon: warning")]
    assert len(lines) == 1 and lines[0].startswith("recon: error: ") and "Traceback" not in proc.stderr


def test_interrupted_run_leaves_valid_outputs(tmp_path, small_model, frames_dir):
    import open3d as o3d

    from recon.checkpoint import load_model
    from recon.datasets.sources import open_source
    from recon.export import Exporter
    from recon.pipeline import run_stream
    from recon.session import Reconstructor

    model, _ = load_model(small_model)
    source = open_source(frames_dir)
    calls = {"n": 0}

    def interrupt_after_two(pred, frame):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    summary = run_stream(source, Reconstructor(model, device="cpu", width=70), exporter=Exporter(out, "ply,traj"),
                         on_prediction=interrupt_after_two, progress=False)
    assert summary.interrupted and summary.frames == 2
    assert len(o3d.io.read_point_cloud(str(out / "points.ply")).points) > 0
    assert len((out / "trajectory_tum.txt").read_text().strip().splitlines()) == 1 + 2
    assert not list(out.glob(".*"))


@pytest.mark.skipif(not TUM.exists(), reason="shared TUM frames not present")
def test_video_source_from_real_frames(tmp_path, capsys, small_model):
    video = tmp_path / "tum.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for png in sorted((TUM / "rgb").glob("*.png"))[:6]:
        writer.write(cv2.resize(cv2.imread(str(png)), (160, 120)))
    writer.release()
    out = tmp_path / "out"
    assert main(["run", str(video), "--model", small_model, "--out", str(out), "--export", "traj", "--width", "70",
                 "--quiet"]) == 0
    assert len((out / "trajectory_tum.txt").read_text().strip().splitlines()) == 1 + 6


def test_batch_processes_each_input_once_and_resumes(tmp_path, capsys, small_model):
    import json

    inputs = tmp_path / "inputs"
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        (inputs / name).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(inputs / name / f"{i}.png"), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    (inputs / "notes.txt").write_text("ignored: neither a video nor an image folder")
    out = tmp_path / "out"
    args = ["batch", str(inputs), "--model", small_model, "--out", str(out), "--export", "traj", "--width", "70",
            "--quiet"]
    assert main(args) == 0
    first = capsys.readouterr().out
    for name in ("a", "b"):
        done = json.loads((out / name / "done.json").read_text())
        assert done["frames"] == 3 and (out / name / "trajectory_tum.txt").exists()
    assert "done" in first and "skipped" not in first
    assert main(args) == 0  # resumable: finished inputs are skipped
    assert capsys.readouterr().out.count("skipped (done)") == 2


@pytest.mark.parametrize("command", ["benchmark", "train"])
def test_delegated_subcommands_take_their_own_options(capsys, command):
    """`recon benchmark --model ...` / `recon train --preset ...` reach their own parsers."""
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and f"usage: recon {command}" in capsys.readouterr().out
    option = "--model" if command == "benchmark" else "--preset"
    assert main([command, option, "no-such-preset", "--device", "cpu"]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-preset" in err[0]
