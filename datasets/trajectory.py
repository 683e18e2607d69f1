"""Trajectory files: TUM (`t tx ty tz qx qy qz qw`) and KITTI (12 numbers, row-major 3x4).

Both formats store *world-from-camera* poses (the camera's pose in the world); the rest of
streamrecon uses camera-from-world extrinsics, so readers/writers take and return
`Trajectory` objects that hold poses as world-from-camera [N, 4, 4] float64 and offer
`extrinsics()` for the other direction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.atomic import write_text_atomic


@dataclass
class Trajectory:
    poses: np.ndarray  # [N, 4, 4] world-from-camera
    timestamps: np.ndarray  # [N] seconds (frame indices when the format has none)

    def __post_init__(self) -> None:
        self.poses = np.asarray(self.poses, dtype=np.float64)
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        if self.poses.ndim != 3 or self.poses.shape[1:] != (4, 4) or len(self.poses) != len(self.timestamps):
            raise ValueError(f"poses must be [N, 4, 4] with N timestamps, got {self.poses.shape} and "
                             f"{self.timestamps.shape}")

    def __len__(self) -> int:
        return len(self.poses)

    @property
    def positions(self) -> np.ndarray:
        return self.poses[:, :3, 3]

    def extrinsics(self) -> np.ndarray:
        """Camera-from-world [N, 3, 4]."""
        R, t = self.poses[:, :3, :3], self.poses[:, :3, 3]
        Rt = np.transpose(R, (0, 2, 1))
        return np.concatenate((Rt, -Rt @ t[..., None]), axis=2)

    @classmethod
    def from_extrinsics(cls, extrinsics: np.ndarray, timestamps: np.ndarray) -> "Trajectory":
        E = np.asarray(extrinsics, dtype=np.float64)
        R, t = E[:, :3, :3], E[:, :3, 3]
        poses = np.tile(np.eye(4), (len(E), 1, 1))
        poses[:, :3, :3] = np.transpose(R, (0, 2, 1))
        poses[:, :3, 3] = -(poses[:, :3, :3] @ t[..., None])[..., 0]
        return cls(poses, timestamps)

    def subset(self, indices) -> "Trajectory":
        return Trajectory(self.poses[indices], self.timestamps[indices])


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack(
        (
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ),
        axis=-1,
    ).reshape(q.shape[:-1] + (3, 3))  # fmt: skip


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] -> unit quaternions [..., 4] (x, y, z, w), w >= 0."""
    import torch

    from recon.align.rotation import mat_to_quat

    return mat_to_quat(torch.from_numpy(np.asarray(R, dtype=np.float64))).numpy()


def _numeric_rows(path: Path, width: int) -> np.ndarray:
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            text = line.split("#", 1)[0].replace(",", " ").strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) != width:
                raise ValueError(f"{path}:{lineno}: expected {width} numbers, got {len(parts)}")
            try:
                rows.append([float(p) for p in parts])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: not a number in {text!r}") from None
    if not rows:
        raise ValueError(f"{path}: no poses")
    return np.asarray(rows, dtype=np.float64)


def read_tum(path: str | os.PathLike) -> Trajectory:
    rows = _numeric_rows(Path(path), 8)
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :3] = quat_xyzw_to_matrix(rows[:, 4:8])
    poses[:, :3, 3] = rows[:, 1:4]
    return Trajectory(poses, rows[:, 0])


def write_tum(path: str | os.PathLike, traj: Trajectory) -> None:
    q = matrix_to_quat_xyzw(traj.poses[:, :3, :3])
    lines = ["# timestamp tx ty tz qx qy qz qw  (world-from-camera)"]
    for t, p, qq in zip(traj.timestamps, traj.positions, q):
        lines.append(" ".join(f"{v:.9f}" if i == 0 else f"{v:.9g}" for i, v in enumerate((t, *p, *qq))))
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_kitti(path: str | os.PathLike, timestamps: np.ndarray | None = None) -> Trajectory:
    rows = _numeric_rows(Path(path), 12)
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :4] = rows.reshape(-1, 3, 4)
    stamps = np.arange(len(rows), dtype=np.float64) if timestamps is None else np.asarray(timestamps)
    return Trajectory(poses, stamps)


def write_kitti(path: str | os.PathLike, traj: Trajectory) -> None:
    lines = [" ".join(f"{v:.9g}" for v in pose[:3, :4].reshape(-1)) for pose in traj.poses]
    write_text_atomic(path, "\n".join(lines) + "\n")
