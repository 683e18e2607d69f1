"""The photometric plane sweep (recon.refine.depth_sweep) on rendered clips with exact cameras."""

import numpy as np
import pytest
import torch

from recon.datasets.synthetic import SyntheticSequence
from recon.refine.depth_sweep import SweepConfig, grey, pick_neighbours, sweep_depth


@pytest.fixture(scope="module")
def clip():
    seq = SyntheticSequence(7, 16, height=96, width=128, family="room", trajectory="orbit")
    frames = list(seq)
    depth = np.stack([f.depth for f in frames]).astype(np.float64)
    depth[depth <= 0] = np.nan
    images = grey(np.stack([f.image for f in frames]) / 255.0)
    intrinsic = np.stack([f.intrinsic for f in frames])
    extrinsic = np.stack([f.extrinsic for f in frames])
    return depth, images, intrinsic, extrinsic


def _abs_rel(pred, gt):
    v = np.isfinite(gt) & np.isfinite(pred)
    return float(np.mean(np.abs(pred[v] - gt[v]) / gt[v]))


def _perturbed(depth, seed=0):
    """Each frame off by its own scale and a smooth in-frame tilt, within the sweep's +-0.3 range."""
    rng = np.random.default_rng(seed)
    S, H, W = depth.shape
    ramp = np.linspace(-1, 1, W)[None, :]
    log_err = rng.uniform(-0.15, 0.15, (S, 1, 1)) + rng.uniform(-0.08, 0.08, (S, 1, 1)) * ramp
    return depth * np.exp(log_err)


def test_sweep_corrects_wrong_depth(clip):
    depth, images, K, E = clip
    noisy = _perturbed(depth)
    swept = sweep_depth(noisy, images, K, E, SweepConfig(radius=8))
    before, after = _abs_rel(noisy, depth), _abs_rel(swept, depth)
    assert before > 0.05
    assert after < 0.5 * before, (before, after)


def test_exact_depth_stays_exact(clip):
    depth, images, K, E = clip
    swept = sweep_depth(depth, images, K, E, SweepConfig(radius=8))
    v = np.isfinite(depth)
    assert np.median(np.abs(np.log(swept[v] / depth[v]))) < 0.01


def test_untextured_images_keep_the_depth(clip):
    depth, _, K, E = clip
    noisy = _perturbed(depth)
    flat = np.full(noisy.shape, 0.5, np.float32)
    np.testing.assert_array_equal(sweep_depth(noisy, flat, K, E, SweepConfig(radius=8)), noisy)


def test_invalid_pixels_stay_invalid(clip):
    depth, images, K, E = clip
    swept = sweep_depth(depth, images, K, E, SweepConfig(radius=8))
    assert np.array_equal(np.isnan(swept), np.isnan(depth))


def test_a_camera_that_only_turns_has_no_neighbours(clip):
    depth, images, K, E = clip
    turned = E.copy()
    centre = -E[0, :, :3].T @ E[0, :, 3]
    turned[:, :, 3] = -np.einsum("sij,j->si", E[:, :, :3], centre)  # every camera at frame 0's centre
    assert pick_neighbours(3, depth[3], K, turned, SweepConfig()) == []
    noisy = _perturbed(depth)
    np.testing.assert_array_equal(sweep_depth(noisy, images, K, turned), noisy)


def test_neighbours_see_the_frame_from_a_baseline(clip):
    depth, _, K, E = clip
    c = SweepConfig(radius=8, neighbours=4)
    nbrs = pick_neighbours(8, depth[8], K, E, c)
    assert 2 <= len(nbrs) <= 4 and 8 not in nbrs and all(abs(j - 8) <= 8 for j in nbrs)
    centre = -np.einsum("sji,sj->si", E[:, :, :3], E[:, :, 3])
    median = np.nanmedian(depth[8])
    assert all(np.linalg.norm(centre[j] - centre[8]) / median >= c.min_baseline for j in nbrs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_agrees_with_cpu(clip):
    depth, images, K, E = clip
    noisy = _perturbed(depth)
    cpu = sweep_depth(noisy, images, K, E, SweepConfig(radius=8))
    gpu = sweep_depth(noisy, images, K, E, SweepConfig(radius=8), device="cuda")
    v = np.isfinite(depth)
    assert np.mean(np.abs(np.log(cpu[v] / gpu[v])) < 1e-3) > 0.99
