"""Least-squares similarity / rigid alignment of point sets (Umeyama 1991), float64 numpy.

`umeyama(src, dst, with_scale)` returns `(s, R, t)` minimising
`sum_i ||dst_i - (s R src_i + t)||^2`; `Sim3` packages such a transform.

Degenerate input raises `ValueError` rather than returning an arbitrary rotation:
fewer than 3 point pairs, all source (or target) points coincident, or points on one line
(the rotation about that line is then undetermined). Exactly coplanar points are fine: the
reflection fix below picks the proper rotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Singular values of the cross-covariance below this fraction of the largest count as zero.
_RANK_RTOL = 1e-10


def _as_points(points: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name} must be [N, 3] points, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"{name} contains non-finite values")
    return p


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """Align `src` [N, 3] onto `dst` [N, 3] (row i of one corresponds to row i of the other).

    Returns `(s, R [3, 3], t [3])` with `dst ≈ s * R @ src + t`; `s == 1.0` when
    `with_scale` is False (Kabsch). Raises ValueError on degenerate input (see module doc).
    """
    src, dst = _as_points(src, "src"), _as_points(dst, "dst")
    if len(src) != len(dst):
        raise ValueError(f"src and dst must hold the same number of points, got {len(src)} and {len(dst)}")
    if len(src) < 3:
        raise ValueError(f"alignment needs at least 3 point pairs, got {len(src)}")
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = float((src_c**2).sum() / len(src))
    if var_src == 0.0 or not (dst_c**2).sum() > 0.0:
        raise ValueError("alignment is degenerate: all src or all dst points coincide")
    cov = dst_c.T @ src_c / len(src)  # [3, 3] cross-covariance
    U, d, Vt = np.linalg.svd(cov)
    # Rank < 2 (collinear or coincident points) leaves the rotation about the line free.
    if d[1] <= _RANK_RTOL * d[0]:
        raise ValueError("alignment is degenerate: the points are collinear (rank < 2 cross-covariance)")
    S = np.ones(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2] = -1.0  # the best orthogonal map is a reflection: flip the weakest axis
    R = U @ np.diag(S) @ Vt
    s = float((d * S).sum() / var_src) if with_scale else 1.0
    t = mu_dst - s * R @ mu_src
    return s, R, t


@dataclass(frozen=True)
class Sim3:
    """Similarity transform `x -> s R x + t` (float64). The identity by default."""

    s: float = 1.0
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        R = np.asarray(self.R, dtype=np.float64)
        t = np.asarray(self.t, dtype=np.float64).reshape(-1)
        if R.shape != (3, 3) or t.shape != (3,):
            raise ValueError(f"Sim3 needs R [3, 3] and t [3], got {R.shape} and {t.shape}")
        if not (np.isfinite(self.s) and self.s > 0):
            raise ValueError(f"Sim3 scale must be finite and > 0, got {self.s}")
        object.__setattr__(self, "s", float(self.s))
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)

    @classmethod
    def estimate(cls, src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> "Sim3":
        """The transform that best maps `src` [N, 3] onto `dst` [N, 3] (see `umeyama`)."""
        return cls(*umeyama(src, dst, with_scale))

    @classmethod
    def from_matrix(cls, m: np.ndarray) -> "Sim3":
        """[4, 4] `[[s R, t], [0, 1]]` -> Sim3."""
        m = np.asarray(m, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"Sim3 matrix must be [4, 4], got {m.shape}")
        s = float(np.cbrt(np.linalg.det(m[:3, :3])))
        return cls(s, m[:3, :3] / s, m[:3, 3])

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points [..., 3] -> [..., 3]."""
        p = np.asarray(points, dtype=np.float64)
        return self.s * p @ self.R.T + self.t

    def apply_to_poses(self, poses: np.ndarray) -> np.ndarray:
        """World-from-camera poses [N, 4, 4] -> poses in the new world frame [N, 4, 4].

        Rotations are left-multiplied by R and positions mapped by `apply`; the scale does
        not enter the rotation block, so the result stays a valid SE(3) pose.
        """
        out = np.array(poses, dtype=np.float64, copy=True)
        out[:, :3, :3] = self.R @ out[:, :3, :3]
        out[:, :3, 3] = self.apply(out[:, :3, 3])
        return out

    def inverse(self) -> "Sim3":
        Rt = self.R.T
        return Sim3(1.0 / self.s, Rt, -(Rt @ self.t) / self.s)

    def compose(self, other: "Sim3") -> "Sim3":
        """`self ∘ other`: apply `other` first, then `self`."""
        return Sim3(self.s * other.s, self.R @ other.R, self.s * self.R @ other.t + self.t)

    def matrix(self) -> np.ndarray:
        """[4, 4] homogeneous matrix `[[s R, t], [0, 1]]`."""
        m = np.eye(4)
        m[:3, :3] = self.s * self.R
        m[:3, 3] = self.t
        return m
