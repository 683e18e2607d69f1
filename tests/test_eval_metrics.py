"""Umeyama / Sim3, depth metrics, point-cloud metrics and report writing on constructed data."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from recon.align import Sim3, umeyama
from recon.datasets.trajectory import Trajectory
from recon.eval.depth import depth_metrics
from recon.eval.pointcloud import pointcloud_metrics
from recon.eval.report import write_json, write_markdown_table, write_report
from recon.eval.trajectory import ape, rpe


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def angle_between(Ra: np.ndarray, Rb: np.ndarray) -> float:
    return math.acos(np.clip((np.trace(Ra.T @ Rb) - 1) / 2, -1, 1))


# ---------------------------------------------------------------- Umeyama / Sim3


@pytest.mark.parametrize("with_scale, coplanar", [(True, False), (False, False), (True, True)])
def test_umeyama_recovers_exact_transform(with_scale, coplanar):
    rng = np.random.default_rng(1)
    src = rng.normal(size=(40, 3)) * [3.0, 2.0, 1.0]
    if coplanar:
        src[:, 2] = 0.0
    true = Sim3(2.7 if with_scale else 1.0, random_rotation(rng), rng.normal(size=3) * 5)
    s, R, t = umeyama(src, true.apply(src), with_scale=with_scale)
    assert abs(s - true.s) <= 1e-9
    assert np.abs(R - true.R).max() <= 1e-9 and np.abs(t - true.t).max() <= 1e-9
    assert abs(np.linalg.det(R) - 1) <= 1e-12


def test_umeyama_with_noise_is_close_and_optimal():
    rng = np.random.default_rng(2)
    src = rng.uniform(-2, 2, size=(500, 3))
    true = Sim3(0.6, random_rotation(rng), np.array([1.0, -2.0, 0.5]))
    dst = true.apply(src) + rng.normal(scale=1e-3, size=src.shape)
    est = Sim3(*umeyama(src, dst, with_scale=True))
    assert abs(est.s - true.s) < 1e-3 and angle_between(est.R, true.R) < 1e-3
    assert np.abs(est.t - true.t).max() < 1e-3
    cost = np.sum((dst - est.apply(src)) ** 2)
    assert cost <= np.sum((dst - true.apply(src)) ** 2)  # least squares beats the truth on noisy data
    for ds in (1e-4, -1e-4):
        assert cost < np.sum((dst - Sim3(est.s + ds, est.R, est.t).apply(src)) ** 2)


def test_umeyama_returns_a_rotation_for_mirrored_points():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(20, 3))
    _, R, _ = umeyama(src, src * [1, 1, -1], with_scale=False)  # best orthogonal map is a reflection
    assert abs(np.linalg.det(R) - 1) <= 1e-12


@pytest.mark.parametrize("src, message", [
    (np.zeros((2, 3)), "at least 3"),
    (np.array([[0.0, 0, 0], [1, 1, 1], [2, 2, 2], [5, 5, 5]]), "collinear"),
    (np.ones((4, 3)), "coincide"),
])  # fmt: skip
def test_umeyama_rejects_degenerate_input(src, message):
    dst = src + np.array([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=message):
        umeyama(src, dst, with_scale=True)


def test_sim3_inverse_compose_matrix_and_poses():
    rng = np.random.default_rng(4)
    a = Sim3(1.7, random_rotation(rng), rng.normal(size=3))
    b = Sim3(0.4, random_rotation(rng), rng.normal(size=3))
    x = rng.normal(size=(10, 3))
    np.testing.assert_allclose(a.inverse().apply(a.apply(x)), x, atol=1e-12)
    np.testing.assert_allclose(a.compose(b).apply(x), a.apply(b.apply(x)), atol=1e-12)
    np.testing.assert_allclose(a.compose(b).matrix(), a.matrix() @ b.matrix(), atol=1e-12)
    back = Sim3.from_matrix(a.matrix())
    assert abs(back.s - a.s) < 1e-12 and np.allclose(back.R, a.R, atol=1e-12)
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, :3] = [random_rotation(rng) for _ in range(3)]
    poses[:, :3, 3] = x[:3]
    moved = a.apply_to_poses(poses)
    np.testing.assert_allclose(moved[:, :3, 3], a.apply(x[:3]), atol=1e-12)
    np.testing.assert_allclose(moved[:, :3, :3] @ np.transpose(moved[:, :3, :3], (0, 2, 1)),
                               np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-12)
    with pytest.raises(ValueError, match="scale"):
        Sim3(-1.0)


# ---------------------------------------------------------------- trajectory sanity (synthetic)


def _circle_trajectory(n: int = 60) -> Trajectory:
    a = np.linspace(0, 1.5 * np.pi, n)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, 3] = np.stack((np.cos(a), 0.1 * np.sin(3 * a), np.sin(a)), axis=1)
    poses[:, 0, 0] = poses[:, 2, 2] = np.cos(a)
    poses[:, 0, 2], poses[:, 2, 0] = np.sin(a), -np.sin(a)
    return Trajectory(poses, np.arange(n) * 0.1)


def test_ape_and_rpe_are_zero_for_a_similar_copy():
    gt = _circle_trajectory()
    sim3 = Sim3(3.0, random_rotation(np.random.default_rng(5)), np.array([1.0, 2.0, 3.0]))
    est = Trajectory(sim3.apply_to_poses(gt.poses), gt.timestamps + 0.003)
    res = ape(gt, est, align="sim3")
    assert res.stats["max"] < 1e-9 and abs(res.alignment.s - 1 / 3) < 1e-12
    assert ape(gt, est, align="se3").stats["rmse"] > 0.1  # the scale really matters
    rel = rpe(gt, est, delta=0.5, delta_unit="m", align="sim3")
    assert rel.trans_stats["max"] < 1e-9 and rel.rot_stats["max"] < 1e-6 and len(rel.pairs) > 5


# ---------------------------------------------------------------- depth


def test_depth_known_values():
    gt = np.full((1, 2, 2), 2.0)
    pred = np.array([[[1.0, 2.0], [2.0, 3.0]]])  # median 2 = median gt, so scale 1 either way
    for mode in ("none", "median"):
        m = depth_metrics(pred, gt, scale_mode=mode)
        assert m.ok and m.n_valid == 4 and m.scale == 1.0
        assert m.abs_rel == pytest.approx((0.5 + 0 + 0 + 0.5) / 4)
        assert (m.delta1, m.delta2, m.delta3) == (0.5, 0.75, 0.75)  # ratios 2, 1, 1, 1.5
        assert m.rmse == pytest.approx(math.sqrt(2 / 4))
        assert m.log_rmse == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(1.5) ** 2) / 4))


def test_depth_median_scale_invariance_and_per_frame_option():
    rng = np.random.default_rng(6)
    gt = rng.uniform(0.5, 10, size=(3, 8, 10))
    pred = gt * rng.uniform(0.9, 1.1, size=gt.shape)
    base = depth_metrics(pred, gt)
    assert 0 < base.abs_rel < 0.1
    for k in (0.01, 7.0):
        scaled = depth_metrics(pred * k, gt)
        assert scaled.abs_rel == pytest.approx(base.abs_rel, rel=1e-12)
        assert scaled.delta1 == base.delta1 and scaled.scale == pytest.approx(base.scale / k)
    assert depth_metrics(gt / 4.0, gt).abs_rel < 1e-12
    drift = gt * np.array([1.0, 2.0, 3.0])[:, None, None]  # right up to a per-frame scale
    assert depth_metrics(drift, gt, scale_mode="median_per_frame").abs_rel < 1e-12
    assert depth_metrics(drift, gt, scale_mode="median").abs_rel > 0.2
    assert depth_metrics(drift, gt, scale_mode="median_per_frame").scale.shape == (3,)


def test_depth_valid_mask_excludes_bad_ground_truth():
    gt = np.array([[1.0, 2.0, 0.0, np.nan, np.inf, 50.0]])
    pred = np.array([[1.0, 2.0, 9.0, 9.0, 9.0, 9.0]])
    m = depth_metrics(pred, gt, scale_mode="none", max_depth=20.0)
    assert m.n_valid == 2 and m.abs_rel == 0.0 and m.delta1 == 1.0
    masked = depth_metrics(pred, gt, scale_mode="none", max_depth=20.0, mask=np.array([[True, False] + [True] * 4]))
    assert masked.n_valid == 1


def test_depth_bad_predictions_count_as_failures():
    gt = np.full((1, 1, 4), 2.0)
    m = depth_metrics(np.array([[[2.0, 2.0, 0.0, np.nan]]]), gt, scale_mode="median")
    assert m.ok and m.scale == 1.0 and m.delta1 == 0.5 and m.abs_rel == pytest.approx(0.5, abs=1e-6)


def test_depth_empty_masks_give_nan_with_flag():
    m = depth_metrics(np.ones((2, 3, 3)), np.zeros((2, 3, 3)))
    assert not m.ok and "no valid" in m.note and math.isnan(m.abs_rel) and m.n_valid == 0
    m = depth_metrics(-np.ones((3, 3)), np.ones((3, 3)))
    assert not m.ok and "positive" in m.note and math.isnan(m.delta1)
    gt = np.ones((2, 2, 2))
    gt[1] = 0.0  # one empty frame: per-frame value NaN, the other frame still counts
    m = depth_metrics(np.ones((2, 2, 2)), gt, scale_mode="median_per_frame")
    assert m.ok and m.abs_rel == 0.0 and np.isnan(m.per_frame_abs_rel[1]) and m.per_frame_abs_rel[0] == 0.0
    with pytest.raises(ValueError, match=r"\(2, 2\) and \(3, 3\)"):
        depth_metrics(np.ones((2, 2)), np.ones((3, 3)))


# ---------------------------------------------------------------- point clouds


def _grid(n: int = 10, z: float = 0.0) -> np.ndarray:
    x, y = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float))
    return np.stack((x.ravel(), y.ravel(), np.full(n * n, z)), axis=1)


def test_pointcloud_known_distances():
    m = pointcloud_metrics(_grid(z=0.3), _grid())
    assert m.accuracy == pytest.approx(0.3) and m.completeness == pytest.approx(0.3)
    assert m.chamfer == pytest.approx(0.3)
    line = np.stack((np.arange(10.0), np.zeros(10), np.zeros(10)), axis=1)
    part = pointcloud_metrics(line[:5], line)  # pred covers half: accurate, incomplete
    assert part.accuracy == 0.0 and part.completeness == pytest.approx((1 + 2 + 3 + 4 + 5) / 10)
    assert part.chamfer == pytest.approx(0.75) and part.completeness_median == pytest.approx(0.5)


def test_pointcloud_alignment_given_or_estimated():
    rng = np.random.default_rng(7)
    gt = rng.normal(size=(300, 3))
    sim3 = Sim3(2.0, random_rotation(rng), np.array([0.5, -1.0, 2.0]))
    pred = sim3.inverse().apply(gt)
    assert pointcloud_metrics(pred, gt).chamfer > 0.1
    assert pointcloud_metrics(pred, gt, align=sim3).chamfer < 1e-9
    est = pointcloud_metrics(pred, gt, align="sim3")
    assert est.chamfer < 1e-9 and est.alignment.s == pytest.approx(2.0)
    with pytest.raises(ValueError, match="equal count"):
        pointcloud_metrics(pred[:10], gt, align="se3")


def test_pointcloud_voxel_downsampling_and_bad_input():
    dense = np.repeat(_grid(), 4, axis=0) + np.random.default_rng(8).uniform(-0.01, 0.01, (400, 3))
    m = pointcloud_metrics(dense, _grid(), voxel_size=0.5)
    assert m.n_pred == 100 and m.n_gt == 100 and m.accuracy < 0.02
    with pytest.raises(ValueError, match="non-finite"):
        pointcloud_metrics(np.array([[0.0, np.nan, 0.0]]), _grid())
    with pytest.raises(ValueError, match="empty"):
        pointcloud_metrics(np.zeros((0, 3)), _grid())


# ---------------------------------------------------------------- report


def test_json_and_markdown(tmp_path):
    write_json(tmp_path / "m.json", {"a": np.float32(1.5), "b": float("nan"), "c": np.arange(3)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1.5, "b": None, "c": [0, 1, 2]}
    write_markdown_table(tmp_path / "t.md", [{"seq": "a|b", "rmse": 0.0123456789}, {"seq": "c", "n": 3}])
    lines = (tmp_path / "t.md").read_text().splitlines()
    assert lines[0] == "| seq | rmse | n |" and lines[2] == "| a\\|b | 0.0123457 |  |" and lines[3] == "| c |  | 3 |"


def test_report_writes_metrics_and_valid_plots(tmp_path):
    gt = _circle_trajectory()
    rng = np.random.default_rng(9)
    poses = gt.poses.copy()
    poses[:, :3, 3] = 0.5 * poses[:, :3, 3] + rng.normal(scale=0.02, size=(len(gt), 3))
    est = Trajectory(poses, gt.timestamps)
    paths = write_report(tmp_path, "synthetic", ape(gt, est, align="sim3"), rpe(gt, est, align="sim3"),
                         extra={"depth": depth_metrics(np.ones((2, 2)), np.full((2, 2), 3.0))})
    data = json.loads(paths["json"].read_text())
    assert data["ape"]["matched"] == 60 and data["ape"]["scale"] == pytest.approx(2.0, rel=0.05)
    assert data["depth"]["abs_rel"] == 0.0 and "trans_part" in data["rpe"]
    assert "| synthetic | 60 |" in paths["markdown"].read_text()
    for kind in ("trajectory", "ate"):
        assert paths[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[kind].stat().st_size > 10_000
        img = cv2.imread(str(paths[kind]))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 400
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # more than a blank canvas
        b, g, r = (img[..., c].astype(int) for c in range(3))
        line_colour = (r - b > 80) & (r - g > 80) if kind == "trajectory" else (b - r > 80)
        assert line_colour.sum() > 100, f"{kind}: plotted line not found"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())  # no temp files
