"""Rotations. Quaternions are scalar-last (x, y, z, w), as in the VGGT pose encoding.

Works for torch tensors of any batch shape [..., 4] / [..., 3, 3]; `hat` and
`rotation_angle_deg` are numpy (the numpy geometry of recon.refine, the pose smoothing of
recon.model.horizon_poses, the trajectory metrics of recon.eval).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def hat(w: np.ndarray) -> np.ndarray:
    """[..., 3] -> [..., 3, 3] cross-product matrices: hat(w) @ v == cross(w, v)."""
    x, y, z = w[..., 0], w[..., 1], w[..., 2]
    o = np.zeros_like(x)
    return np.stack((o, -z, y, z, o, -x, -y, x, o), axis=-1).reshape(w.shape[:-1] + (3, 3))


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Rotation angle in degrees of rotation matrices [M, 3, 3] -> [M] (atan2 form: accurate near 0)."""
    axis = np.stack((R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]), axis=1)
    cos = np.trace(R, axis1=1, axis2=2) - 1.0
    return np.degrees(np.arctan2(np.linalg.norm(axis, axis=1), cos))


def quat_to_mat(q: Tensor) -> Tensor:
    """[..., 4] (x, y, z, w), not necessarily unit -> [..., 3, 3] rotation matrix."""
    x, y, z, w = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)
    m = torch.stack(
        (
            1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
            s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
            s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
        ),
        dim=-1,
    )  # fmt: skip
    return m.reshape(q.shape[:-1] + (3, 3))


def mat_to_quat(m: Tensor) -> Tensor:
    """[..., 3, 3] rotation -> [..., 4] unit quaternion (x, y, z, w) with w >= 0.

    Picks, per matrix, the numerically best of the four standard formulas (largest
    diagonal term), so it is stable near 180 degree rotations too.
    """
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Each candidate is 4 * (one component) * q, computed from the matrix.
    candidates = torch.stack(
        (
            torch.stack((1 + m00 - m11 - m22, m01 + m10, m02 + m20, m21 - m12), -1),
            torch.stack((m01 + m10, 1 - m00 + m11 - m22, m12 + m21, m02 - m20), -1),
            torch.stack((m02 + m20, m12 + m21, 1 - m00 - m11 + m22, m10 - m01), -1),
            torch.stack((m21 - m12, m02 - m20, m10 - m01, 1 + m00 + m11 + m22), -1),
        ),
        dim=-2,
    )  # [..., 4, 4]
    diag = torch.stack((m00 - m11 - m22, -m00 + m11 - m22, -m00 - m11 + m22, m00 + m11 + m22), -1)
    best = diag.argmax(-1, keepdim=True)
    q = torch.gather(candidates, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:] < 0, -q, q)
