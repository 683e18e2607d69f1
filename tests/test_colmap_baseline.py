"""COLMAP SfM baseline: a real run on 16 TUM frames, the scorer on synthetic poses, the CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycolmap")

from recon.eval.colmap_baseline import ColmapResult, KnownCamera, run_colmap_sfm, score_against_ground_truth  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TUM = Path(__file__).resolve().parents[2] / "shared/data/tum_fr3_office_17kf"
needs_tum = pytest.mark.skipif(not TUM.is_dir(), reason=f"TUM fixture missing: {TUM}")

# COLMAP registers 16/16 frames with ATE ~0.011 m (0.23 % of the 4.5 m path) at 320 px; the
# thresholds leave room for other pycolmap versions without letting a broken pose slip by.
MIN_REGISTERED = 14
MAX_ATE_M = 0.05


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _gt_extrinsics(n: int = 8) -> np.ndarray:
    """Cameras along a planar arc, each yawing a little: camera-from-world [n, 3, 4]."""
    out = np.zeros((n, 3, 4))
    for k in range(n):
        R_wc = _rot("y", 0.2 * k)
        c = np.array([2.0 * np.sin(0.5 * k), 0.1 * k, 2.0 * (1 - np.cos(0.5 * k))])
        out[k, :, :3] = R_wc.T
        out[k, :, 3] = -R_wc.T @ c
    return out


def _in_other_world(extrinsics: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The same cameras in a world x' = s R x + t (a scaled, rotated, shifted SfM world)."""
    out = np.empty_like(extrinsics)
    for k, E in enumerate(extrinsics):
        R_cw, c = E[:, :3], -E[:, :3].T @ E[:, 3]
        R_cw_new = R_cw @ R.T
        out[k, :, :3] = R_cw_new
        out[k, :, 3] = -R_cw_new @ (s * R @ c + t)
    return out


def _path_length(extrinsics: np.ndarray) -> float:
    centres = np.stack([-E[:, :3].T @ E[:, 3] for E in extrinsics])
    return float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())


def _synthetic_result(extrinsics: np.ndarray, registered: np.ndarray) -> ColmapResult:
    n = len(extrinsics)
    ext = np.where(registered[:, None, None], extrinsics, np.nan)
    return ColmapResult([f"{i:06d}.png" for i in range(n)], registered, ext, np.eye(3), "PINHOLE", np.ones(4),
                        (48, 64), np.zeros((5, 3)), np.zeros((5, 3), np.uint8), 1.0)  # fmt: skip


def test_scorer_recovers_a_similarity_transformed_trajectory_and_reports_unregistered_frames():
    gt = _gt_extrinsics(8)
    stamps = np.arange(8) * 0.5
    est = _in_other_world(gt, 0.4, _rot("z", 0.7) @ _rot("x", -0.3), np.array([1.0, -2.0, 0.5]))
    registered = np.ones(8, bool)
    registered[3] = False
    m = score_against_ground_truth(_synthetic_result(est, registered), gt, stamps, name="syn")
    path = _path_length(gt)
    assert m["registered"] == 7 and m["scored_frames"] == 7 and m["registered_fraction"] == pytest.approx(7 / 8)
    assert m["path_length"] == pytest.approx(path)  # the whole ground truth, unregistered frames included
    assert m["ate_rmse"] < 1e-9 and m["rpe_trans_rmse"] < 1e-9 and m["rpe_rot_rmse_deg"] < 1e-6
    assert m["sim3_scale"] == pytest.approx(1 / 0.4)
    assert m["_results"]["ape"].est_index.tolist() == list(range(7))

    # Moving one camera by 0.3 m must show up in the ATE.
    est[5, :, 3] += est[5, :, :3] @ np.array([0.0, 0.3 * 0.4, 0.0])
    m = score_against_ground_truth(_synthetic_result(est, registered), gt, stamps)
    assert 0.01 < m["ate_rmse"] < 0.3 and m["ate_pct_of_path"] == pytest.approx(100 * m["ate_rmse"] / path)


def test_scorer_with_too_few_registered_frames_reports_nan_not_an_error():
    gt = _gt_extrinsics(6)
    registered = np.array([True, False, False, True, False, False])
    m = score_against_ground_truth(_synthetic_result(gt, registered), gt, np.arange(6.0))
    assert m["registered"] == 2 and m["registered_fraction"] == pytest.approx(1 / 3)
    assert np.isnan(m["ate_rmse"]) and np.isnan(m["rpe_trans_rmse"]) and m["_results"] == {}


def test_scorer_rejects_ground_truth_of_the_wrong_length():
    gt = _gt_extrinsics(6)
    with pytest.raises(ValueError, match=r"\[6, 3, 4\]"):
        score_against_ground_truth(_synthetic_result(gt, np.ones(6, bool)), gt[:5], np.arange(5.0))


def test_bad_inputs_raise_before_colmap_runs(tmp_path):
    img = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="matcher"):
        run_colmap_sfm([img, img], matcher="vocab")
    with pytest.raises(ValueError, match="32x24"):
        run_colmap_sfm([img, img[:24, :32]], workdir=tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        run_colmap_sfm([img, tmp_path / "nope.png"], workdir=tmp_path)
    with pytest.raises(ValueError, match="640x480"):
        run_colmap_sfm([img, img], workdir=tmp_path, camera=KnownCamera(np.eye(3), 640, 480))
    assert list(tmp_path.iterdir()) == []  # the working folders are gone


@needs_tum
def test_colmap_registers_tum_frames_with_small_ate(tmp_path):
    from recon.datasets.readers import open_sequence

    frames = list(open_sequence(TUM))
    assert len(frames) == 16
    K = frames[0].intrinsic
    result = run_colmap_sfm([f.extras["path"] for f in frames], workdir=tmp_path, camera=KnownCamera(K, 640, 480),
                            max_image_size=320, num_threads=2)  # fmt: skip
    m = score_against_ground_truth(result, np.stack([f.extrinsic for f in frames]), [f.timestamp for f in frames])
    print(f"COLMAP: {m['registered']}/16 registered, ATE {m['ate_rmse']:.4f} m ({m['ate_pct_of_path']:.2f} % of "
          f"{m['path_length']:.2f} m), {m['num_points3D']} points, {result.runtime_s:.1f} s")  # fmt: skip
    assert m["registered"] >= MIN_REGISTERED
    assert m["ate_rmse"] < MAX_ATE_M
    np.testing.assert_allclose(result.intrinsic, K)  # known intrinsics stay fixed
    first = int(np.flatnonzero(result.registered)[0])
    np.testing.assert_allclose(result.extrinsics[first], np.eye(3, 4), atol=1e-9)  # world = first camera
    assert result.num_points > 100 and result.colors.shape == (result.num_points, 3)
    assert list(tmp_path.iterdir()) == []  # cleaned up without keep=True


def _load_cli():
    spec = importlib.util.spec_from_file_location("colmap_baseline_cli", ROOT / "tools/colmap_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    assert _load_cli().main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("colmap_baseline: error:") and "missing" in err and "\n" not in err


@needs_tum
def test_cli_writes_json_markdown_and_trajectory(tmp_path):
    out = tmp_path / "out"
    cli = _load_cli()
    assert cli.main([str(TUM), "--out", str(out), "--max-image-size", "320", "--max-frames", "6", "--stride", "2",
                     "--threads", "2"]) == 0  # fmt: skip
    data = json.loads((out / f"{TUM.name}_colmap_metrics.json").read_text())
    assert data["metrics"]["frames"] == 6 and data["colmap"]["frame_index"] == [0, 2, 4, 6, 8, 10]
    assert data["metrics"]["registered"] == sum(data["colmap"]["registered"])
    table = (out / f"{TUM.name}_colmap_metrics.md").read_text()
    assert "| ate_rmse |" in table and "registered_fraction" in table
    rows = [r for r in (out / f"{TUM.name}_colmap_trajectory.txt").read_text().splitlines() if not r.startswith("#")]
    assert len(rows) == data["metrics"]["registered"]
