"""ATE / RPE against the evo 1.38.1 oracle numbers in shared/data/evo_traj_fixtures/SOURCE.txt.

Comparison rule: evo printed each reference with a fixed number of decimals d (6 for errors,
8 for the Sim(3) scale), so our float64 value must round to the printed one:
|ours - printed| <= 0.5 * 10**-d (+1e-12 for the float representation of the printed value).
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from recon.datasets.trajectory import Trajectory, read_kitti, read_tum
from recon.eval.trajectory import ape, associate, rpe, rpe_pairs

FIXTURES = Path(__file__).resolve().parents[2] / "shared/data/evo_traj_fixtures"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"evo fixtures not found at {FIXTURES}")


def assert_printed(value: float, printed: str) -> None:
    decimals = -Decimal(printed).as_tuple().exponent
    tol = 0.5 * 10.0**-decimals + 1e-12
    assert abs(value - float(printed)) <= tol, f"{value!r} does not print as {printed} ({decimals} decimals)"


@cache
def load(name: str) -> Trajectory:
    return read_kitti(FIXTURES / name) if name.startswith("KITTI") else read_tum(FIXTURES / name)


# (gt, estimate, align, matched/n_est or None, scale or None, rmse, mean, max) from SOURCE.txt.
APE_CASES = [
    ("freiburg1_xyz-groundtruth.txt", "freiburg1_xyz-rgbdslam.txt", "se3", (785, 788), None,
     "0.013470", "0.012024", "0.034760"),
    ("freiburg1_xyz-groundtruth.txt", "freiburg1_xyz-ORB_kf_mono.txt", "sim3", (32, 32), "1.10562236",
     "0.009755", "0.008219", "0.027924"),
    ("fr2_desk_groundtruth.txt", "fr2_desk_ORB.txt", "se3", None, None, "0.008119", "0.007492", "0.024300"),
    ("fr2_desk_groundtruth.txt", "fr2_desk_ORB_kf_mono.txt", "sim3", (118, 157), "2.22802175",
     "0.007729", "0.007104", "0.015689"),
    ("KITTI_00_gt.txt", "KITTI_00_ORB.txt", "se3", None, None, "1.303450", "1.156997", "3.587949"),
    ("KITTI_00_gt.txt", "KITTI_00_ORB.txt", "sim3", None, None, "0.937709", "0.872693", "2.693500"),
]


@needs_fixtures
@pytest.mark.parametrize("gt, est, align, matched, scale, rmse, mean, max_", APE_CASES)
def test_ape_matches_evo(gt, est, align, matched, scale, rmse, mean, max_):
    kitti = gt.startswith("KITTI")  # evo_ape kitti pairs poses by index
    result = ape(load(gt), load(est), align=align, match=not kitti)
    if matched is not None:
        assert (len(result.errors), result.n_est) == matched
        assert np.all(np.diff(result.est_index) > 0)  # the shorter estimate is walked in order
    if scale is not None:
        assert_printed(result.alignment.s, scale)
    if align == "se3":
        assert result.alignment.s == 1.0
    assert_printed(result.stats["rmse"], rmse)
    assert_printed(result.stats["mean"], mean)
    assert_printed(result.stats["max"], max_)


@needs_fixtures
def test_rpe_frames_matches_evo():
    result = rpe(load("freiburg1_xyz-groundtruth.txt"), load("freiburg1_xyz-rgbdslam.txt"), delta=1, delta_unit="f")
    assert_printed(result.trans_stats["rmse"], "0.005764")
    assert_printed(result.trans_stats["mean"], "0.004816")
    assert_printed(result.trans_stats["max"], "0.020866")
    assert_printed(result.rot_stats["rmse"], "0.353613")


@needs_fixtures
def test_rpe_metres_matches_evo():
    result = rpe(load("KITTI_00_gt.txt"), load("KITTI_00_ORB.txt"), delta=100, delta_unit="m", match=False)
    assert_printed(result.trans_stats["rmse"], "1.193976")
    assert_printed(result.trans_stats["mean"], "1.054478")
    assert_printed(result.trans_stats["max"], "2.959638")


def _brute_force(short_t: np.ndarray, long_t: np.ndarray, max_diff: float) -> tuple[list, list]:
    short_idx, long_idx = [], []
    for i, t in enumerate(short_t):
        d = np.abs(long_t - t)
        j = int(np.argmin(d))
        if d[j] <= max_diff:
            short_idx.append(i)
            long_idx.append(j)
    return short_idx, long_idx


def test_association_equals_brute_force_argmin():
    """evo: walk the shorter trajectory, nearest stamp of the other (argmin: first index on ties),
    offset added to the estimate's stamps."""
    rng = np.random.default_rng(0)
    long_t = np.round(np.sort(rng.uniform(0, 5, 300)), 2)  # rounding creates duplicate stamps and ties
    short_t = np.round(rng.uniform(0, 5, 120), 3)  # unsorted on purpose
    long = Trajectory(np.tile(np.eye(4), (300, 1, 1)), long_t)
    short = Trajectory(np.tile(np.eye(4), (120, 1, 1)), short_t)
    for offset, max_diff in ((0.0, 0.01), (0.013, 0.004)):
        # Shorter estimate: the estimate is walked, the reference shifted by -offset.
        exp_est, exp_ref = _brute_force(short_t, long_t - offset, max_diff)
        ref_idx, est_idx = associate(long, short, max_diff=max_diff, offset=offset)
        assert (ref_idx.tolist(), est_idx.tolist()) == (exp_ref, exp_est)
        # Longer estimate: the reference is walked, the estimate shifted by +offset.
        exp_ref, exp_est = _brute_force(short_t, long_t + offset, max_diff)
        ref_idx, est_idx = associate(short, long, max_diff=max_diff, offset=offset)
        assert (ref_idx.tolist(), est_idx.tolist()) == (exp_ref, exp_est)
    exp_est, exp_ref = _brute_force(short_t, long_t, 0.01)
    assert len(set(exp_ref)) < len(exp_ref)  # the data really has poses matched twice


def test_no_matching_stamp_is_a_clear_error():
    a = Trajectory(np.tile(np.eye(4), (3, 1, 1)), [0.0, 1.0, 2.0])
    b = Trajectory(np.tile(np.eye(4), (3, 1, 1)), [10.0, 11.0, 12.0])
    with pytest.raises(ValueError, match="max_diff=0.01"):
        ape(a, b)


def test_rpe_pairs_semantics():
    x = np.array([0.0, 0.4, 1.05, 1.45, 2.0, 2.6, 3.2, 4.25])
    positions = np.stack((x, np.zeros_like(x), np.zeros_like(x)), axis=1)
    # Segments from index 0, restarting where the travelled path first reaches 1 m (no overlap).
    assert rpe_pairs(positions, 1.0, "m").tolist() == [[0, 2], [2, 5], [5, 7]]
    assert rpe_pairs(positions, 3, "f").tolist() == [[0, 3], [3, 6]]
    assert rpe_pairs(positions, 3, "f", all_pairs=True).tolist() == [[i, i + 3] for i in range(5)]
    # all_pairs in metres: closest path length to 1 m within 10 %.
    assert rpe_pairs(positions, 1.0, "m", all_pairs=True).tolist() == [[0, 2], [1, 3], [2, 4], [6, 7]]
    with pytest.raises(ValueError, match="delta_unit"):
        rpe_pairs(positions, 1.0, "s")
