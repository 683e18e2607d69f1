"""recon.refine.depth_fuse: reprojecting a frame's depth into another camera, and the median over
the neighbours, on rendered frames with exact depth and cameras."""

from __future__ import annotations

import numpy as np
import pytest

from recon.datasets.synthetic import render_batch
from recon.refine.depth_fuse import fuse_depth, reproject_depth


@pytest.fixture(scope="module")
def clip():
    b = render_batch([1003], 8, 96, 96, families=["room"], trajectories=["handheld"])
    depth = np.where(b["valid"][0].numpy(), b["depth"][0].double().numpy(), np.nan)
    return depth, b["intrinsic"][0].double().numpy(), b["extrinsic"][0].double().numpy()


def _abs_rel(depth: np.ndarray, truth: np.ndarray) -> float:
    ok = np.isfinite(truth) & np.isfinite(depth)
    return float(np.mean(np.abs(depth[ok] - truth[ok]) / truth[ok]))


def test_reprojected_depth_matches_the_other_camera_where_it_lands(clip):
    depth, K, E = clip
    seen = reproject_depth(depth[3], K[3], E[3], K[2], E[2])
    both = np.isfinite(seen) & np.isfinite(depth[2])
    assert both.mean() > 0.5
    # Nearest-pixel splatting: off by at most a pixel's worth of surface; the median is exact-ish.
    log_diff = np.abs(np.log(seen[both] / depth[2][both]))
    assert np.median(log_diff) < 0.01
    assert np.mean(log_diff < 0.05) > 0.9
    # Into its own camera a depth map comes back as it was.
    np.testing.assert_allclose(reproject_depth(depth[3], K[3], E[3], K[3], E[3]), depth[3], rtol=1e-5)


def test_fusion_averages_out_independent_errors_and_keeps_exact_depth(clip):
    depth, K, E = clip
    exact = fuse_depth(depth, K, E, radius=4)
    assert _abs_rel(exact, depth) < 0.01
    rng = np.random.default_rng(0)
    noisy = depth * np.exp(rng.normal(0, 0.1, depth.shape))
    fused = fuse_depth(noisy, K, E, radius=7)
    assert _abs_rel(fused, depth) < 0.6 * _abs_rel(noisy, depth)
    np.testing.assert_array_equal(np.isnan(fused), np.isnan(noisy))  # invalid pixels stay invalid
    np.testing.assert_array_equal(fuse_depth(noisy, K, E, radius=0), noisy)


def test_fusion_leaves_out_depths_too_far_from_the_frame_own(clip):
    depth, K, E = clip
    wrong = depth.copy()
    wrong[[1, 2, 4]] *= 2.0  # three frames a factor 2 off: farther than max_log_diff from the rest
    fused = fuse_depth(wrong, K, E, radius=7, max_log_diff=0.3)
    for i in (0, 3, 5, 6, 7):  # the frames that were right are not pulled towards the wrong ones
        assert _abs_rel(fused[i], depth[i]) < 0.01
