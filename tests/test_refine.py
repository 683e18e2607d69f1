"""recon.refine: features in the project's pixel convention, bundle adjustment with depth priors
and self-calibration, and the streaming refiner on rendered scenes (ground-truth depth stands in
for a good model; the model's cameras are replaced by wrong ones that the refiner must fix)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon.datasets.synthetic import render_batch
from recon.datasets.trajectory import Trajectory
from recon.eval import sim3_scores
from recon.preprocess import preprocess_frame
from recon.refine import BundleProblem, PoseRefiner, RefineConfig, SiftFeatures, bundle_adjust
from recon.align.prediction import world_points_from_depth
from recon.refine.depth_fit import fit_depth, sample_depth
from recon.refine.refiner import lift, spread_track
from recon.session import FramePrediction


@pytest.fixture(scope="module")
def clip():
    b = render_batch([1000], 12, 224, 224, families=["room"], trajectories=["handheld"])
    return {k: v[0].double().numpy() if v.dtype.is_floating_point else v[0].numpy() for k, v in b.items()}


def _prediction(clip, i: int, extrinsic: np.ndarray, intrinsic: np.ndarray | None = None) -> FramePrediction:
    image = clip["images"][i].transpose(1, 2, 0).astype(np.float32)
    transform = preprocess_frame((image * 255).astype(np.uint8), target_width=224).transform
    depth = np.where(clip["valid"][i] & (clip["depth"][i] > 0), clip["depth"][i], np.nan).astype(np.float32)
    K = (clip["intrinsic"][i] if intrinsic is None else intrinsic).astype(np.float32)
    ones = np.ones_like(depth)
    return FramePrediction(
        index=i, timestamp=float(i), extrinsic=extrinsic.astype(np.float32), intrinsic=K, intrinsic_original=K,
        depth=depth, depth_conf=ones, world_points=np.zeros(depth.shape + (3,), np.float32), points_conf=ones,
        image=image, transform=transform,
    )  # fmt: skip


def _centres(extrinsic: np.ndarray) -> np.ndarray:
    return -np.einsum("sji,sj->si", extrinsic[:, :, :3], extrinsic[:, :, 3])


def test_keypoints_follow_the_pixel_convention_and_matches_recover_a_shift(clip):
    image = (clip["images"][0].transpose(1, 2, 0) * 255).astype(np.uint8)
    shifted = np.zeros_like(image)
    shifted[:, 7:] = image[:, :-7]  # content moves 7 px to the right
    sift = SiftFeatures()
    a, b = sift.detect(image), sift.detect(shifted)
    pairs = sift.match(a.descriptors, b.descriptors)
    assert len(pairs) > 50
    offset = b.xy[pairs[:, 1]] - a.xy[pairs[:, 0]]
    assert np.median(offset[:, 0]) == pytest.approx(7.0, abs=0.05)
    assert np.median(offset[:, 1]) == pytest.approx(0.0, abs=0.05)
    # Mutual check: no train keypoint is used twice.
    assert len(np.unique(pairs[:, 1])) == len(pairs)


def test_sample_depth_is_bilinear_at_pixel_centres():
    depth = np.arange(12.0).reshape(3, 4)
    xy = np.array([[0.5, 0.5], [3.5, 2.5], [1.0, 0.5], [1.0, 1.0], [0.2, 1.5], [2.0, 3.2]])
    got = sample_depth(depth, xy)
    assert got[0] == 0.0 and got[1] == 11.0
    assert got[2] == pytest.approx(0.5)  # halfway between pixels (0, 0) and (0, 1)
    assert got[3] == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert np.isnan(got[4]) and np.isnan(got[5])  # outside the pixel-centre grid


def test_fit_depth_corrects_each_surface_from_its_own_measurements():
    """Two surfaces, each off by its own factor; sparse true depths on both bring the map back,
    and the range term keeps one surface's correction off the other."""
    H, W = 64, 96
    truth = np.where(np.arange(W)[None, :] < 48, 2.0, 5.0) * np.ones((H, 1))
    model = truth * np.where(np.arange(W)[None, :] < 48, 1.25, 0.8)
    model[5, 7] = np.nan
    rng = np.random.default_rng(0)
    xy = np.stack((rng.uniform(2, 44, 40), rng.uniform(2, 62, 40)), 1)  # many on the left ...
    right = np.stack(np.meshgrid([60.5, 84.5], [10.5, 32.5, 54.5]), -1).reshape(-1, 2)  # ... six on the right
    xy = np.concatenate((xy, right))
    fitted = fit_depth(model, xy, sample_depth(truth, xy))
    assert np.isnan(fitted[5, 7])  # invalid pixels stay invalid
    ok = np.isfinite(fitted)
    # Each surface takes its own factor, even next to the step where the other's measurements are near.
    assert np.abs(fitted[ok] / truth[ok] - 1).max() < 5e-3
    blurred = fit_depth(model, xy, sample_depth(truth, xy), sigma_log=1e3)  # no range term
    assert np.abs(blurred[ok] / truth[ok] - 1).max() > 0.05
    # Without measurements the depth comes back unchanged; zero weights count as none.
    assert np.array_equal(fit_depth(model, xy[:0], np.zeros(0)), model, equal_nan=True)
    assert np.array_equal(fit_depth(model, xy, sample_depth(truth, xy), np.zeros(len(xy))), model, equal_nan=True)


def test_fit_depth_falls_back_to_the_median_ratio_far_from_measurements():
    model = np.full((40, 200), 3.0)
    xy = np.array([[5.5, 20.5], [6.5, 21.5], [7.5, 19.5]])
    fitted = fit_depth(model, xy, np.array([3.3, 3.3, 3.3]), sigma_px=4.0)
    assert fitted[20, 6] == pytest.approx(3.3)
    assert fitted[20, 190] == pytest.approx(3.3)  # out of reach: the median ratio, not nothing


def _smooth_depth_error(i: int) -> np.ndarray:
    """A model-like depth error: smooth over the image, different in every frame, +-15 %."""
    y, x = np.mgrid[0:224, 0:224] / 224.0
    return np.exp(0.15 * np.sin(2.5 * x + 0.7 * i) * np.cos(1.5 * y - 0.3 * i))


def test_finish_adjusts_the_whole_stream_and_fits_the_depth_to_it(clip):
    gt = clip["extrinsic"]
    n = len(gt)
    refiner = PoseRefiner()
    streamed = []
    for i in range(n):
        pred = _prediction(clip, i, np.eye(4)[:3])
        streamed.append(refiner.refine(dataclasses.replace(pred, depth=pred.depth * _smooth_depth_error(i).astype(np.float32))))
    revised = refiner.finish()
    assert [p.index for p in revised] == list(range(n))
    assert refiner.frames == [] and len(refiner.history) == 0 and refiner.landmark_at == {}  # a new stream

    def abs_rel(preds):  # one median scale for the sequence, as recon.evaluate
        d = np.stack([p.depth for p in preds]).astype(np.float64)
        ok = np.isfinite(d) & np.isfinite(clip["depth"]) & clip["valid"] & (clip["depth"] > 0)
        s = np.median(clip["depth"][ok]) / np.median(d[ok])
        return np.mean(np.abs(s * d[ok] - clip["depth"][ok]) / clip["depth"][ok])

    before, after = abs_rel(streamed), abs_rel(revised)
    assert before > 0.04 and after < 0.8 * before

    def ate(preds):  # after Sim(3) alignment, as recon.evaluate
        times = np.arange(n, dtype=np.float64)
        est = Trajectory.from_extrinsics(np.stack([p.extrinsic for p in preds]).astype(np.float64), times)
        return sim3_scores(Trajectory.from_extrinsics(gt, times), est)[0]["ate_rmse"]

    assert ate(revised) <= ate(streamed) * 1.05
    # World points follow the revised camera and the fitted depth.
    p = revised[-1]
    X = lift(np.array([[60.5, 100.5]]), np.array([p.depth[100, 60]], np.float64), p.extrinsic.astype(np.float64),
             p.intrinsic.astype(np.float64))  # fmt: skip
    assert np.allclose(p.world_points[100, 60], X[0], atol=1e-4)


def _final_abs_rel(clip, config: RefineConfig, error: np.ndarray) -> float:
    """AbsRel (one median scale) of `finish`'s depths for the clip streamed with depth * error [S, H, W]."""
    refiner = PoseRefiner(config)
    for i in range(len(clip["extrinsic"])):
        pred = _prediction(clip, i, np.eye(4)[:3])
        refiner.refine(dataclasses.replace(pred, depth=pred.depth * error[i].astype(np.float32)))
    d = np.stack([p.depth for p in refiner.finish()]).astype(np.float64)
    ok = np.isfinite(d) & clip["valid"] & (clip["depth"] > 0)
    s = np.median(clip["depth"][ok]) / np.median(d[ok])
    return np.mean(np.abs(s * d[ok] - clip["depth"][ok]) / clip["depth"][ok])


def test_finish_fuses_each_frame_depth_with_its_neighbours(clip):
    """Per-pixel noise the landmarks cannot see (it differs from frame to frame) is what the
    median over the neighbours' reprojected depths removes; without the fusion it stays."""
    rng = np.random.default_rng(4)
    noise = np.exp(rng.normal(0, 0.1, clip["depth"].shape))
    unfused = _final_abs_rel(clip, RefineConfig(fuse_radius=0), noise)
    fused = _final_abs_rel(clip, RefineConfig(sweep=None), noise)
    assert unfused > 0.05 and fused < 0.7 * unfused


def test_finish_measures_the_depth_from_the_images(clip):
    """The same smooth depth error in every frame is one the fusion cannot remove (the
    neighbours' reprojected depths carry it too); the plane sweep against the neighbours' images
    measures part of it away, even from this clip's short baselines (at most 4 % of the depth).
    The landmark fit is off, so the sweep is what changes."""
    error = np.stack([_smooth_depth_error(0)] * len(clip["extrinsic"]))
    fused = _final_abs_rel(clip, RefineConfig(fit_depth=False, sweep=None), error)
    swept = _final_abs_rel(clip, RefineConfig(fit_depth=False), error)
    assert fused > 0.03 and swept < 0.85 * fused, (fused, swept)


def test_scale_hold_keeps_the_map_scale_unless_it_drifts_or_the_stream_started_earlier():
    refiner = PoseRefiner(RefineConfig(min_inliers=3, fit_max_scale_drift=1.0))
    frame = np.repeat(np.arange(4), 5)
    model_depth = np.full(20, 2.0)
    good = np.ones(20, bool)

    def factors(log_ratios, from_start=True):
        z = model_depth * np.exp(np.repeat(log_ratios, 5))
        per_frame = [np.flatnonzero(good & (frame == j)) for j in range(4)]
        return np.log(refiner._scale_hold(per_frame, z, model_depth, from_start))

    jitter = np.array([0.3, 0.1, -0.2, 0.0])  # the model's per-frame scale jitter: the map's scale is kept
    np.testing.assert_allclose(factors(jitter), 0.0, atol=1e-12)
    drift = np.array([0.0, 1.0, 2.0, 3.0])  # the map drifts: every frame is brought to the median ratio
    np.testing.assert_allclose(factors(drift) + drift, np.median(drift))
    # Frames before the kept ones keep the model's depth: the kept ones come to its scale too.
    np.testing.assert_allclose(factors(jitter + 2.0, from_start=False) + jitter + 2.0, jitter - np.median(jitter))


def test_finish_covers_the_last_final_frames_only_or_nothing(clip):
    refiner = PoseRefiner(RefineConfig(final_frames=5))
    for i in range(9):
        refiner.refine(_prediction(clip, i, np.eye(4)[:3]))
    assert len(refiner.history) <= 5
    revised = refiner.finish()
    assert [p.index for p in revised] == [4, 5, 6, 7, 8]
    refiner = PoseRefiner(RefineConfig(final_frames=0))
    for i in range(4):
        refiner.refine(_prediction(clip, i, np.eye(4)[:3]))
    assert refiner.finish() == [] and len(refiner.history) == 0




def test_a_focal_jump_lifts_the_window_landmarks_through_the_new_camera(clip):
    refiner = PoseRefiner(RefineConfig(calibrate=False, self_calibrate=False))
    for i in range(3):
        refiner.refine(_prediction(clip, i, np.eye(4)[:3]))
    K_new = refiner.intrinsic.copy()
    K_new[:2, :2] *= 1.5

    def reprojection_error(K):
        f = refiner.frames[-1]
        Xc = refiner.points[f.landmark] @ f.extrinsic[:, :3].T + f.extrinsic[:, 3]
        return np.abs(Xc[:, :2] / Xc[:, 2:] @ K[:2, :2].T + K[:2, 2] - f.xy).max()

    assert reprojection_error(K_new) > 5.0  # lifted through the old camera
    refiner._calibrated = K_new[0, 0]  # as when the focal estimator first has an answer
    refiner._stream_intrinsic(clip["intrinsic"][3])
    assert np.allclose(refiner.intrinsic, K_new)
    assert reprojection_error(K_new) < 1e-6
    f = refiner.frames[-1]  # and at the depths they were observed at
    z = (refiner.points[f.landmark] @ f.extrinsic[:, :3].T + f.extrinsic[:, 3])[:, 2]
    assert np.allclose(z, f.depth)
    # a small change (below relift_log_focal) leaves the map alone
    before = refiner.points.copy()
    refiner._calibrated = K_new[0, 0] * 1.02
    refiner._stream_intrinsic(clip["intrinsic"][3])
    assert np.array_equal(refiner.points, before)



def test_final_adjustment_holds_a_frame_without_shared_landmarks(clip):
    refiner = PoseRefiner()
    streamed = []
    for i in range(8):
        pred = _prediction(clip, i, np.eye(4)[:3])
        if i == 4:  # texture in one small patch: no landmark it shares, its pose chained through the model's motion
            image = np.full_like(pred.image, 0.5)
            image[90:130, 90:130] = pred.image[90:130, 90:130]
            pred = dataclasses.replace(pred, image=image)
        streamed.append(refiner.refine(pred))
    revised = refiner.finish()
    assert [p.index for p in revised] == list(range(8))
    assert np.allclose(revised[4].extrinsic, streamed[4].extrinsic, atol=1e-6)
    gt = clip["extrinsic"]
    R0 = revised[0].extrinsic[:, :3].astype(np.float64)
    for p in revised:  # every other frame's rotation (relative to frame 0's) stays right
        if p.index != 4:
            R = (p.extrinsic[:, :3].astype(np.float64) @ R0.T) @ (gt[p.index, :, :3] @ gt[0, :, :3].T).T
            assert np.degrees(Rotation.from_matrix(R).magnitude()) < 1.0



def test_finish_keeps_the_streamed_results_when_the_adjustment_turns_a_camera_too_far(clip, caplog):
    limit = PoseRefiner(RefineConfig(final_max_rotation_deg=1e-9))  # any turn counts as diverged
    free = PoseRefiner()
    for i in range(6):
        limit.refine(_prediction(clip, i, np.eye(4)[:3]))
        free.refine(_prediction(clip, i, np.eye(4)[:3]))
    assert len(free.finish()) == 6 and 0 < free.final_turn_deg < 45
    with caplog.at_level("WARNING"):
        assert limit.finish() == []
    assert limit.final_turn_deg > 0 and "diverged" in caplog.text
    assert limit.frames == [] and len(limit.history) == 0  # still a new stream


def test_spread_track_keeps_at_most_the_cap_per_landmark_from_first_to_last():
    # landmark 0: a 100-frame track, 1: three frames, 2: exactly the cap; interleaved as in a stream
    point = np.concatenate([np.repeat([0, 1, 2], [1, 1, 1]), np.zeros(96, int), np.array([1, 1]),
                            np.full(7, 2), np.zeros(3, int)])  # fmt: skip
    keep = spread_track(point, 8)
    for landmark, length in ((0, 100), (1, 3), (2, 8)):
        own = np.flatnonzero(point == landmark)
        assert len(own) == length
        kept = own[keep[own]]
        assert len(kept) == min(length, 8)
        assert kept[0] == own[0] and kept[-1] == own[-1]  # the whole track's span
    gaps = np.diff(np.flatnonzero(keep[point == 0]))
    assert gaps.max() - gaps.min() <= 1  # evenly spread


def test_capped_tracks_still_revise_every_frame(clip):
    refiner = PoseRefiner(RefineConfig(final_max_track=3))
    n = len(clip["extrinsic"])
    for i in range(n):
        refiner.refine(_prediction(clip, i, np.eye(4)[:3]))
    revised = refiner.finish()
    assert [p.index for p in revised] == list(range(n))
    assert all(np.isfinite(p.extrinsic).all() and np.isfinite(p.depth).all() for p in revised)


def _problem(rng, focal_scale: float = 1.0):
    """Three cameras looking at a cloud of points; frame 0 held."""
    points = rng.uniform([-1, -1, 3], [1, 1, 6], (80, 3))
    K = np.array([[200.0, 0, 112], [0, 200.0, 112], [0, 0, 1]])
    extrinsic = []
    for k in range(3):
        R = Rotation.from_rotvec([0.02 * k, -0.08 * k, 0.01 * k]).as_matrix()
        extrinsic.append(np.concatenate((R, (-R @ np.array([0.4 * k, 0.05 * k, 0.1 * k]))[:, None]), 1))
    extrinsic = np.stack(extrinsic)
    frame = np.repeat(np.arange(3), len(points))
    point = np.tile(np.arange(len(points)), 3)
    Xc = np.einsum("mij,mj->mi", extrinsic[frame, :, :3], points[point]) + extrinsic[frame, :, 3]
    xy = Xc[:, :2] / Xc[:, 2:] * 200.0 + 112.0
    problem = BundleProblem(
        extrinsic=extrinsic.copy(), intrinsic=np.stack([K] * 3), free=np.array([False, True, True]),
        points=points.copy(), frame=frame, point=point, xy=xy, depth=Xc[:, 2].copy(),
    )  # fmt: skip
    problem.intrinsic[:, :2, :2] *= focal_scale
    return problem, extrinsic, points


@pytest.mark.parametrize("walk", [None, 0.1])
def test_bundle_jacobian_matches_central_differences_away_from_the_start(walk):
    from recon.refine.bundle import _jacobian, _residuals

    rng = np.random.default_rng(3)
    problem, _, _ = _problem(rng)
    problem.focal_prior = (0.05, 0.3)
    problem.depth_scale_walk = walk
    poses = np.concatenate((rng.normal(0, 0.2, (2, 3)), problem.extrinsic[problem.free, :, 3]), 1).ravel()
    scales = [] if walk is None else [0.2, -0.1]
    x = np.concatenate((poses, problem.points.ravel() + rng.normal(0, 0.1, problem.points.size), scales, [0.1]))
    J = _jacobian(x, problem, 1.5, 0.2).toarray()
    numeric = np.zeros_like(J)
    for i in range(len(x)):
        step = np.zeros(len(x))
        step[i] = 1e-6
        numeric[:, i] = (_residuals(x + step, problem, 1.5, 0.2) - _residuals(x - step, problem, 1.5, 0.2)) / 2e-6
    assert np.abs(numeric).max() > 100
    np.testing.assert_allclose(J, numeric, atol=1e-5)


def test_schur_solver_reaches_the_trust_region_minimum_in_fewer_evaluations():
    """recon.refine.solver against scipy's trust region (the reference) on a noisy problem with
    a wrong match, a perturbed start and the focal free."""
    from recon.refine.bundle import _jacobian, _residuals
    from recon.refine.solver import levenberg_marquardt, soft_l1_cost
    from scipy.optimize import least_squares

    rng = np.random.default_rng(5)
    problem, _, _ = _problem(rng, focal_scale=1.1)
    problem.focal_prior = (0.0, 0.3)
    problem.xy = problem.xy + rng.normal(0, 0.5, problem.xy.shape)
    problem.xy[7] += 40.0  # a wrong match
    problem.depth = problem.depth * np.exp(rng.normal(0, 0.1, len(problem.depth)))
    problem.points = problem.points + rng.normal(0, 0.05, problem.points.shape)
    x0 = np.concatenate((np.concatenate((np.zeros((2, 3)), problem.extrinsic[1:, :, 3] + 0.05), 1).ravel(),
                         problem.points.ravel(), [0.0]))  # fmt: skip
    args = (problem, 1.0, 0.15)
    reference = least_squares(_residuals, x0, jac=_jacobian, method="trf", loss="soft_l1", f_scale=3.0,
                              x_scale="jac", max_nfev=500, args=args)  # fmt: skip
    calls = []

    def fun(x):
        calls.append(1)
        return _residuals(x, *args)

    x = levenberg_marquardt(fun, lambda x: _jacobian(x, *args), x0, slice(12, 12 + 3 * len(problem.points)), 50)
    assert soft_l1_cost(_residuals(x, *args), 3.0) <= reference.cost * (1 + 1e-6)
    assert len(calls) < reference.nfev
    # ... and it is a minimum: the reweighted gradient vanishes there.
    r, J = _residuals(x, *args), _jacobian(x, *args)
    gradient = J.T @ (r / np.sqrt(1 + (r / 3.0) ** 2))
    assert np.abs(gradient).max() < 1e-3 * np.abs(J.T @ _residuals(x0, *args)).max()


def test_bundle_adjustment_recovers_perturbed_poses_and_points_and_holds_the_gauge():
    rng = np.random.default_rng(0)
    problem, extrinsic, points = _problem(rng)
    problem.extrinsic[1:, :, 3] += rng.normal(0, 0.05, (2, 3))
    problem.extrinsic[1:, :, :3] = Rotation.from_rotvec(rng.normal(0, 0.02, (2, 3))).as_matrix() @ problem.extrinsic[1:, :, :3]
    problem.points += rng.normal(0, 0.05, points.shape)
    out, X, error, log_focal, _ = bundle_adjust(problem, max_iterations=50)
    assert np.abs(out - extrinsic).max() < 1e-5
    assert np.abs(X - points).max() < 1e-5
    assert error.max() < 1e-3 and log_focal == 0.0
    assert np.array_equal(out[0], extrinsic[0])  # the held frame does not move


def test_depth_scale_walk_keeps_a_rotating_stream_at_its_first_frame_scale():
    """Cameras turning about one centre: the landmarks' depths rest on the depth priors alone. A
    frame whose model depth drifted 1.5x pulls the shared landmarks off without per-frame scales;
    with them its scale is estimated and the landmarks keep the held frame's scale."""
    rng = np.random.default_rng(2)
    points = rng.uniform([-1.5, -1.5, 3], [1.5, 1.5, 6], (80, 3))
    K = np.array([[200.0, 0, 112], [0, 200.0, 112], [0, 0, 1]])
    R = Rotation.from_rotvec([[0, 0, 0], [0, 0.05, 0], [0.02, 0.1, 0]]).as_matrix()
    extrinsic = np.concatenate((R, np.zeros((3, 3, 1))), axis=2)
    frame, point = np.repeat(np.arange(3), len(points)), np.tile(np.arange(len(points)), 3)
    Xc = np.einsum("mij,mj->mi", R[frame], points[point])
    drift = np.array([1.0, 1.0, 1.5])[frame]
    problem = BundleProblem(
        extrinsic=extrinsic, intrinsic=np.stack([K] * 3), free=np.array([False, True, True]),
        points=points * 1.1, frame=frame, point=point, xy=Xc[:, :2] / Xc[:, 2:] * 200.0 + 112.0,
        depth=Xc[:, 2] * drift,
    )  # fmt: skip

    def depth_error(result) -> float:
        return float(np.median(np.abs(np.log(np.linalg.norm(result.points, axis=1) / np.linalg.norm(points, axis=1)))))

    without = bundle_adjust(problem, max_iterations=100, solver="schur")
    problem.depth_scale_walk = 0.2
    walk = bundle_adjust(problem, max_iterations=100, solver="schur")
    assert depth_error(without) > 0.1  # about log(1.5) / 3
    assert depth_error(walk) < 0.02
    assert walk.log_depth_scale[0] == 0.0
    assert walk.log_depth_scale[2] == pytest.approx(-np.log(1.5), abs=0.05)  # map depth = prior * exp(s)
    assert np.median(walk.error) < 0.05


def test_bundle_adjustment_self_calibrates_the_focal_length():
    rng = np.random.default_rng(1)
    problem, extrinsic, points = _problem(rng, focal_scale=0.8)  # the model's focal is 20 % short
    problem.points = lift(problem.xy[: len(points)], problem.depth[: len(points)], extrinsic[0], problem.intrinsic[0])
    problem.focal_prior = (0.0, 1.0)  # a weak prior at the wrong focal
    out, _, error, log_focal, _ = bundle_adjust(problem, max_iterations=100)
    assert np.exp(log_focal) * 0.8 == pytest.approx(1.0, abs=0.01)
    assert np.median(error) < 0.05
    problem.focal_prior = None  # held at the wrong focal, the cameras come out wrong
    held, _, _, _, _ = bundle_adjust(problem, max_iterations=100)
    calibrated_error = np.abs(_centres(out) - _centres(extrinsic)).max()
    assert calibrated_error < 0.01
    assert np.abs(_centres(held) - _centres(extrinsic)).max() > 3 * calibrated_error


def test_refiner_recovers_the_trajectory_from_depth_when_the_model_cameras_are_wrong(clip):
    gt = clip["extrinsic"]
    refiner = PoseRefiner()
    out = [refiner.refine(_prediction(clip, i, np.eye(4)[:3])) for i in range(len(gt))]  # model: no motion
    est = np.stack([p.extrinsic for p in out]).astype(np.float64)
    gt_rel = np.stack([e[:, :3] @ gt[0, :, :3].T for e in gt])  # rotations relative to frame 0
    rot_err = Rotation.from_matrix(est[:, :, :3] @ np.swapaxes(gt_rel, 1, 2)).magnitude()
    assert np.degrees(rot_err).max() < 0.5
    gt_c = _centres(np.concatenate((gt_rel, np.stack([e[:, 3] - e[:, :3] @ gt[0, :, :3].T @ gt[0, :, 3]
                                                         for e in gt])[..., None]), -1))  # fmt: skip
    path = np.linalg.norm(np.diff(gt_c, axis=0), axis=1).sum()
    assert path > 0.15  # the camera moves: a no-motion model is far off
    assert np.linalg.norm(_centres(est) - gt_c, axis=1).max() < 0.05 * path  # ~0.5 px of SIFT noise at 3 m
    assert refiner.stats["solved"] == len(gt) - 1
    # World points are the depth unprojected with the refined camera.
    p = out[-1]
    v, u = 100, 60
    X = lift(np.array([[u + 0.5, v + 0.5]]), np.array([p.depth[v, u]], np.float64), p.extrinsic.astype(np.float64),
             p.intrinsic.astype(np.float64))  # fmt: skip
    assert np.allclose(p.world_points[v, u], X[0], atol=1e-4)


def test_refiner_self_calibrates_a_wrong_focal(clip):
    K = clip["intrinsic"][0].copy()
    K[:2, :2] *= 1.15
    refiner = PoseRefiner()
    out = [refiner.refine(_prediction(clip, i, np.eye(4)[:3], K)) for i in range(len(clip["extrinsic"]))]
    focal = out[-1].intrinsic[0, 0] / clip["intrinsic"][0, 0, 0]
    assert abs(focal - 1.0) < abs(1.15 - 1.0) / 2  # at least half the error removed


def test_refiner_chains_the_model_motion_without_features_and_stays_bounded(clip):
    config = RefineConfig(window=3, match_frames=2, focal_history=5)
    refiner = PoseRefiner(config)
    blank = dict(clip)
    blank["images"] = np.full_like(clip["images"], 0.5)  # nothing to detect
    out = []
    for i in range(8):
        model = np.concatenate((np.eye(3), np.array([[0.0], [0.0], [-0.1 * i]])), 1)
        out.append(refiner.refine(_prediction(blank, i, model)))
    assert np.allclose(out[-1].extrinsic, np.concatenate((np.eye(3), [[0], [0], [-0.7]]), 1), atol=1e-6)
    assert refiner.stats == {"solved": 0, "chained": 7}
    # Textured frames: the window and the landmark map stay bounded.
    refiner.reset()
    for i in range(12):
        refiner.refine(_prediction(clip, i, np.eye(4)[:3]))
    assert len(refiner.frames) <= config.window + 1
    assert len(refiner.points) < (config.window + config.match_frames + 2) * refiner.config.max_features
    assert len(refiner.focals) == config.focal_history


def test_session_hands_subscribers_refined_predictions(clip):
    import torch

    from recon.config import get_preset
    from recon.model import build_model
    from recon.session import Reconstructor

    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).eval()
    plain = Reconstructor(model, memory="full", device="cpu")
    refined = Reconstructor(model, memory="full", device="cpu", refine=True)
    frames = [(clip["images"][i].transpose(1, 2, 0) * 255).astype(np.uint8) for i in range(3)]
    a = [plain.push(f)[0] for f in frames]
    b = [refined.push(f)[0] for f in frames]
    assert refined.refiner.stats["solved"] + refined.refiner.stats["chained"] == 2
    assert np.array_equal(a[2].depth, b[2].depth)  # the model's output is untouched ...
    p = b[2]  # ... and the world points follow the refined camera
    X = lift(np.array([[10.5, 20.5]]), np.array([p.depth[20, 10]], np.float64), p.extrinsic.astype(np.float64),
             p.intrinsic.astype(np.float64))  # fmt: skip
    assert np.allclose(p.world_points[20, 10], X[0], atol=1e-4)
    refined.reset()
    assert refined.refiner.frames == [] and refined.refiner.stats == {"solved": 0, "chained": 0}


def test_refined_head_points_keep_their_geometry_in_the_refined_camera(clip):
    """With world_points="head" the point head's points are moved with the camera, not
    replaced by unprojected depth."""
    from recon.checkpoint import load_model
    from recon.session import Reconstructor

    model, _ = load_model("tiny")  # shipped weights: depth good enough to re-solve the camera
    plain = Reconstructor(model, memory="full", device="cpu", world_points="head")
    refined = Reconstructor(model, memory="full", device="cpu", world_points="head", refine=True)
    frames = [(clip["images"][i].transpose(1, 2, 0) * 255).astype(np.uint8) for i in range(3)]
    a = [plain.push(f)[0] for f in frames][2]
    b = [refined.push(f)[0] for f in frames][2]

    def in_camera(p):
        E = p.extrinsic.astype(np.float64)
        return p.world_points.astype(np.float64) @ E[:, :3].T + E[:, 3]

    assert refined.refiner.stats["solved"] == 2
    assert not np.allclose(a.extrinsic, b.extrinsic, atol=1e-3)  # the camera was re-solved
    assert np.allclose(in_camera(a), in_camera(b), atol=1e-4)
    unprojected = world_points_from_depth(b.depth.astype(np.float64), b.extrinsic.astype(np.float64),
                                          b.intrinsic.astype(np.float64))  # fmt: skip
    assert not np.allclose(b.world_points, unprojected, atol=1e-2)  # head points, not depth


def _two_views(rng, rotvec, translation, focal=180.0, n=200, planar=False):
    X = rng.uniform([-2, -2, 4], [2, 2, 9], (n, 3))
    if planar:
        X[:, 2] = 6.0
    K = np.array([[focal, 0, 112], [0, focal, 112], [0, 0, 1]])
    R = Rotation.from_rotvec(rotvec).as_matrix()
    x1 = X @ K.T
    x2 = (X @ R.T + translation) @ K.T
    return x1[:, :2] / x1[:, 2:], x2[:, :2] / x2[:, 2:]


def test_essential_cost_is_zero_at_the_true_focal_only():
    from recon.refine.calibrate import essential_cost

    rng = np.random.default_rng(3)
    a, b = _two_views(rng, [0.02, 0.1, 0.01], [0.4, 0.05, 0.1])
    F, _ = cv2.findFundamentalMat(a, b, cv2.FM_8POINT)
    cost = essential_cost(F, np.array([120.0, 180.0, 260.0]), (112.0, 112.0))
    assert cost[1] < 1e-4 and cost[0] > 100 * cost[1] and cost[2] > 100 * cost[1]


def test_focal_estimator_recovers_the_focal_and_skips_uninformative_pairs():
    from recon.refine.calibrate import FocalEstimator

    rng = np.random.default_rng(4)
    est = FocalEstimator(224, 224, min_pairs=3)
    assert not est.add_pair(*_two_views(rng, [0.0, 0.1, 0.0], [0.0, 0.0, 0.0]))  # rotation only
    assert not est.add_pair(*_two_views(rng, [0.02, 0.1, 0.0], [0.4, 0.0, 0.1], planar=True))  # one plane
    for k in range(3):
        assert est.add_pair(*_two_views(rng, rng.normal(0, 0.08, 3), rng.normal(0, 0.3, 3)))
    assert est.focal() == pytest.approx(180.0, rel=0.01)
    # A prior pulls a weakly determined estimate, not a well determined one, much.
    assert est.focal(prior=150.0, weight=1e-4) == pytest.approx(180.0, rel=0.02)
