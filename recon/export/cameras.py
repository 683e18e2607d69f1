"""Per-frame cameras kept for the whole stream (a few hundred bytes each), and their files:
TUM / KITTI trajectories and a JSON file of intrinsics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.atomic import write_text_atomic
from recon.datasets.trajectory import Trajectory, write_kitti, write_tum
from recon.session import FramePrediction

PIXEL_CONVENTION = (
    "pixels, continuous coordinates with (0, 0) at the top-left corner of the top-left pixel "
    "(pixel centre of row i, column j at (j + 0.5, i + 0.5)), as in COLMAP; for OpenCV-style "
    "intrinsics (top-left pixel centre at 0) subtract 0.5 from cx and cy"
)


@dataclass(frozen=True)
class FrameCamera:
    index: int
    timestamp: float
    extrinsic: np.ndarray  # [3, 4] camera-from-world, float64
    intrinsic: np.ndarray  # [3, 3] model-input pixels
    intrinsic_original: np.ndarray  # [3, 3] original-image pixels
    model_hw: tuple[int, int]
    original_hw: tuple[int, int]

    @classmethod
    def from_prediction(cls, pred: FramePrediction) -> "FrameCamera":
        return cls(
            index=int(pred.index),
            timestamp=float(pred.timestamp),
            extrinsic=np.asarray(pred.extrinsic, dtype=np.float64).copy(),
            intrinsic=np.asarray(pred.intrinsic, dtype=np.float64).copy(),
            intrinsic_original=np.asarray(pred.intrinsic_original, dtype=np.float64).copy(),
            model_hw=tuple(int(s) for s in pred.transform.model_hw),
            original_hw=tuple(int(s) for s in pred.transform.original_hw),
        )


def _pinhole(K: np.ndarray, hw: tuple[int, int]) -> dict:
    return {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "width": int(hw[1]), "height": int(hw[0])}  # fmt: skip


def write_trajectories(out_dir: Path, cameras: list[FrameCamera]) -> dict[str, Path]:
    """trajectory_tum.txt and trajectory_kitti.txt (world-from-camera, one line per frame)."""
    traj = Trajectory.from_extrinsics(np.stack([c.extrinsic for c in cameras]),
                                      np.array([c.timestamp for c in cameras]))  # fmt: skip
    paths = {"traj_tum": out_dir / "trajectory_tum.txt", "traj_kitti": out_dir / "trajectory_kitti.txt"}
    write_tum(paths["traj_tum"], traj)
    write_kitti(paths["traj_kitti"], traj)
    return paths


def write_intrinsics(path: Path, cameras: list[FrameCamera]) -> Path:
    """JSON: the pixel convention and, per frame, pinhole intrinsics at model and original resolution."""
    doc = {
        "convention": PIXEL_CONVENTION,
        "frames": [
            {"index": c.index, "timestamp": c.timestamp,
             "model": _pinhole(c.intrinsic, c.model_hw), "original": _pinhole(c.intrinsic_original, c.original_hw)}
            for c in cameras
        ],  # fmt: skip
    }
    write_text_atomic(path, json.dumps(doc, indent=1) + "\n")
    return path
