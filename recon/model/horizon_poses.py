"""Relative window poses -> absolute camera poses, online (HorizonStream's motion averaging).

Each frame's camera head predicts the poses of the frames in its window, camera-from-
"current camera" ([B, L, 3, 4], the current frame last). With the absolute poses of the
window's past frames known, each past frame j gives one estimate of the current pose:

    R = R_rel_j^T R_abs_j,      C = C_abs_j + R_abs_j^T t_rel_j    (C: camera centre)

and the current pose is their median: the rotation median on SO(3) (iterated coordinate-
wise median of log residuals, from every estimate as a starting point, best median angle
error wins) and the coordinate-wise median of the centres. Everything is causal: frame n
needs only frames < n. Raw poses are expressed relative to the first frame at the end.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from recon.align import hat, mat_to_quat, quat_to_mat
from recon.attention import PoseHistory


# The SO(3) median iterates on a handful of 3x3 matrices, up to 1000 times per frame: numpy's
# per-operation overhead is a fraction of torch's there, so it runs in numpy (float32).


def so3_exp(w: np.ndarray) -> np.ndarray:
    """Axis-angle [..., 3] -> rotation [..., 3, 3] (Rodrigues, series near zero)."""
    theta = np.linalg.norm(w, axis=-1)[..., None, None]
    t2 = theta * theta
    small = theta < 1e-8
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(small, 1 - t2 / 6 + t2 * t2 / 120, np.sin(theta) / theta)
        b = np.where(small, 0.5 - t2 / 24 + t2 * t2 / 720, (1 - np.cos(theta)) / t2)
    K = hat(w)
    return np.eye(3, dtype=w.dtype) + a * K + b * (K @ K)


def so3_log(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation [..., 3, 3] -> (axis-angle [..., 3], angle [...]), stable near 0 and pi."""
    theta = np.arccos(np.clip((R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1) / 2, -1.0, 1.0))
    vee = np.stack((R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]), -1)
    w = (theta / (2 * np.sin(theta) + 1e-8))[..., None] * vee
    w = np.where((theta < 1e-4)[..., None], 0.5 * vee, w)
    near_pi = math.pi - theta < 1e-4
    if near_pi.any():  # the axis from the diagonal, its signs from the skew part
        axis = np.sqrt(np.clip((np.diagonal(R, axis1=-2, axis2=-1) + 1) / 2, 0, None)) * np.sign(vee)
        axis = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-8)
        w = np.where(near_pi[..., None], theta[..., None] * axis, w)
    return w, theta


def _median(x: np.ndarray, axis: int) -> np.ndarray:
    """Median with the midpoint of the two middle values for even counts."""
    xs = np.sort(x, axis=axis)
    n = xs.shape[axis]
    if n % 2:
        return np.take(xs, n // 2, axis=axis)
    return 0.5 * (np.take(xs, n // 2 - 1, axis=axis) + np.take(xs, n // 2, axis=axis))


def median_rotation(rotations: Tensor, eps: float = 1e-5, max_iters: int = 1000, patience: int | None = 50) -> Tensor:
    """[B, N, 3, 3] -> [B, 3, 3]: the rotation whose log residuals to the inputs have a zero
    coordinate-wise median, started from every input; the lowest median angle error wins.

    Some starts never converge when the inputs disagree strongly (the iteration wanders
    until max_iters, hundreds of milliseconds). With `patience`, once every batch row has a
    converged start, the others get 2 * (iterations so far) + patience more iterations;
    None runs them all to max_iters. Consistent inputs converge long before either limit
    (the result is the same); only starts that converge that late can be dropped."""
    R = rotations.detach().float().cpu().numpy()
    B, N = R.shape[:2]
    current = R.copy()  # [B, N candidates, 3, 3]
    error = np.full((B, N), np.inf, dtype=np.float32)
    done = np.zeros((B, N), dtype=bool)
    stop = max_iters
    for it in range(max_iters):
        if it >= stop:
            break
        vec, angle = so3_log(R[:, None] @ np.swapaxes(current, -1, -2)[:, :, None])  # [B, T, W, 3]
        step = _median(vec, axis=2)  # [B, T, 3]
        new = (np.linalg.norm(step, axis=-1) < eps) & ~done
        if new.any():
            error = np.where(new, _median(angle, axis=2), error)
            done |= new
            if patience is not None and stop == max_iters and done.any(axis=1).all():
                stop = min(max_iters, 3 * (it + 1) + patience)
        if done.all():
            break
        current = np.where(done[..., None, None], current, so3_exp(step) @ current)
    chosen = current[np.arange(B), error.argmin(axis=1)]
    out = np.where(np.isfinite(error.min(axis=1))[:, None, None], chosen, R[:, 0])
    return torch.from_numpy(out).to(rotations.device)


def fuse_absolute_pose(relative: Tensor, past_absolute: Tensor) -> Tensor:
    """relative [B, L, 3, 4] (window poses, camera-from-current, current last); past_absolute
    [B, L-1, 3, 4] (raw absolute poses of the window's past frames) -> current raw pose [B, 3, 4]."""
    R_rel, t_rel = relative[:, :-1, :, :3], relative[:, :-1, :, 3:]
    R_abs, t_abs = past_absolute[..., :3], past_absolute[..., 3:]
    R = median_rotation(R_rel.transpose(-1, -2) @ R_abs)
    centres = -R_abs.transpose(-1, -2) @ t_abs + R_abs.transpose(-1, -2) @ t_rel  # [B, L-1, 3, 1]
    C = centres.median(dim=1).values  # lower median for even counts, like torch.median
    return torch.cat((R, -R @ C), dim=-1)


def relative_to_first(raw: Tensor, first: Tensor) -> Tensor:
    """Raw poses [..., 3, 4] -> camera-from-world with world = the first camera."""
    R, t = raw[..., :3], raw[..., 3:]
    R0, t0 = first[..., :3], first[..., 3:]
    R_rel = R @ R0.transpose(-1, -2)
    return torch.cat((R_rel, t - R_rel @ t0), dim=-1)


def absolute_from_windows(window: Tensor, lengths: list[int], history: PoseHistory, joint: bool = False) -> Tensor:
    """Window poses [B, S, Wmax, 9] (row s: `lengths[s]` active slots, current frame last)
    -> camera-from-world [B, S, 3, 4] relative to the stream's first frame, frame by frame;
    `history` (raw poses of past frames) is read and extended.

    joint: HorizonStream's first chunk, whose frames all take their pose from its last row."""
    rel = torch.cat((quat_to_mat(window[..., 3:7]), window[..., :3, None]), dim=-1)  # [B, S, Wm, 3, 4]
    raws = []
    for s, L in enumerate(lengths):
        if joint:
            raw = rel[:, -1, s]
        elif history.seen == 0:
            raw = rel[:, s, L - 1]
        else:
            raw = fuse_absolute_pose(rel[:, s, :L], history.last(L - 1))
        raws.append(raw)
        history.push(raw)
    return relative_to_first(torch.stack(raws, dim=1), history.first[:, None])


def pose_to_encoding(w2c: Tensor, fov: Tensor) -> Tensor:
    """camera-from-world [..., 3, 4] + fov [..., 2] -> pose encoding [..., 9]."""
    return torch.cat((w2c[..., 3], mat_to_quat(w2c[..., :3]), fov), dim=-1)


def median_window_fov(window_fov: list[Tensor], window: int) -> Tensor:
    """Offline field of view: per frame, the median over every window row that saw it.

    window_fov: one [B, window, 2] per row, row r covering frames r .. r + window - 1 (the
    first row covers the first `window` frames). Returns [B, rows + window - 1, 2]."""
    rows = torch.stack(window_fov, dim=1)  # [B, R, Win, 2]
    B, R, Win, _ = rows.shape
    out = rows.new_empty(B, R + Win - 1, 2)
    for c in range(R + Win - 1):
        i = torch.arange(max(0, c - Win + 1), min(c, R - 1) + 1, device=rows.device)
        out[:, c] = rows[:, i, c - i].median(dim=1).values
    return out
