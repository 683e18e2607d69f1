"""tools/diagnose_matches.py: match positions from attention logits, match accuracy, PnP chain."""

import importlib.util
from pathlib import Path

import numpy as np
import torch

from recon.eval.trajectory import rotation_angle_deg

_spec = importlib.util.spec_from_file_location(
    "diagnose_matches", Path(__file__).resolve().parents[1] / "tools" / "diagnose_matches.py"
)
dm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dm)


def test_match_position_is_the_peak_patch_centre_or_between_two_equal_neighbours():
    rows, cols, patch = 3, 4, 10
    logits = torch.full((2, rows * cols), -30.0)
    logits[0, 1 * cols + 2] = 0.0  # query 0: all mass on patch (1, 2)
    logits[1, 2 * cols + 0] = logits[1, 2 * cols + 1] = 0.0  # query 1: split over (2, 0) and (2, 1)
    uv, peak = dm.match_positions(logits, rows, cols, patch)
    assert peak[0] == 1 * cols + 2
    np.testing.assert_allclose(uv[0], [25.0, 15.0], atol=1e-4)
    np.testing.assert_allclose(uv[1], [10.0, 25.0], atol=1e-4)  # x midway between 5 and 15


def test_match_accuracy_counts_peaks_within_one_patch_of_the_target():
    cols = 4
    index = np.array([[5, 6, 9, 10]] * 4)
    weight = np.array([[0.7, 0.1, 0.1, 0.1]] * 3 + [[0.0] * 4])  # the last query is not counted
    peak = np.array([5, 10, 15, 0])  # on target, diagonal neighbour, two away, uncounted
    assert dm.match_accuracy(peak, index, weight, cols) == 2 / 3


def _rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    import cv2

    return cv2.Rodrigues(np.asarray(axis, np.float64) / np.linalg.norm(axis) * np.radians(deg))[0]


def test_chain_pnp_recovers_the_poses_from_exact_frame_to_frame_matches():
    rng = np.random.default_rng(0)
    S, N = 5, 60
    K = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    poses = [np.eye(4)]  # camera-from-world, world = camera 0
    for j in range(1, S):
        step = np.eye(4)
        step[:3, :3] = _rotation(rng.normal(size=3), 3.0)
        step[:3, 3] = rng.normal(scale=0.05, size=3)
        poses.append(step @ poses[-1])
    points, matches = np.zeros((S, N, 3)), np.zeros((S, N, 2))
    for j in range(S):
        pix = np.stack((rng.uniform(10, 118, N), rng.uniform(10, 86, N), np.ones(N)), -1)
        points[j] = (pix @ np.linalg.inv(K).T) * rng.uniform(2, 5, (N, 1))
        if j:
            world = (points[j] - poses[j][:3, 3]) @ poses[j][:3, :3]  # R^T (x - t)
            prev = world @ poses[j - 1][:3, :3].T + poses[j - 1][:3, 3]
            matches[j] = (prev @ K.T)[:, :2] / prev[:, 2:]
    est = dm.chain_pnp(points, matches, np.repeat(K[None], S, 0))
    gt = np.stack(poses)[:, :3]
    assert np.abs(est[:, :, 3] - gt[:, :, 3]).max() < 1e-6
    assert rotation_angle_deg(est[:, :, :3] @ gt[:, :, :3].transpose(0, 2, 1)).max() < 1e-5


def test_chain_pnp_keeps_the_previous_pose_when_a_frame_has_too_few_matches():
    K = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    points = np.ones((2, 5, 3))
    matches = np.zeros((2, 5, 2))
    est = dm.chain_pnp(points, matches, np.repeat(K[None], 2, 0), min_inliers=12)
    np.testing.assert_array_equal(est[1], np.eye(4)[:3])


def test_patch_centre_points_lift_the_centre_pixels_with_their_depth():
    depth = np.zeros((1, 8, 8))
    depth[0, 2, 6] = 4.0  # the centre pixel of patch (0, 1) for 4-pixel patches
    K = np.array([[[2.0, 0, 4], [0, 2.0, 4], [0, 0, 1]]])
    pts = dm.patch_centre_points(depth, K, 4)
    assert pts.shape == (1, 4, 3)
    np.testing.assert_allclose(pts[0, 1], [(6.5 - 4) / 2 * 4, (2.5 - 4) / 2 * 4, 4.0])
