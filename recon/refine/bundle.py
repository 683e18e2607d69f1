"""Bundle adjustment with depth priors (scipy's sparse trust-region least squares).

Unknowns: the camera-from-world poses of the free frames and the 3D landmarks. Residuals, per
observation of landmark l in frame f at pixel xy with the model's depth d there:
  reprojection   (project(R_f X_l + t_f) - xy) / sigma_px                     2 values
  depth prior    (log z_f(X_l) - log d) / sigma_log_depth                     1 value
The depth priors fix the scale (and the structure where the baseline is too short to
triangulate); the reprojections tie the frames to shared landmarks. Both go through a soft-L1
loss beyond three sigma, so a wrong match or a bad depth weighs linearly, not quadratically
(soft-L1 converged in ~5x fewer evaluations than a one-sigma Huber on perturbed problems).
Frames that are not free anchor the gauge; rotations are updated on the left, R = exp(w) R0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import coo_matrix
from scipy.spatial.transform import Rotation

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


def _unpack(problem: BundleProblem, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """x = [6 per free pose (rotation vector, translation), 3 per landmark, log-focal offset?]."""
    free = np.flatnonzero(problem.free)
    R = problem.extrinsic[:, :, :3].copy()
    t = problem.extrinsic[:, :, 3].copy()
    pose = x[: 6 * len(free)].reshape(-1, 6)
    R[free] = Rotation.from_rotvec(pose[:, :3]).as_matrix() @ R[free]
    t[free] = pose[:, 3:]
    n = 6 * len(free) + 3 * len(problem.points)
    log_focal = float(x[n]) if problem.focal_prior is not None else 0.0
    return R, t, x[6 * len(free) : n].reshape(-1, 3), log_focal


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


def _residuals(x: np.ndarray, problem: BundleProblem, sigma_px: float, sigma_log_depth: float) -> np.ndarray:
    R, t, X, log_focal = _unpack(problem, x)
    f, p = problem.frame, problem.point
    uv, z = project(R[f], t[f], scale_focal(problem.intrinsic, log_focal)[f], X[p])
    r_px = (uv - problem.xy) / sigma_px
    r_depth = (np.log(np.maximum(z, _MIN_Z)) - np.log(problem.depth)) / sigma_log_depth
    r = [r_px[:, 0], r_px[:, 1], r_depth]
    if problem.focal_prior is not None:
        mean, sigma = problem.focal_prior
        r.append(np.array([(log_focal - mean) / sigma]))
    return np.concatenate(r)


def _sparsity(problem: BundleProblem) -> coo_matrix:
    """Which unknowns each residual depends on: its frame's 6 pose values (if free) and its
    landmark's 3 coordinates."""
    M, L = len(problem.frame), len(problem.points)
    column = -np.ones(len(problem.free), np.int64)
    column[problem.free] = np.arange(int(problem.free.sum())) * 6
    n_pose = 6 * int(problem.free.sum())
    rows, cols = [], []
    obs = np.arange(M)
    pose_col = column[problem.frame]
    has_pose = pose_col >= 0
    for block in range(3):  # u, v and log-depth rows
        r = block * M + obs
        for k in range(6):
            rows.append(r[has_pose])
            cols.append(pose_col[has_pose] + k)
        for k in range(3):
            rows.append(r)
            cols.append(n_pose + 3 * problem.point + k)
    n_rows, n_cols = 3 * M, n_pose + 3 * L
    if problem.focal_prior is not None:  # the focal moves every reprojection, and its prior
        rows += [np.arange(2 * M), np.array([3 * M])]
        cols += [np.full(2 * M, n_cols), np.array([n_cols])]
        n_rows, n_cols = n_rows + 1, n_cols + 1
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n_rows, n_cols))


def bundle_adjust(problem: BundleProblem, sigma_px: float = 1.0, sigma_log_depth: float = 0.15,
                  max_iterations: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:  # fmt: skip
    """Returns (extrinsic [F, 3, 4], points [L, 3], reprojection error [M] in pixels, log-focal
    offset: 0 unless `focal_prior` is set), float64; held frames come back unchanged."""
    free = np.flatnonzero(problem.free)
    x0 = np.concatenate((np.zeros((len(free), 3)), problem.extrinsic[free, :, 3]), axis=1).ravel()
    x0 = np.concatenate((x0, np.asarray(problem.points, np.float64).ravel()))
    if problem.focal_prior is not None:
        x0 = np.append(x0, 0.0)
    result = least_squares(
        _residuals, x0, jac_sparsity=_sparsity(problem), method="trf", loss="soft_l1", f_scale=3.0,
        x_scale="jac", max_nfev=max_iterations, args=(problem, sigma_px, sigma_log_depth),
    )  # fmt: skip
    R, t, X, log_focal = _unpack(problem, result.x)
    K = scale_focal(problem.intrinsic, log_focal)[problem.frame]
    uv, _ = project(R[problem.frame], t[problem.frame], K, X[problem.point])
    extrinsic = np.concatenate((R, t[..., None]), axis=-1)
    return extrinsic, X, np.linalg.norm(uv - problem.xy, axis=-1), log_focal
