"""Helpers shared by the dataset readers: path checks, image/depth loading, intrinsics,
timestamp association and pose inversion.

Pixel convention of the project: (0, 0) is the top-left *corner* of the top-left pixel.
Calibrations given in the OpenCV / pixel-centre convention ((0, 0) at the *centre* of the
top-left pixel) are converted by adding `PIXEL_CENTER_SHIFT` to cx and cy.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from recon.preprocess import read_image

PIXEL_CENTER_SHIFT = 0.5


def existing_dir(path: str | os.PathLike, what: str = "dataset folder") -> Path:
    """Return `path` as a Path, or raise a one-line error naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} is not a folder: {path}")
    return path


def intrinsic_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """[3, 3] float64 pinhole matrix."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def read_numbers(path: str | os.PathLike) -> np.ndarray:
    """All numbers of a small text file (whitespace or comma separated, '#' comments)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    values = []
    for line in path.read_text().splitlines():
        for part in line.split("#", 1)[0].replace(",", " ").split():
            try:
                values.append(float(part))
            except ValueError:
                raise ValueError(f"{path}: not a number: {part!r}") from None
    return np.asarray(values, dtype=np.float64)


def read_intrinsic_file(path: str | os.PathLike, pixel_center: bool = False) -> np.ndarray:
    """Read "fx fy cx cy [distortion...]" (4 to 8 numbers) or a row-major 3x3 matrix (9).

    Distortion coefficients are ignored (a warning says so when they are non-zero).
    `pixel_center`: the file uses the pixel-centre convention, so 0.5 is added to cx, cy.
    Returns [3, 3] float64 in the project's corner convention.
    """
    values = read_numbers(path)
    if len(values) == 9:
        K = values.reshape(3, 3)
        if not np.allclose(K[2], (0, 0, 1)) or K[0, 1] != 0 or K[1, 0] != 0:
            raise ValueError(f"{path}: not a pinhole intrinsic matrix: {values.tolist()}")
        K = K.copy()
    elif 4 <= len(values) <= 8:
        K = intrinsic_matrix(*values[:4])
        if np.any(values[4:] != 0):
            warnings.warn(f"{path}: distortion coefficients {values[4:].tolist()} are ignored", stacklevel=2)
    else:
        raise ValueError(f"{path}: expected 'fx fy cx cy' or a 3x3 matrix, got {len(values)} numbers")
    return as_intrinsic(K, str(path), pixel_center)


def as_intrinsic(value, label: str, pixel_center: bool = False) -> np.ndarray:
    """A [3, 3] matrix or (fx, fy, cx, cy) -> validated [3, 3] float64 (corner convention)."""
    K = np.asarray(value, dtype=np.float64)
    if K.shape == (4,):
        K = intrinsic_matrix(*K)
    if K.shape != (3, 3):
        raise ValueError(f"{label}: intrinsic must be [3, 3] or (fx, fy, cx, cy), got shape {K.shape}")
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"{label}: invalid intrinsic {K.tolist()}")
    K = K.copy()
    if pixel_center:
        K[0, 2] += PIXEL_CENTER_SHIFT
        K[1, 2] += PIXEL_CENTER_SHIFT
    return K


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Image file -> [H, W, 3] RGB, keeping its bit depth (uint8, or uint16 for 16-bit files).

    Grayscale is repeated to three channels; an alpha channel is dropped, not composited.
    """
    image = read_image(path)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        image = np.ascontiguousarray(image[:, :, :3])
    elif image.shape[2] != 3:
        raise ValueError(f"unsupported channel count {image.shape[2]} in image: {path}")
    return image


def read_depth_png(path: str | os.PathLike, scale: float, invalid: int | None = None) -> np.ndarray:
    """16-bit depth PNG -> [H, W] float32 metres (value / `scale`), 0 where invalid."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth map not found: {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"could not read depth map (unsupported or corrupt): {path}")
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise ValueError(f"expected a single-channel 16-bit depth PNG, got {raw.dtype} {raw.shape}: {path}")
    depth = raw.astype(np.float32) / np.float32(scale)
    if invalid is not None:
        depth[raw == invalid] = 0.0
    return depth


def timestamps_from_names(paths: Iterable[Path]) -> np.ndarray | None:
    """[N] float64 timestamps parsed from file stems ("1341847980.722988.png"), or None
    when any stem is not a number."""
    stamps = []
    for p in paths:
        try:
            stamps.append(float(p.stem))
        except ValueError:
            return None
    values = np.asarray(stamps, dtype=np.float64)
    return values if np.all(np.isfinite(values)) else None


def associate(query: np.ndarray, reference: np.ndarray, max_dt: float) -> np.ndarray:
    """For each query time [N] the index of the nearest reference time [M] when it is
    within `max_dt` seconds, else -1. Returns [N] int64."""
    query = np.asarray(query, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    out = np.full(len(query), -1, dtype=np.int64)
    if len(reference) == 0 or len(query) == 0:
        return out
    order = np.argsort(reference, kind="stable")
    ref = reference[order]
    right = np.clip(np.searchsorted(ref, query), 1, len(ref) - 1) if len(ref) > 1 else np.zeros(len(query), int)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(ref[left] - query) <= np.abs(ref[right] - query), left, right)
    ok = np.abs(ref[nearest] - query) <= max_dt
    out[ok] = order[nearest[ok]]
    return out


def extrinsic_from_pose(world_from_camera: np.ndarray, label: str) -> np.ndarray:
    """[4, 4] (or [3, 4]) rigid world-from-camera -> [3, 4] float64 camera-from-world."""
    T = np.asarray(world_from_camera, dtype=np.float64)
    if T.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(T)):
        raise ValueError(f"{label}: invalid pose {T.tolist()}")
    R, t = T[:3, :3], T[:3, 3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3):
        raise ValueError(f"{label}: pose rotation is not orthonormal")
    return np.concatenate((R.T, -R.T @ t[:, None]), axis=1)
