"""Streaming geometric refinement of the model's cameras (a visual-odometry back end).

The model gives every frame a depth map, intrinsics and a camera. Its depth is good enough to
lift image features to 3D, while its camera head is the weakest output (docs/MODEL_CARD.md),
so, as in MASt3R-SLAM's and VGGT's optimisation back ends, each frame's camera is re-solved
against a map of landmarks:
  1. SIFT keypoints of the frame are matched to the landmarks seen in the last `match_frames`
     frames (ratio test, mutual check);
  2. the pose comes from PnP + RANSAC on those matches (OpenCV), refined by Levenberg-Marquardt
     on the inliers; with too few inliers, the model's own frame-to-frame motion is chained on.
     The frame's depth is scaled to the map's (median ratio over the inliers): the model's
     depth scale wanders along a stream, the map keeps frame 0's;
  3. a bundle adjustment over the last `window` frames (recon.refine.bundle: reprojection +
     the model's depth as a prior) moves the poses and landmarks; the oldest frame of the
     window (and frame 0) are held, fixing the gauge; the depth priors fix the scale;
  4. keypoints without a landmark start one, lifted with the frame's depth;
  5. one focal length for the stream (square pixels, principal point kept): the model's
     per-frame focal is off by up to 70 % on the held-out scenes (docs/MODEL_CARD.md,
     session 8), and the cameras inherit that error. The
     matches between the newest and the oldest frame of the window feed a Mendonca-Cipolla
     estimate (recon.refine.calibrate), adopted, with a prior at the model's median focal, once
     `calibration_pairs` informative pairs were seen; until then the adjustment estimates the
     focal itself around the model's median. When the adopted focal differs from the window's by
     more than `relift_log_focal`, the window's landmarks are lifted again through the new camera.
Causal: a frame's refined camera is final when it is emitted (later adjustments of the window
do not re-emit it) -- until the stream ends. Then `finish()` adjusts the last `final_frames`
frames together (every landmark they share, a weak prior at the model's own depth: many views
triangulate what a window of six cannot) and fits each frame's depth to its adjusted landmarks
(recon.refine.depth_fit), weighting a landmark by how well its parallax determines its depth;
then each pixel takes the median of the depths its neighbours' maps give it once reprojected
(recon.refine.depth_fuse), is measured again from the images by a plane sweep around that depth
(recon.refine.depth_sweep: NCC against neighbours seen from a baseline; on `device`), and fused
once more. It returns those frames revised, for the exports and the evaluation
(recon.pipeline.run_stream).
On the 48-frame held-out benchmark this takes ATE from 2.9 % to 1.65 % and depth AbsRel from
0.150 to 0.096; over 500 frames (a 500-frame final adjustment, ~1 minute on a CPU with at most
`final_max_track` observations of a landmark) ATE 2.15 -> 0.83 % and AbsRel 0.200 -> 0.128
(`rolling`), but the map's scale can drift against the model's along such a stream, hence the
default of 64 frames (docs/MODEL_CARD.md, sessions 10 and 11). An adjustment that turns a camera
by more than `final_max_rotation_deg` is taken as diverged and not used. Memory is bounded: landmarks unseen for `window + match_frames` frames and
frames older than the window are dropped; the model's focal lengths are kept for the last
`focal_history` frames; the final adjustment keeps the observations and the emitted prediction of
the last `final_frames` frames (about 2 MB a frame at 224 px).

World points: with world_points="depth" they are the model's depth unprojected through the
refined camera; with "head" (the point-map head's) each frame's points are carried rigidly
from the model's camera to the refined one, keeping the head's geometry.

The world stays the model's: first camera at the origin, the model's metric scale.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from recon.align.prediction import world_points_from_depth
from recon.align.rotation import rotation_angle_deg

from .bundle import BundleProblem, bundle_adjust, lift, project, scale_focal
from .calibrate import FocalEstimator
from .depth_fit import fit_depth, sample_depth
from .depth_fuse import fuse_depth
from .depth_sweep import SweepConfig, grey, sweep_depth
from .features import SiftFeatures

log = logging.getLogger(__name__)


@dataclass
class RefineConfig:
    window: int = 6  # frames adjusted together (plus one held frame)
    match_frames: int = 4  # landmarks seen this recently are matched against
    max_features: int = 1500
    ratio: float = 0.8  # Lowe's ratio test
    min_inliers: int = 15  # PnP inliers to trust the solved pose
    ransac_px: float = 2.0
    sigma_px: float = 1.0
    sigma_log_depth: float = 0.15
    outlier_px: float = 4.0  # observations farther than this after adjustment are dropped
    max_iterations: int = 15
    calibrate: bool = True  # the stream's focal from matches (recon.refine.calibrate) once known
    focal_prior_weight: float = 0.3  # of the model's median focal, against the mean pair cost
    calibration_pairs: int = 5  # informative view pairs before the estimate replaces the model's
    self_calibrate: bool = True  # until then, estimate it in the adjustment ...
    sigma_log_focal: float = 0.3  # ... with a prior at the model's median focal, within ~30 %
    relift_log_focal: float = 0.1  # a focal change beyond this (log) lifts the window's landmarks again
    focal_history: int = 256  # frames whose model focal lengths the running median takes
    # End of stream (`finish`): one adjustment over the last `final_frames` frames (0: none) ...
    final_frames: int = 64
    final_sigma_log_depth: float = 2.0  # a weak depth prior: the shared landmarks fix the structure
    # Each frame's depth prior up to its own log scale, changing by about this much a frame (BundleProblem;
    # None: off). Off by default: on 48 frames 0.02 helps a little (AbsRel 0.109 vs 0.111 before fusion),
    # but over 500 frames it frees the map's scale to drift (room-fast-1004: 0.12 -> 0.28).
    final_depth_scale_walk: float | None = None
    final_iterations: int = 50
    # Observations of one landmark in the adjustment, spread evenly along its track: the reduced
    # camera system costs the sum of squared track lengths, and tracks of hundreds of frames made
    # a 500-frame adjustment take minutes (the rest still feed the depth fit).
    final_max_track: int = 64
    final_max_rotation_deg: float = 45.0  # an adjustment turning any camera further has diverged: not used
    # ... and each frame's depth fitted to its landmarks (recon.refine.depth_fit)
    fit_depth: bool = True
    fit_max_px: float = 2.0  # landmarks reprojecting farther than this after the adjustment are not used
    fit_sigma_px: float = 12.0
    fit_sigma_log: float = 0.1
    fit_model_weight: float = 1e-3  # the model's own depth against one fully trusted landmark at the pixel
    # When the adjusted map's scale against the model's drifts along the kept frames by more than
    # this (log, 10th to 90th percentile of the frames' median ratios), each frame keeps the
    # model's scale (times one factor for all) and takes only the shape from its landmarks.
    fit_max_scale_drift: float = 1.0
    # ... then each pixel's depth is the median over the frames up to `fuse_radius` away that see
    # its surface within `fuse_max_log_diff` (recon.refine.depth_fuse; 0: off)
    fuse_radius: int = 24
    fuse_max_log_diff: float = 0.3
    # ... and, between two such fusions, measured from the images by a plane sweep around it
    # (recon.refine.depth_sweep; None: off; it needs the fusion on)
    sweep: SweepConfig | None = field(default_factory=SweepConfig)


@dataclass
class _Frame:
    index: int
    extrinsic: np.ndarray  # [3, 4] refined camera-from-world
    model_extrinsic: np.ndarray  # [3, 4] the model's own
    landmark: np.ndarray  # [N] landmark id per observation
    xy: np.ndarray  # [N, 2]
    depth: np.ndarray  # [N] the model's depth at xy (in the map's scale)
    scale: float = 1.0  # the factor that took the model's depth to the map's
    prediction: object = None  # the emitted FramePrediction


@dataclass
class _Kept:
    """A frame that has left the window, kept for the final adjustment."""

    index: int
    extrinsic: np.ndarray  # [3, 4] as the window left it
    uid: np.ndarray  # [N] stream-unique landmark id per observation
    xy: np.ndarray  # [N, 2]
    model_depth: np.ndarray  # [N] the model's own depth at xy (not the map's scale, which drifts)
    prediction: object


def spread_track(point: np.ndarray, max_track: int) -> np.ndarray:
    """Observations [M] of landmarks `point` (in frame order within each landmark) -> a mask that
    keeps at most `max_track` of each landmark's, evenly spread from its first to its last."""
    order = np.argsort(point, kind="stable")
    count = np.bincount(point)
    n = count[point[order]]
    rank = np.arange(len(order)) - np.repeat(np.cumsum(count) - count, count)
    step = (n - 1) / max(max_track - 1, 1)  # kept: the ranks round(i * step), i < max_track
    nearest = np.round(rank / np.maximum(step, 1e-12)) * step
    keep = np.zeros(len(point), bool)
    keep[order] = (n <= max_track) | (np.abs(nearest - rank) <= 0.5)
    return keep


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[3, 4] a @ b as 4x4 transforms."""
    return a @ np.vstack((b, [0, 0, 0, 1]))


def _invert(e: np.ndarray) -> np.ndarray:
    R, t = e[:, :3], e[:, 3]
    return np.concatenate((R.T, (-R.T @ t)[:, None]), axis=1)


class PoseRefiner:
    """`refine(prediction) -> prediction` with the camera re-solved (see the module doc).
    Frames must come in stream order; `reset()` starts a new stream."""

    def __init__(self, config: RefineConfig | None = None, world_points: str = "depth",
                 device: str | torch.device = "cpu") -> None:  # fmt: skip
        """device: where the end-of-stream plane sweep runs (the rest is CPU code)."""
        if world_points not in ("depth", "head"):
            raise ValueError(f"world_points must be 'depth' or 'head', got {world_points!r}")
        self.config = config or RefineConfig()
        self.world_points = world_points
        self.device = device
        self.features = SiftFeatures(self.config.max_features, self.config.ratio)
        self.final_turn_deg: float | None = None  # the last final adjustment's largest camera turn
        self.reset()

    def reset(self) -> None:
        self.frames: list[_Frame] = []
        self.points = np.zeros((0, 3))
        self.descriptors = np.zeros((0, 128), np.float32)
        self.last_seen = np.zeros(0, np.int64)
        self.stats = {"solved": 0, "chained": 0}
        self.focals: deque[tuple[float, float]] = deque(maxlen=self.config.focal_history)
        self.log_focal = 0.0  # self-calibration: the stream focal over the model's median
        self.focal_estimator = None
        self._calibrated: float | None = None  # the estimator's focal, once it has one
        self.intrinsic = np.eye(3)  # the stream's camera (set by the first frame)
        self._next_uid = 0
        self.uid = np.zeros(0, np.int64)  # per landmark: an id that survives `_forget`'s renumbering
        self.history: deque[_Kept] = deque(maxlen=max(self.config.final_frames, 1))
        self.landmark_at: dict[int, np.ndarray] = {}  # uid -> position, for the kept frames

    # -- map -----------------------------------------------------------------------------
    def _add_landmarks(self, points: np.ndarray, descriptors: np.ndarray, index: int) -> np.ndarray:
        ids = np.arange(len(self.points), len(self.points) + len(points))
        self.uid = np.concatenate((self.uid, np.arange(self._next_uid, self._next_uid + len(points))))
        self._next_uid += len(points)
        self.points = np.concatenate((self.points, points))
        self.descriptors = np.concatenate((self.descriptors, descriptors))
        self.last_seen = np.concatenate((self.last_seen, np.full(len(points), index)))
        return ids

    def _forget(self, index: int) -> None:
        """Drop frames older than the window and landmarks no kept frame observes."""
        c = self.config
        self._keep(self.frames[: -(c.window + 1)])
        self.frames = self.frames[-(c.window + 1) :]
        keep = self.last_seen >= index - (c.window + c.match_frames)
        for f in self.frames:
            keep[f.landmark] = True
        if keep.all():
            return
        new_id = np.cumsum(keep) - 1
        self.points, self.descriptors, self.last_seen = self.points[keep], self.descriptors[keep], self.last_seen[keep]
        self.uid = self.uid[keep]
        for f in self.frames:
            f.landmark = new_id[f.landmark]

    # -- per frame -------------------------------------------------------------------------
    def _solve_pose(self, xy: np.ndarray, ids: np.ndarray, intrinsic: np.ndarray):
        """PnP + RANSAC of matched landmarks; returns (extrinsic or None, inlier mask)."""
        c = self.config
        if len(ids) < c.min_inliers:
            return None, np.zeros(len(ids), bool)
        X, K = self.points[ids], intrinsic.astype(np.float64)
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            X, xy, K, None, iterationsCount=200, reprojectionError=c.ransac_px, confidence=0.999,
            flags=cv2.SOLVEPNP_SQPNP,
        )  # fmt: skip
        if not ok or inliers is None or len(inliers) < c.min_inliers:
            return None, np.zeros(len(ids), bool)
        inl = inliers[:, 0]
        rvec, tvec = cv2.solvePnPRefineLM(X[inl], xy[inl], K, None, rvec, tvec)
        R, _ = cv2.Rodrigues(rvec)
        mask = np.zeros(len(ids), bool)
        mask[inl] = True
        return np.concatenate((R, tvec.reshape(3, 1)), axis=1), mask

    def _stream_intrinsic(self, K: np.ndarray) -> np.ndarray:
        """One camera per stream: the running median of the model's per-frame focal lengths
        (they jitter by ~5 % from frame to frame, docs/MODEL_CARD.md)."""
        self.focals.append((K[0, 0], K[1, 1]))
        K = K.copy()
        if self._calibrated is not None:
            K[0, 0] = K[1, 1] = self._calibrated
        else:
            K[0, 0], K[1, 1] = np.median(np.array(self.focals), axis=0) * np.exp(self.log_focal)
        if self.frames and abs(np.log(K[0, 0] / self.intrinsic[0, 0])) > self.config.relift_log_focal:
            self._relift(K)
        self.intrinsic = K  # one camera: every frame of the window uses it
        return K

    def _relift(self, K: np.ndarray) -> None:
        """The focal has jumped (the estimator replaced the window's self-calibrated one): the
        landmarks were lifted through the old camera and no longer agree with the new one (a
        forward-moving held-out stream had drifted to 0.44x the focal, and the first pose through
        the new focal jumped 2.5 scene units). Lift each one again from its newest observation."""
        for f in self.frames:  # oldest first, so the newest observation wins
            self.points[f.landmark] = lift(f.xy, f.depth, f.extrinsic, K)

    def _calibrate(self, size: tuple[int, int]) -> None:
        """Feed the focal estimator the matches between the newest and the oldest frame of the
        window (shared landmarks), and adopt its focal once it has one."""
        if not self.config.calibrate or len(self.frames) <= self.config.window:
            return
        if self.focal_estimator is None:
            self.focal_estimator = FocalEstimator(size[1], size[0], min_pairs=self.config.calibration_pairs)
        old, new = self.frames[0], self.frames[-1]
        _, i_old, i_new = np.intersect1d(old.landmark, new.landmark, return_indices=True)
        self.focal_estimator.add_pair(old.xy[i_old], new.xy[i_new])
        model_focal = float(np.median(np.array(self.focals)))
        self._calibrated = self.focal_estimator.focal(model_focal, self.config.focal_prior_weight)

    def _depth_scale(self, extrinsic: np.ndarray, ids: np.ndarray, depth: np.ndarray) -> float:
        """The factor that brings this frame's depth to the map's scale: the median ratio of
        the matched landmarks' depths in this camera to the model's depths there. The model's
        scale wanders along a stream (docs/MODEL_CARD.md); the map keeps frame 0's."""
        z = self.points[ids] @ extrinsic[:, :3].T + extrinsic[:, 3]
        ratio = z[:, 2] / depth
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        return float(np.median(ratio)) if len(ratio) >= self.config.min_inliers else 1.0

    def _adjust(self) -> None:
        c = self.config
        frames = self.frames
        free = np.array([i > 0 and f.index > 0 for i, f in enumerate(frames)])
        if len(frames) <= c.window:
            free[0] = False
        frame_of = np.concatenate([np.full(len(f.landmark), k) for k, f in enumerate(frames)])
        landmark = np.concatenate([f.landmark for f in frames])
        # Only landmarks seen at least twice in the window, at least once by a free frame.
        counts = np.bincount(landmark, minlength=len(self.points))
        in_free = np.zeros(len(self.points), bool)
        in_free[landmark[free[frame_of]]] = True
        use = (counts[landmark] >= 2) & in_free[landmark]
        if not use.any() or not free.any():
            return
        ids, point = np.unique(landmark[use], return_inverse=True)
        problem = BundleProblem(
            extrinsic=np.stack([f.extrinsic for f in frames]),
            intrinsic=np.broadcast_to(self.intrinsic, (len(frames), 3, 3)),
            free=free, points=self.points[ids], frame=frame_of[use], point=point,
            xy=np.concatenate([f.xy for f in frames])[use], depth=np.concatenate([f.depth for f in frames])[use],
            focal_prior=(-self.log_focal, c.sigma_log_focal) if c.self_calibrate and self._calibrated is None else None,
        )  # fmt: skip
        extrinsic, points, error, log_focal, _ = bundle_adjust(problem, c.sigma_px, c.sigma_log_depth, c.max_iterations)
        self.log_focal += log_focal
        self.intrinsic = scale_focal(self.intrinsic, log_focal)
        for k, f in enumerate(frames):
            f.extrinsic = extrinsic[k]
        self.points[ids] = points
        # Drop observations that the adjusted geometry cannot explain (wrong matches).
        bad = np.zeros(len(landmark), bool)
        bad[np.flatnonzero(use)[error > c.outlier_px]] = True
        start = 0
        for f in frames:
            n = len(f.landmark)
            keep = ~bad[start : start + n]
            f.landmark, f.xy, f.depth = f.landmark[keep], f.xy[keep], f.depth[keep]
            start += n

    def refine(self, prediction):
        """A FramePrediction (recon.session) -> the same with extrinsic and world_points refined."""
        c = self.config
        index = prediction.index
        K = self._stream_intrinsic(np.asarray(prediction.intrinsic, np.float64))
        model_extrinsic = np.asarray(prediction.extrinsic, np.float64)
        kp = self.features.detect(prediction.image)
        depth_map = np.asarray(prediction.depth, np.float64)
        depth = sample_depth(depth_map, kp.xy)
        good = np.isfinite(depth) & (depth > 0)
        kp_xy, kp_desc, depth = kp.xy[good], kp.descriptors[good], depth[good]

        matched_kp, matched_id = np.zeros(0, np.int64), np.zeros(0, np.int64)
        extrinsic, scale = None, 1.0
        if self.frames:
            active = np.flatnonzero(self.last_seen >= index - c.match_frames)
            pairs = self.features.match(kp_desc, self.descriptors[active])
            extrinsic, inlier = self._solve_pose(kp_xy[pairs[:, 0]], active[pairs[:, 1]], K)
            matched_kp, matched_id = pairs[inlier, 0], active[pairs[inlier, 1]]
            if extrinsic is None:
                prev = self.frames[-1]
                motion = _compose(model_extrinsic, _invert(prev.model_extrinsic))
                extrinsic = _compose(motion, prev.extrinsic)
                self.stats["chained"] += 1
            else:
                self.stats["solved"] += 1
                scale = self._depth_scale(extrinsic, matched_id, depth[matched_kp])
                depth = depth * scale
        if extrinsic is None:
            extrinsic = model_extrinsic

        fresh = np.setdiff1d(np.arange(len(kp_xy)), matched_kp)
        new_ids = self._add_landmarks(lift(kp_xy[fresh], depth[fresh], extrinsic, K), kp_desc[fresh], index)
        self.descriptors[matched_id] = kp_desc[matched_kp]
        self.last_seen[matched_id] = index
        order = np.concatenate((matched_kp, fresh))
        self.frames.append(_Frame(index, extrinsic, model_extrinsic, np.concatenate((matched_id, new_ids)),
                                  kp_xy[order], depth[order], scale))  # fmt: skip
        self._calibrate(depth_map.shape)
        if len(self.frames) > 1:
            self._adjust()
        self._forget(index)
        extrinsic, K = self.frames[-1].extrinsic, self.intrinsic
        out = self._with_camera(prediction, model_extrinsic, extrinsic, K, depth_map)
        self.frames[-1].prediction = out
        return out

    def _with_camera(self, prediction, old_extrinsic: np.ndarray, extrinsic: np.ndarray, K: np.ndarray,
                     depth_map: np.ndarray, depth_changed: bool = False):  # fmt: skip
        """`prediction` seen through the camera (extrinsic, K). World points: the depth map unprojected,
        or ("head") the prediction's points carried rigidly from `old_extrinsic` (the camera they are
        in) to `extrinsic`."""
        if self.world_points == "head":  # old world -> the camera -> new world
            to_new = _compose(_invert(extrinsic), old_extrinsic)
            points = np.asarray(prediction.world_points, np.float64)
            world_points = points @ to_new[:, :3].T + to_new[:, 3]
        else:
            world_points = world_points_from_depth(depth_map, extrinsic, K)
        changed = {"depth": depth_map.astype(np.float32)} if depth_changed else {}
        return dataclasses.replace(
            prediction, extrinsic=extrinsic.astype(np.float32), intrinsic=K.astype(np.float32),
            intrinsic_original=np.asarray(prediction.transform.intrinsics_to_original(K), np.float32),
            world_points=world_points.astype(np.float32), **changed,
        )  # fmt: skip

    # -- end of stream -----------------------------------------------------------------------
    def _keep(self, frames: list[_Frame]) -> None:
        """Frames leaving the window join the history of the final adjustment, with the current
        positions of their landmarks."""
        if self.config.final_frames <= 0:
            return
        for f in frames:
            if f.prediction is None:  # never emitted (the stream was interrupted inside refine)
                continue
            uid = self.uid[f.landmark]
            self.history.append(_Kept(f.index, f.extrinsic.copy(), uid, f.xy, f.depth / f.scale, f.prediction))
            self.landmark_at.update(zip(uid.tolist(), self.points[f.landmark]))
        if len(self.landmark_at) > 2 * sum(len(k.uid) for k in self.history) + 1024:  # bound it
            kept = set(np.concatenate([k.uid for k in self.history]).tolist())
            self.landmark_at = {u: x for u, x in self.landmark_at.items() if u in kept}

    def finish(self) -> list:
        """End of stream: adjust the last `final_frames` frames together and fit their depth to
        the adjusted landmarks (see the module doc). Returns those frames' predictions revised, in
        stream order ([] with `final_frames` 0 or fewer than two frames), and starts a new stream."""
        self._keep(self.frames)  # (keeps nothing with final_frames 0)
        kept = list(self.history)
        revised = self._final_adjust(kept) if len(kept) >= 2 else []
        self.reset()
        return revised

    def _final_adjust(self, kept: list[_Kept]) -> list:
        c = self.config
        frame = np.concatenate([np.full(len(k.uid), j) for j, k in enumerate(kept)])
        uid = np.concatenate([k.uid for k in kept])
        _, point, count = np.unique(uid, return_inverse=True, return_counts=True)
        use = count[point] >= 2  # landmarks seen at least twice among the kept frames
        ids, point = np.unique(uid[use], return_inverse=True)
        frame, xy = frame[use], np.concatenate([k.xy for k in kept])[use]
        if len(ids) == 0:
            return []
        model_depth = np.concatenate([k.model_depth for k in kept])[use]
        adjusted = spread_track(point, c.final_max_track)
        # Held: the gauge, and frames too few adjusted observations see to fix a pose (as PnP needs
        # min_inliers): a stream whose poses were mostly chained through the model's motion has many.
        seen = np.bincount(frame[adjusted], minlength=len(kept))
        held = np.array([j == 0 or k.index == 0 for j, k in enumerate(kept)]) | (seen < c.min_inliers)
        problem = BundleProblem(
            extrinsic=np.stack([k.extrinsic for k in kept]), intrinsic=np.broadcast_to(self.intrinsic, (len(kept), 3, 3)),
            free=~held, points=np.stack([self.landmark_at[u] for u in ids.tolist()]), frame=frame[adjusted],
            point=point[adjusted], xy=xy[adjusted], depth=model_depth[adjusted],
            focal_prior=(0.0, c.sigma_log_focal) if c.self_calibrate else None, depth_scale_walk=c.final_depth_scale_walk,
        )  # fmt: skip
        extrinsic, points, _, log_focal, _ = bundle_adjust(problem, c.sigma_px, c.final_sigma_log_depth,
                                                        c.final_iterations, solver="schur")  # fmt: skip
        turn = rotation_angle_deg(extrinsic[:, :, :3] @ np.swapaxes(problem.extrinsic[:, :, :3], 1, 2))
        self.final_turn_deg = float(turn.max())
        if self.final_turn_deg > c.final_max_rotation_deg:
            # Diverged (seen on a 500-frame GPU stream whose poses were half chained through the
            # model's motion: cameras turned by up to 170 degrees): keep the streamed results.
            log.warning("the end-of-stream adjustment turned a camera by %.0f degrees (> %g): diverged, "
                        "the streamed results are kept", self.final_turn_deg, c.final_max_rotation_deg)
            return []
        K = scale_focal(self.intrinsic, log_focal)
        R, t = extrinsic[:, :, :3], extrinsic[:, :, 3]
        # Every observation, adjusted or not, measures its frame's depth at the adjusted landmark.
        uv, z = project(R[frame], t[frame], np.broadcast_to(K, (len(frame), 3, 3)), points[point])
        error = np.linalg.norm(uv - xy, axis=-1)
        weight = self._parallax_weight(R, t, K, points, frame, point)
        # The observations to fit each frame's depth to; `frame` is in kept order, so one split.
        good = np.flatnonzero((error < c.fit_max_px) & (z > 0))
        per_frame = np.split(good, np.searchsorted(frame[good], np.arange(1, len(kept))))
        rescale = self._scale_hold(per_frame, z, model_depth, from_start=kept[0].index == 0)
        fitted = [c.fit_depth and len(sel) >= c.min_inliers for sel in per_frame]
        depth_maps = [np.asarray(k.prediction.depth, np.float64) for k in kept]
        for j, sel in enumerate(per_frame):
            if fitted[j]:
                depth_maps[j] = fit_depth(depth_maps[j], xy[sel], z[sel] * rescale[j], weight[sel], c.fit_sigma_px,
                                          c.fit_sigma_log, c.fit_model_weight)  # fmt: skip
        fused = c.fuse_radius > 0
        if fused:
            Ks = np.broadcast_to(K, (len(kept), 3, 3))
            depth_maps = fuse_depth(np.stack(depth_maps), Ks, extrinsic, c.fuse_radius, c.fuse_max_log_diff)
            if c.sweep is not None:
                images = np.stack([grey(k.prediction.image) for k in kept])
                depth_maps = sweep_depth(depth_maps, images, Ks, extrinsic, c.sweep, self.device)
                depth_maps = fuse_depth(depth_maps, Ks, extrinsic, c.fuse_radius, c.fuse_max_log_diff)
        return [self._with_camera(k.prediction, np.asarray(k.prediction.extrinsic, np.float64), extrinsic[j], K,
                                  depth_maps[j], depth_changed=fused or fitted[j]) for j, k in enumerate(kept)]  # fmt: skip

    def _scale_hold(self, per_frame: list[np.ndarray], z: np.ndarray, model_depth: np.ndarray,
                    from_start: bool) -> np.ndarray:  # fmt: skip
        """Per kept frame (its good observations' indices in `per_frame`), the factor for its
        landmarks' depths in the fit, so that the fitted depth
        takes the map's scale only where that is safe:
        - if the map's scale drifts against the model's along the kept frames
          (`fit_max_scale_drift`; rotation-heavy streams give the adjustment no parallax to hold
          the scale with: 150x over 500 frames on the held-out outdoor-rotation-1003), each frame's
          ratio is brought to the median one;
        - if the kept frames do not start the stream, the earlier frames keep the model's depth,
          so the ratios are brought to the model's scale on average."""
        log_ratio = np.full(len(per_frame), np.nan)
        for j, sel in enumerate(per_frame):
            if len(sel) >= self.config.min_inliers:
                log_ratio[j] = np.median(np.log(z[sel] / model_depth[sel]))
        known = np.isfinite(log_ratio)
        if not known.any():
            return np.ones(len(per_frame))
        target = log_ratio.copy()
        if np.ptp(np.percentile(log_ratio[known], [10, 90])) > self.config.fit_max_scale_drift:
            target[:] = np.median(log_ratio[known])
        if not from_start:
            target -= np.median(log_ratio[known])
        return np.exp(np.where(known, target - log_ratio, 0.0))

    def _parallax_weight(self, R, t, K, points, frame, point) -> np.ndarray:
        """Per observation, how far to trust its landmark's depth against the model's: the largest
        angle between the landmark's first viewing ray and its others gives a triangulation error
        of about sigma_px / (focal * angle) in log depth, compared with the model's sigma_log_depth."""
        centre = -np.einsum("fji,fj->fi", R, t)
        ray = points[point] - centre[frame]
        ray /= np.linalg.norm(ray, axis=1, keepdims=True)
        _, first = np.unique(point, return_index=True)  # observations are in frame order
        angle = np.arccos(np.clip(np.sum(ray * ray[first[point]], axis=1), -1.0, 1.0))
        parallax = np.zeros(len(points))
        np.maximum.at(parallax, point, angle)
        sigma = self.config.sigma_px / (K[0, 0] * np.maximum(parallax[point], 1e-6))
        return 1.0 / (1.0 + (sigma / self.config.sigma_log_depth) ** 2)
