"""`window` strategy: Sim(3) between windows, layer-wise scale alignment, the streaming session."""

import numpy as np
import pytest
import torch

from recon.align import (
    LayerConfig, Sim3, WindowAligner, WindowConfig, WindowPrediction, align_windows, camera_points,
    estimate_window_sim3, layerwise_corrections, link_segments, robust_scale, segment_depth_layers,
    transform_extrinsic, window_ranges,
)  # fmt: skip
from recon.model import GeometryTransformer
from recon.session import Reconstructor
from tests.helpers import REDUCED, randomize_

H, W, F = 48, 64, 50.0
K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])


def _rotation(axis, angle: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _scene(n: int):
    """A moving camera (world = camera 0) looking at a slanted wall and a floating square that
    drifts sideways: truth extrinsic [n, 3, 4], depth [n, H, W], foreground mask [n, H, W]."""
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    rays = np.stack(((u - W / 2) / F, (v - H / 2) / F, np.ones_like(u)), axis=-1)
    extrinsic, depth, fg = [], [], []
    for t in range(n):
        R = _rotation([0, 1, 0], 0.01 * t).T
        c = np.array([0.04 * t, 0.01 * t, 0.0])
        extrinsic.append(np.concatenate((R, (-R @ c)[:, None]), axis=1))
        d = rays @ R  # world ray directions with unit camera-space z
        wall = (4.0 - np.array([0.1, 0, 1]) @ c) / (d @ np.array([0.1, 0, 1]))
        near = (1.5 - c[2]) / d[..., 2]
        hit = c + near[..., None] * d
        inside = (np.abs(hit[..., 0] - 0.1 - 0.02 * t) < 0.3) & (np.abs(hit[..., 1]) < 0.3)
        depth.append(np.where(inside, near, wall))
        fg.append(inside)
    return np.stack(extrinsic), np.stack(depth), np.stack(fg)


def _window(extrinsic, depth, sim3: Sim3 = Sim3(), conf=None) -> WindowPrediction:
    """The truth seen in another world frame: world x' = sim3(x), depth scaled by sim3.s."""
    E = transform_extrinsic(extrinsic, sim3)
    d = depth * sim3.s
    intrinsic = np.broadcast_to(K, (len(E), 3, 3))
    R, t = E[:, :, :3], E[:, :, 3]
    points = np.einsum("sji,shwj->shwi", R, camera_points(d, intrinsic) - t[:, None, None, :])
    conf = np.full(d.shape, 2.0) if conf is None else conf
    return WindowPrediction(E, intrinsic, d, conf, points, conf)


G = Sim3(0.8, _rotation([1, 2, 3], 0.4), np.array([0.3, -0.2, 0.5]))  # map frame -> window 2's frame


def _sim3_error(fit: Sim3, truth: Sim3) -> float:
    return max(abs(fit.s / truth.s - 1), np.abs(fit.R - truth.R).max(), np.abs(fit.t - truth.t).max())


def test_known_sim3_recovered_from_noiseless_overlap():
    E, D, _ = _scene(3)
    fit = estimate_window_sim3(_window(E, D), _window(E, D, G))
    assert fit.scale_from == "points" and fit.num_points > 1000
    assert _sim3_error(fit.sim3, G.inverse()) <= 1e-6


def test_sim3_stays_accurate_with_30_percent_outliers():
    rng = np.random.default_rng(1)
    E, D, _ = _scene(4)
    new = _window(E, D * (1 + 0.005 * rng.standard_normal(D.shape)), G)  # 0.5% depth noise
    bad = rng.random(D.shape) < 0.3
    new.depth[bad] *= rng.uniform(1.5, 4.0, bad.sum()) ** rng.choice([-1, 1], bad.sum())
    new.extrinsic[1] = transform_extrinsic(new.extrinsic[1:2], Sim3(1.0, _rotation([0, 0, 1], 0.5), np.ones(3)))[0]
    fit = estimate_window_sim3(_window(E, D), new)
    truth = G.inverse()
    # Tolerance: 1e-3 relative on s and absolute on t (the inliers carry 0.5% noise; plain
    # least squares is off by ~40% here), 1e-6 on R (3 of the 4 cameras are exact).
    assert abs(fit.sim3.s / truth.s - 1) <= 1e-3
    assert np.abs(fit.sim3.R - truth.R).max() <= 1e-6
    assert np.abs(fit.sim3.t - truth.t).max() <= 1e-3
    assert 0.6 <= fit.inlier_fraction <= 0.8  # the 30% corrupted pixels are rejected


def _abs_rel(pred, truth) -> float:
    return float(np.mean(np.abs(pred - truth) / truth))


def test_layerwise_alignment_fixes_per_layer_scale_errors():
    rng = np.random.default_rng(2)
    E, D, fg = _scene(10)
    noisy = D * (1 + 0.01 * rng.standard_normal(D.shape))
    first = _window(E[:6], noisy[:6])
    # Window 2 (frames 4..9): unknown Sim(3) with scale 0.8 (background at 0.8x truth), and the
    # foreground square at 1.5x truth, a depth-layer scale error no single Sim(3) can remove.
    second = _window(E[4:], noisy[4:] * np.where(fg[4:], 1.5 / 0.8, 1.0), G)
    errors = {}
    for layerwise in (False, True):
        out = align_windows([first, second], [0, 4], WindowConfig(6, 2, layerwise=layerwise))
        assert out[1].indices.tolist() == [6, 7, 8, 9]
        assert np.abs(out[1].prediction.extrinsic - E[6:]).max() <= 1e-6
        errors[layerwise] = _abs_rel(out[1].prediction.depth, D[6:])
    # Sim(3) alone leaves the square ~87% too far (~13% of the pixels); layers fix it to ~noise.
    assert errors[False] >= 0.08
    assert errors[True] <= 0.02
    assert errors[True] <= errors[False] / 5


def test_layer_segmentation_and_links():
    _, D, fg = _scene(2)
    labels = segment_depth_layers(D[0])
    assert labels.max() == 1  # wall and square
    assert len(np.unique(labels[fg[0]])) == 1 and len(np.unique(labels[~fg[0]])) == 1
    ia, ib, iou = link_segments(labels, segment_depth_layers(D[1]), 0.3)
    assert len(ia) == 2 and (iou > 0.8).all()


def test_parallel_segmentation_equals_serial():
    from recon.align.layerwise import LayerConfig, segment_layers

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:60, 0:80]
    depth = np.stack([2 + (xx > 30 + i) * 1.5 + (yy > 40) * 0.8 + rng.normal(0, 0.01, (60, 80)) for i in range(4)])
    serial = segment_layers(depth, LayerConfig(max_side=40))
    assert serial.max() >= 2  # several layers per frame: a comparison of real segmentations
    np.testing.assert_array_equal(segment_layers(depth, LayerConfig(max_side=40, workers=2)), serial)


def test_degenerate_inputs_stay_finite():
    E, D, _ = _scene(8)
    first = _window(E[:5], D[:5])
    # No confident overlap: window 2's shared frames have no valid depth -> scale from baselines.
    second = _window(E[3:], D[3:], G)
    second.depth[:2] = np.nan
    out = align_windows([first, second], [0, 3], WindowConfig(5, 2))
    assert out[1].fit.scale_from == "cameras"
    assert abs(out[1].fit.sim3.s / G.inverse().s - 1) <= 1e-6
    for w in out:
        for a in (w.prediction.extrinsic, w.prediction.depth, w.prediction.world_points):
            assert np.isfinite(a).all()
    # One shared camera and no depth: nothing fixes the scale, which stays 1.
    one = _window(E[4:], D[4:], G)
    one.depth[0] = 0.0
    fit = estimate_window_sim3(first.select(slice(4, 5)), one.select(slice(0, 1)))
    assert fit.scale_from == "none" and fit.sim3.s == 1.0 and np.isfinite(fit.sim3.t).all()
    # A single (short) window: all frames, world = first camera.
    assert window_ranges(4, 6, 2) == [(0, 4)] and window_ranges(12, 6, 2) == [(0, 6), (4, 10), (8, 12)]
    (only,) = align_windows([_window(E[:4], D[:4], G)], [0])
    assert only.indices.tolist() == [0, 1, 2, 3]
    # (the rigid part of G is undone; its scale is the window's own, which nothing fixes)
    assert np.abs(only.prediction.extrinsic - transform_extrinsic(E[:4], Sim3(G.s))).max() <= 1e-9
    # Empty masks: no valid depth anywhere -> no layers, no links, factors of 1.
    empty = np.full((H, W), np.nan)
    assert (segment_depth_layers(empty) == -1).all()
    assert all(len(x) == 0 for x in link_segments(np.full((H, W), -1), np.zeros((H, W), dtype=int), 0.3))
    blank = _window(E[:3], np.full((3, H, W), np.nan))
    layers = layerwise_corrections(blank, blank.select(slice(0, 2)), config=LayerConfig())
    assert (layers.scale == 1.0).all() and layers.measured_layers == 0
    with pytest.raises(ValueError, match="no usable correspondence"):
        robust_scale(np.zeros(5), np.ones(5))
    with pytest.raises(ValueError, match="overlap=6"):
        WindowConfig(size=6, overlap=6)
    aligner = WindowAligner(WindowConfig(5, 2))
    aligner.add(first, 0)
    with pytest.raises(ValueError, match="must overlap"):
        aligner.add(second, 7)


@pytest.fixture(scope="module")
def model():
    return randomize_(GeometryTransformer(REDUCED), seed=5).eval()


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(42, 70, 3, generator=g) * 255).to(torch.uint8).numpy() for _ in range(12)]


@pytest.fixture(scope="module")
def streamed(model, frames):
    """12 frames through `window` with W=6, O=2: (reconstructor, predictions returned per call)."""
    rec = Reconstructor(model, memory="window", device="cpu", width=70, size=6, overlap=2)
    batches = [rec.push(f, timestamp=float(i)) for i, f in enumerate(frames)]
    return rec, batches + [rec.flush()]


def test_window_strategy_streams_every_frame_once_in_order(streamed, frames):
    rec, batches = streamed
    indices = [[p.index for p in b] for b in batches]
    # A window's new frames come out with the push that completes it; the rest on flush.
    assert [b for b in indices if b] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9], [10, 11]]
    assert indices[5] and indices[9] and indices[12] and rec.flush() == []
    assert [p.timestamp for b in batches for p in b] == [float(i) for i in range(12)]
    # Bounded memory: only the overlap's frames stay buffered, the map keeps O frames.
    assert len(rec.state._pending) == 2 and len(rec.state.aligner._map.indices) == 2
    with pytest.raises(ValueError, match="push"):
        rec.step(frames[0])


def test_window_strategy_predictions_are_finite_and_in_first_window_frame(model, frames, streamed):
    rec, batches = streamed
    preds = [p for b in batches for p in b]
    for p in preds:
        assert p.depth.shape == (42, 70) and p.world_points.shape == (42, 70, 3)
        # (not the intrinsic: the random model predicts fov 0, an infinite focal, and it is
        # passed through untouched)
        for a in (p.extrinsic, p.depth, p.depth_conf, p.world_points, p.points_conf):
            assert np.isfinite(a).all()
    assert np.abs(preds[0].extrinsic - np.eye(3, 4)).max() <= 1e-5
    # The first window is the bidirectional forward with its first camera moved to the origin.
    images = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames[:6]])[None]
    with torch.no_grad():
        raw = WindowPrediction.from_model_output(model(images, causal=False))
    E0 = raw.extrinsic[0]
    expected = transform_extrinsic(raw.extrinsic, Sim3(1.0, E0[:, :3], E0[:, 3]))
    assert np.abs(np.stack([p.extrinsic for p in preds[:6]]) - expected).max() <= 1e-4
    assert np.abs(np.stack([p.depth for p in preds[:6]]) - raw.depth).max() <= 1e-4
    assert np.array_equal(np.stack([p.intrinsic for p in preds[:6]]), raw.intrinsic.astype(np.float32))
    assert rec.state.last_window.fit.scale_from == "points"


def test_per_frame_strategies_push_one_prediction(model, frames):
    rec = Reconstructor(model, memory="full", device="cpu", width=70)
    assert [p.index for p in rec.push(frames[0])] == [0] and rec.flush() == []
