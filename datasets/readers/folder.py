"""A folder of images as a `Sequence`, with an optional trajectory and intrinsics.

Images are taken in natural sort order ("frame2" < "frame10"); other files are skipped with
one warning naming them (dot-files and sub-folders silently). `natural_key`,
`IMAGE_EXTENSIONS` and `list_images` are public so live frame sources can share them.

Ground truth:
- `trajectory`: a TUM file (8 numbers per row) is associated by timestamp, nearest row within
  `max_dt` (timestamps come from the file names when every name is a number, e.g.
  "1341847980.722988.png", else they are the frame indices 0, 1, 2, ...); a KITTI file
  (12 numbers per row) is associated by order and must have one row per image.
  With `require_pose` (default) frames without a pose within `max_dt` are dropped; otherwise
  they are kept with `extrinsic=None`.
- `intrinsic`: a text file ("fx fy cx cy" or a 3x3 matrix), a [3, 3] array or (fx, fy, cx, cy).
  It is taken in the project's corner convention unless `pixel_center=True` (OpenCV-style
  calibrations, where (0, 0) is the centre of the top-left pixel: 0.5 is added to cx, cy).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np

from recon.datasets.trajectory import Trajectory, read_kitti, read_tum
from recon.datasets.types import Frame, Sequence

from .common import as_intrinsic, associate, existing_dir, load_rgb, read_intrinsic_file, timestamps_from_names

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str | os.PathLike) -> tuple:
    """Sort key that orders embedded numbers by value: "frame2" < "frame10".

    Case-insensitive; the original name breaks ties ("a01" vs "a1") so the order is total.
    """
    text = Path(name).name if isinstance(name, os.PathLike) else str(name)
    # re.split with a capture group alternates text (even) and digits (odd), so two keys
    # always compare str with str and int with int at the same position.
    parts = _DIGITS.split(text.lower())
    return (*(int(p) if i % 2 else p for i, p in enumerate(parts)), text)


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike, warn: bool = True, ignore: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Image files of `folder` (not recursive) in natural sort order.

    Non-image files are skipped with one warning naming them (unless `warn=False` or they are
    listed in `ignore`); dot-files and sub-folders are skipped silently.
    Raises FileNotFoundError / NotADirectoryError for a bad path and ValueError when the
    folder holds no image.
    """
    folder = existing_dir(folder, "image folder")
    ignored = {Path(p).name for p in ignore}
    images, skipped = [], []
    for entry in folder.iterdir():
        if entry.name.startswith(".") or entry.is_dir():
            continue
        if is_image_file(entry):
            images.append(entry)
        elif entry.name not in ignored:
            skipped.append(entry.name)
    if skipped and warn:
        names = sorted(skipped, key=natural_key)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        warnings.warn(f"{folder}: skipping {len(names)} non-image file(s): {shown}", stacklevel=2)
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder: {folder}")
    return sorted(images, key=natural_key)


def read_trajectory(path: str | os.PathLike, fmt: Literal["auto", "tum", "kitti"] = "auto") -> tuple[Trajectory, str]:
    """Read a TUM or KITTI trajectory; "auto" decides by the number of values per row (8 / 12)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    if fmt == "auto":
        with open(path) as f:
            widths = (len(line.split("#", 1)[0].replace(",", " ").split()) for line in f)
            width = next((w for w in widths if w), 0)
        fmt = {8: "tum", 12: "kitti"}.get(width)
        if fmt is None:
            raise ValueError(f"{path}: not a TUM (8 values per row) or KITTI (12) trajectory, rows have {width}")
    if fmt == "tum":
        return read_tum(path), fmt
    if fmt == "kitti":
        return read_kitti(path), fmt
    raise ValueError(f"unknown trajectory format {fmt!r} (expected 'auto', 'tum' or 'kitti')")


class FolderSequence(Sequence):
    """Images of one folder, optionally with ground-truth poses and intrinsics (see module doc)."""

    def __init__(
        self,
        path: str | os.PathLike,
        trajectory: str | os.PathLike | None = None,
        trajectory_format: Literal["auto", "tum", "kitti"] = "auto",
        intrinsic: str | os.PathLike | np.ndarray | Iterable[float] | None = None,
        pixel_center: bool = False,
        max_dt: float = 0.02,
        require_pose: bool = True,
    ) -> None:
        self.root = existing_dir(path, "image folder")
        self.name = self.root.name
        side_files = [p for p in (trajectory, intrinsic) if isinstance(p, (str, os.PathLike))]
        paths = list_images(self.root, ignore=side_files)
        stamps = timestamps_from_names(paths)
        self._timestamps = np.arange(len(paths), dtype=np.float64) if stamps is None else stamps

        self._intrinsic = None
        if isinstance(intrinsic, (str, os.PathLike)):
            self._intrinsic = read_intrinsic_file(intrinsic, pixel_center)
        elif intrinsic is not None:
            self._intrinsic = as_intrinsic(intrinsic, "intrinsic", pixel_center)

        keep = np.arange(len(paths))
        self._extrinsics: np.ndarray | None = None
        if trajectory is not None:
            traj, fmt = read_trajectory(trajectory, trajectory_format)
            if fmt == "kitti":
                if len(traj) != len(paths):
                    raise ValueError(f"{trajectory}: {len(traj)} KITTI poses for {len(paths)} images in {self.root}")
                match = np.arange(len(paths))
            else:
                match = associate(self._timestamps, traj.timestamps, max_dt)
            extrinsics = traj.extrinsics()
            if require_pose:
                keep = np.flatnonzero(match >= 0)
                if len(keep) == 0:
                    raise ValueError(f"{trajectory}: no pose within {max_dt} s of any image time in {self.root}")
            self._extrinsics = np.stack([extrinsics[m] if m >= 0 else np.full((3, 4), np.nan) for m in match[keep]])
        self._paths = [paths[i] for i in keep]
        self._timestamps = self._timestamps[keep]

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def paths(self) -> list[Path]:
        return list(self._paths)

    def frame(self, i: int) -> Frame:
        path = self._paths[i]
        extrinsic = None
        if self._extrinsics is not None and not np.isnan(self._extrinsics[i, 0, 0]):
            extrinsic = self._extrinsics[i].copy()
        return Frame(
            image=load_rgb(path),
            timestamp=float(self._timestamps[i]),
            index=i,
            intrinsic=None if self._intrinsic is None else self._intrinsic.copy(),
            extrinsic=extrinsic,
            name=path.name,
            extras={"path": str(path)},
        )
