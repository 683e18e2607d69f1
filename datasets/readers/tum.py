"""TUM RGB-D sequences (Sturm et al., IROS 2012).

Layouts:
- the official one: rgb.txt / depth.txt ("timestamp filename" rows), groundtruth.txt;
- a folder rgb/ (and optionally depth/) of files named by their timestamp
  ("1341847980.722988.png"), without the list files, plus groundtruth.txt.

Association: every RGB frame takes the depth map and the ground-truth row nearest in time,
each only within `max_dt` (default 0.02 s). No interpolation. With `require_pose` (default,
what evaluation needs) frames without a ground-truth row within `max_dt` are dropped; with
`require_pose=False` they are kept with `extrinsic=None`. A sequence without
groundtruth.txt (TUM's validation sequences) keeps every frame without poses. A frame without
a depth map within `max_dt` has `depth=None`.

groundtruth.txt holds world-from-camera poses (`t tx ty tz qx qy qz qw`); frames carry the
inverse, camera-from-world. Depth PNGs are 16-bit with 5000 units per metre, 0 = invalid.

Intrinsics, first found of: the `intrinsic` argument (taken as-is, corner convention); a
`calib*.txt` file in the folder ("fx fy cx cy"); TUM's published values for the camera
named in the folder name (freiburg1/fr1, freiburg2/fr2, freiburg3/fr3). TUM's cx, cy are in
the pixel-centre convention ((0, 0) at the centre of the top-left pixel), so 0.5 is added to
both to reach the project's corner convention. fr1/fr2 images are distorted (published
d0..d4); the distortion is ignored here. fr3 images are already undistorted.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from recon.datasets.trajectory import read_tum
from recon.datasets.types import Frame, Sequence

from .common import (
    as_intrinsic,
    associate,
    existing_dir,
    intrinsic_matrix,
    load_rgb,
    read_depth_png,
    read_intrinsic_file,
    timestamps_from_names,
)
from .folder import list_images

# fx, fy, cx, cy in TUM's pixel-centre convention.
TUM_INTRINSICS = {
    1: (517.3, 516.5, 318.6, 255.3),
    2: (520.9, 521.0, 325.1, 249.7),
    3: (535.4, 539.2, 320.1, 247.6),
}
DEPTH_SCALE = 5000.0  # depth PNG units per metre

_CAMERA_IN_NAME = re.compile(r"(?<![a-z])(?:freiburg|fr)_?([123])(?![0-9])")


def read_file_list(path: Path) -> tuple[np.ndarray, list[Path]]:
    """rgb.txt / depth.txt -> ([N] timestamps, [N] paths relative to the list's folder)."""
    stamps, files = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        try:
            stamps.append(float(parts[0]))
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected 'timestamp filename', got {text!r}") from None
        if len(parts) < 2:
            raise ValueError(f"{path}:{lineno}: expected 'timestamp filename', got {text!r}")
        files.append(path.parent / parts[1])
    return np.asarray(stamps, dtype=np.float64), files


def _stamped_files(root: Path, kind: str) -> tuple[np.ndarray, list[Path]] | None:
    """Timestamps and files of `kind` ("rgb" / "depth") from kind.txt, else from kind/ names."""
    if (root / f"{kind}.txt").is_file():
        return read_file_list(root / f"{kind}.txt")
    if (root / kind).is_dir():
        files = list_images(root / kind)
        stamps = timestamps_from_names(files)
        if stamps is None:
            raise ValueError(f"{root / kind}: file names are not timestamps and there is no {kind}.txt")
        return stamps, files
    return None


def tum_intrinsic(root: Path) -> np.ndarray | None:
    """Intrinsics from a calib*.txt in `root`, else from fr1/fr2/fr3 in its name (corner convention)."""
    calib = sorted(root.glob("calib*.txt"))
    if calib:
        return read_intrinsic_file(calib[0], pixel_center=True)
    match = _CAMERA_IN_NAME.search(root.name.lower())
    if match:
        return as_intrinsic(intrinsic_matrix(*TUM_INTRINSICS[int(match.group(1))]), str(root), pixel_center=True)
    return None


class TUMSequence(Sequence):
    """One TUM RGB-D sequence folder (see module doc for layout, association and conventions)."""

    def __init__(
        self,
        path: str | os.PathLike,
        max_dt: float = 0.02,
        require_pose: bool = True,
        intrinsic: np.ndarray | Iterable[float] | None = None,
        depth_scale: float = DEPTH_SCALE,
    ) -> None:
        self.root = existing_dir(path, "TUM sequence folder")
        self.name = self.root.name
        self.depth_scale = depth_scale
        rgb = _stamped_files(self.root, "rgb")
        if rgb is None:
            raise FileNotFoundError(f"TUM sequence has neither rgb.txt nor an rgb/ folder: {self.root}")
        stamps, files = rgb
        if len(files) == 0:
            raise ValueError(f"TUM sequence lists no RGB frames: {self.root}")

        depth = _stamped_files(self.root, "depth")
        depth_match = np.full(len(files), -1) if depth is None else associate(stamps, depth[0], max_dt)
        depth_files = [] if depth is None else depth[1]

        gt_path = self.root / "groundtruth.txt"
        self._extrinsics: np.ndarray | None = None
        keep = np.arange(len(files))
        if gt_path.is_file():
            traj = read_tum(gt_path)
            gt_match = associate(stamps, traj.timestamps, max_dt)
            if require_pose:
                keep = np.flatnonzero(gt_match >= 0)
                if len(keep) == 0:
                    raise ValueError(f"{gt_path}: no ground-truth pose within {max_dt} s of any RGB frame")
            extrinsics = traj.extrinsics()
            self._extrinsics = np.stack([extrinsics[m] if m >= 0 else np.full((3, 4), np.nan) for m in gt_match[keep]])
        else:
            warnings.warn(f"no groundtruth.txt in {self.root}: frames have no poses", stacklevel=2)

        missing = [str(files[i]) for i in keep if not files[i].is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} RGB file(s) listed but missing, first: {missing[0]}")
        self._timestamps = stamps[keep]
        self._files = [files[i] for i in keep]
        self._depth_files = [depth_files[m] if m >= 0 else None for m in depth_match[keep]]

        if intrinsic is not None:
            self._intrinsic = as_intrinsic(intrinsic, "intrinsic")
        else:
            self._intrinsic = tum_intrinsic(self.root)
            if self._intrinsic is None:
                warnings.warn(f"no calib*.txt and no fr1/fr2/fr3 in the folder name: {self.root}; "
                              "frames have no intrinsics", stacklevel=2)  # fmt: skip

    def __len__(self) -> int:
        return len(self._files)

    @property
    def timestamps(self) -> np.ndarray:
        return self._timestamps.copy()

    def frame(self, i: int) -> Frame:
        path, depth_path = self._files[i], self._depth_files[i]
        extrinsic = None
        if self._extrinsics is not None and not np.isnan(self._extrinsics[i, 0, 0]):
            extrinsic = self._extrinsics[i].copy()
        return Frame(
            image=load_rgb(path),
            timestamp=float(self._timestamps[i]),
            index=i,
            depth=None if depth_path is None else read_depth_png(depth_path, self.depth_scale),
            intrinsic=None if self._intrinsic is None else self._intrinsic.copy(),
            extrinsic=extrinsic,
            name=path.name,
            extras={"path": str(path)},
        )
