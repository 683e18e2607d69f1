"""Bundle adjustment with depth priors (scipy's trust region, or Levenberg-Marquardt with the landmarks
eliminated: recon.refine.solver).

Unknowns: the camera-from-world poses of the free frames and the 3D landmarks. Residuals, per
observation of landmark l in frame f at pixel xy with the model's depth d there:
  reprojection   (project(R_f X_l + t_f) - xy) / sigma_px                     2 values
  depth prior    (log z_f(X_l) - log d - s_f) / sigma_log_depth               1 value
and, with `depth_scale_walk`, a log scale s_f per free frame (0 for held ones) that changes
from one frame to the next by about that sigma: (s_f+1 - s_f) / depth_scale_walk.
The depth priors fix the scale (and the structure where the baseline is too short to
triangulate); the reprojections tie the frames to shared landmarks. Both go through a soft-L1
loss beyond three sigma, so a wrong match or a bad depth weighs linearly, not quadratically
(soft-L1 converged in ~5x fewer evaluations than a one-sigma Huber on perturbed problems).
Frames that are not free anchor the gauge; rotations are updated on the left, R = exp(w) R0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.sparse import csr_matrix
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from recon.align import hat

from .solver import levenberg_marquardt

_MIN_Z = 1e-6


@dataclass
class BundleProblem:
    extrinsic: np.ndarray  # [F, 3, 4] camera-from-world, the starting point
    intrinsic: np.ndarray  # [F, 3, 3]
    free: np.ndarray  # [F] bool: poses to optimise (the others are held)
    points: np.ndarray  # [L, 3] world landmarks, the starting point
    frame: np.ndarray  # [M] int: the frame of each observation
    point: np.ndarray  # [M] int: the landmark of each observation
    xy: np.ndarray  # [M, 2] observed pixel (project convention)
    depth: np.ndarray  # [M] the model's depth at xy (> 0)
    # Self-calibration: (mean, sigma) of a prior on one log-focal offset shared by all frames
    # (fx and fy scale together); None holds the intrinsics.
    focal_prior: tuple[float, float] | None = None
    # A log scale per free frame on its depth priors (held frames: 0), changing from one frame to
    # the next (in `extrinsic` order) by about this sigma; None: no scales. The model's depth is
    # then trusted in shape within a frame more than in scale between frames: a causal model's
    # scale drifts along a stream, and the shared landmarks tie the frames' scales instead.
    depth_scale_walk: float | None = None


class BundleResult(NamedTuple):
    extrinsic: np.ndarray  # [F, 3, 4] float64; held frames unchanged
    points: np.ndarray  # [L, 3]
    error: np.ndarray  # [M] reprojection error, pixels
    log_focal: float  # the focal's log offset (0 unless focal_prior is set)
    log_depth_scale: np.ndarray  # [F] s_f: the landmarks sit at the depth priors times exp(s_f) (0 without depth_scale_walk)


def _unpack(problem: BundleProblem, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
    """x = [6 per free pose (rotation vector, translation), 3 per landmark, a log depth scale per
    free pose?, log-focal offset?] -> R [F, 3, 3], t [F, 3], X [L, 3], log focal, log scales [F]."""
    free = np.flatnonzero(problem.free)
    R = problem.extrinsic[:, :, :3].copy()
    t = problem.extrinsic[:, :, 3].copy()
    pose = x[: 6 * len(free)].reshape(-1, 6)
    R[free] = Rotation.from_rotvec(pose[:, :3]).as_matrix() @ R[free]
    t[free] = pose[:, 3:]
    n = 6 * len(free) + 3 * len(problem.points)
    log_scale = np.zeros(len(problem.free))
    if problem.depth_scale_walk is not None:
        log_scale[free] = x[n : n + len(free)]
        n += len(free)
    log_focal = float(x[n]) if problem.focal_prior is not None else 0.0
    return R, t, x[6 * len(free) : 6 * len(free) + 3 * len(problem.points)].reshape(-1, 3), log_focal, log_scale


def scale_focal(K: np.ndarray, log_focal: float) -> np.ndarray:
    """Intrinsics [..., 3, 3] with fx and fy multiplied by exp(log_focal)."""
    if log_focal == 0.0:
        return K
    K = K.copy()
    K[..., :2, :2] *= np.exp(log_focal)
    return K


def project(R: np.ndarray, t: np.ndarray, K: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-observation R [M, 3, 3], t [M, 3], K [M, 3, 3], X [M, 3] -> pixels [M, 2], z [M]."""
    Xc = np.einsum("mij,mj->mi", R, X) + t
    z = np.maximum(Xc[:, 2], _MIN_Z)
    uv = np.stack((K[:, 0, 0] * Xc[:, 0] / z + K[:, 0, 2], K[:, 1, 1] * Xc[:, 1] / z + K[:, 1, 2]), axis=-1)
    return uv, Xc[:, 2]


def lift(xy: np.ndarray, depth: np.ndarray, extrinsic: np.ndarray, intrinsic: np.ndarray) -> np.ndarray:
    """`project`'s inverse for one camera: pixels [N, 2] at depths [N] -> world points [N, 3]
    through a camera-from-world [3, 4] and intrinsics [3, 3]."""
    K = intrinsic
    cam = np.stack(((xy[:, 0] - K[0, 2]) / K[0, 0] * depth, (xy[:, 1] - K[1, 2]) / K[1, 1] * depth, depth), -1)
    R, t = extrinsic[:, :3], extrinsic[:, 3]
    return (cam - t) @ R  # R^T (cam - t), row-wise


def _residuals(x: np.ndarray, problem: BundleProblem, sigma_px: float, sigma_log_depth: float) -> np.ndarray:
    R, t, X, log_focal, log_scale = _unpack(problem, x)
    f, p = problem.frame, problem.point
    uv, z = project(R[f], t[f], scale_focal(problem.intrinsic, log_focal)[f], X[p])
    r_px = (uv - problem.xy) / sigma_px
    r_depth = (np.log(np.maximum(z, _MIN_Z)) - np.log(problem.depth) - log_scale[f]) / sigma_log_depth
    r = [r_px[:, 0], r_px[:, 1], r_depth]
    if problem.depth_scale_walk is not None:
        r.append(np.diff(log_scale) / problem.depth_scale_walk)
    if problem.focal_prior is not None:
        mean, sigma = problem.focal_prior
        r.append(np.array([(log_focal - mean) / sigma]))
    return np.concatenate(r)


def _left_jacobian(w: np.ndarray) -> np.ndarray:
    """SO(3) left Jacobians [N, 3, 3] of rotation vectors w [N, 3]: d exp(w) = [J_l(w) dw]x exp(w)."""
    theta = np.linalg.norm(w, axis=-1)[:, None, None]
    W = hat(w)
    small = theta < 1e-6
    t = np.where(small, 1.0, theta)
    a = np.where(small, 0.5, (1 - np.cos(t)) / t**2)
    b = np.where(small, 1.0 / 6.0, (t - np.sin(t)) / t**3)
    return np.eye(3) + a * W + b * W @ W


def _jacobian(x: np.ndarray, problem: BundleProblem, sigma_px: float, sigma_log_depth: float) -> csr_matrix:
    """The residuals' Jacobian, analytic and sparse (rows: the u, v and log-depth blocks, the scale
    walk, the focal prior; columns: 6 per free pose, 3 per landmark, a log depth scale per free
    pose, the log-focal offset). Finite differences cost a residual evaluation per colour group of
    columns, which made a 500-frame final adjustment take minutes."""
    R, t, X, log_focal, _ = _unpack(problem, x)
    f, p = problem.frame, problem.point
    M, L = len(f), len(problem.points)
    K = scale_focal(problem.intrinsic, log_focal)[f]
    Xc = np.einsum("mij,mj->mi", R[f], X[p]) + t[f]
    z = np.maximum(Xc[:, 2], _MIN_Z)
    fx, fy = K[:, 0, 0], K[:, 1, 1]
    # d(u, v, log z) / d Xc, [M, 3, 3], with the residual scales folded in
    D = np.zeros((M, 3, 3))
    D[:, 0, 0], D[:, 0, 2] = fx / z, -fx * Xc[:, 0] / z**2
    D[:, 1, 1], D[:, 1, 2] = fy / z, -fy * Xc[:, 1] / z**2
    D[:, :2] /= sigma_px
    D[:, 2, 2] = 1.0 / (z * sigma_log_depth)
    blocks_rows, blocks_cols, values = [], [], []
    obs = np.arange(M)
    rows = np.stack([obs, M + obs, 2 * M + obs], 1)  # [M, 3] the u, v, log-depth row of each observation
    free = np.flatnonzero(problem.free)
    n_pose = 6 * len(free)
    column = -np.ones(len(problem.free), np.int64)
    column[free] = np.arange(len(free)) * 6
    has = column[f] >= 0
    if has.any():
        w = x[:n_pose].reshape(-1, 6)[:, :3]
        J_l = np.zeros((len(problem.free), 3, 3))
        J_l[free] = _left_jacobian(w)
        # Xc = exp(w) R0 X + t: d Xc / dw = -[R X]x J_l(w), d Xc / dt = I
        RX = np.einsum("mij,mj->mi", R[f[has]], X[p[has]])
        d_rot = D[has] @ (-hat(RX) @ J_l[f[has]])
        for k, block in enumerate((d_rot, D[has])):
            blocks_rows.append(np.repeat(rows[has], 3, axis=1))
            blocks_cols.append(np.tile(column[f[has]][:, None] + 3 * k + np.arange(3), (1, 3)))
            values.append(block.reshape(-1, 9))
    d_point = D @ R[f]
    blocks_rows.append(np.repeat(rows, 3, axis=1))
    blocks_cols.append(np.tile(n_pose + 3 * p[:, None] + np.arange(3), (1, 3)))
    values.append(d_point.reshape(-1, 9))
    n_rows, n_cols = 3 * M, n_pose + 3 * L
    rows_all = [r.ravel() for r in blocks_rows]
    cols_all = [c.ravel() for c in blocks_cols]
    vals_all = [v.ravel() for v in values]
    if problem.depth_scale_walk is not None:
        # log z - log d - s_f: -1 / sigma on the frame's scale; (s_j+1 - s_j) / sigma_walk
        scale_column = np.where(column >= 0, n_cols + column // 6, -1)
        rows_all.append(2 * M + obs[has])
        cols_all.append(scale_column[f[has]])
        vals_all.append(np.full(int(has.sum()), -1.0 / sigma_log_depth))
        for side, sign in ((1, 1.0), (0, -1.0)):
            pair = np.arange(len(problem.free) - 1)
            pair = pair[scale_column[pair + side] >= 0]
            rows_all.append(n_rows + pair)
            cols_all.append(scale_column[pair + side])
            vals_all.append(np.full(len(pair), sign / problem.depth_scale_walk))
        n_rows, n_cols = n_rows + len(problem.free) - 1, n_cols + len(free)
    if problem.focal_prior is not None:  # u - c scales with the focal
        rows_all += [np.arange(2 * M), np.array([n_rows])]
        cols_all += [np.full(2 * M, n_cols), np.array([n_cols])]
        uc = np.concatenate((fx * Xc[:, 0] / z, fy * Xc[:, 1] / z)) / sigma_px
        vals_all += [uc, np.array([1.0 / problem.focal_prior[1]])]
        n_rows, n_cols = n_rows + 1, n_cols + 1
    return csr_matrix((np.concatenate(vals_all), (np.concatenate(rows_all), np.concatenate(cols_all))),
                      shape=(n_rows, n_cols))  # fmt: skip


def bundle_adjust(problem: BundleProblem, sigma_px: float = 1.0, sigma_log_depth: float = 0.15,
                  max_iterations: int = 15, solver: str = "trust-region") -> BundleResult:  # fmt: skip
    """The adjusted problem (BundleResult, float64); held frames come back unchanged.

    solver: "trust-region" (scipy's, steps solved iteratively: fine for the few frames of a
    window, and what the streaming refiner's settings were chosen with) or "schur" (recon.refine.
    solver: exact steps on the reduced camera system, ~5x faster on a 48-frame problem and what
    makes a 500-frame one practical; the same minimum where both converge)."""
    if solver not in ("trust-region", "schur"):
        raise ValueError(f"solver must be 'trust-region' or 'schur', got {solver!r}")
    free = np.flatnonzero(problem.free)
    x0 = np.concatenate((np.zeros((len(free), 3)), problem.extrinsic[free, :, 3]), axis=1).ravel()
    x0 = np.concatenate((x0, np.asarray(problem.points, np.float64).ravel()))
    if problem.depth_scale_walk is not None:
        x0 = np.concatenate((x0, np.zeros(len(free))))
    if problem.focal_prior is not None:
        x0 = np.append(x0, 0.0)
    n_pose = 6 * len(free)
    args = (problem, sigma_px, sigma_log_depth)
    if solver == "schur":
        x = levenberg_marquardt(lambda x: _residuals(x, *args), lambda x: _jacobian(x, *args), x0,
                                points=slice(n_pose, n_pose + 3 * len(problem.points)), max_evaluations=max_iterations)  # fmt: skip
    else:
        x = least_squares(_residuals, x0, jac=_jacobian, method="trf", loss="soft_l1", f_scale=3.0, x_scale="jac",
                          max_nfev=max_iterations, args=args).x  # fmt: skip
    R, t, X, log_focal, log_scale = _unpack(problem, x)
    K = scale_focal(problem.intrinsic, log_focal)[problem.frame]
    uv, _ = project(R[problem.frame], t[problem.frame], K, X[problem.point])
    extrinsic = np.concatenate((R, t[..., None]), axis=-1)
    return BundleResult(extrinsic, X, np.linalg.norm(uv - problem.xy, axis=-1), log_focal, log_scale)
