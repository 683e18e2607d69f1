"""Microsoft 7-Scenes (Shotton et al., CVPR 2013).

Layout: <scene>/seq-XX/frame-XXXXXX.color.png, frame-XXXXXX.depth.png (uint16 millimetres,
65535 = invalid) and frame-XXXXXX.pose.txt (4x4 camera-to-world, i.e. world-from-camera).
`path` is a seq-XX folder, or a scene folder together with `sequence` (1, "01" or "seq-01";
optional when the scene has a single sequence). All sequences of a scene share one world
frame (the KinectFusion model).

Intrinsics: the dataset's nominal fx = fy = 585, cx = 320, cy = 240, given in the
pixel-centre convention, so (320.5, 240.5) in the project's corner convention.
Timestamps: the dataset has none; frame number / 30 (the Kinect's nominal 30 Hz).

Caveat: the depth maps are NOT registered to the colour images. They come from the Kinect's
depth sensor, a separate camera with its own viewpoint and calibration; the poses (tracked
by KinectFusion on depth) and the 585 px focal length refer to that depth camera. Depth and
colour therefore disagree by several pixels, most visibly at object boundaries (later work
uses about 525 px for the colour camera and renders registered depth maps). Treat the depth
and intrinsics as approximate for the colour images.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from recon.datasets.types import Frame, Sequence

from .common import as_intrinsic, existing_dir, extrinsic_from_pose, load_rgb, read_depth_png, read_numbers
from .folder import natural_key

# fx, fy, cx, cy in the pixel-centre convention.
SEVEN_SCENES_INTRINSICS = (585.0, 585.0, 320.0, 240.0)
DEPTH_SCALE = 1000.0  # millimetres
DEPTH_INVALID = 65535
FPS = 30.0

_SEQ = re.compile(r"seq-?(\d+)$", re.IGNORECASE)
_FRAME = re.compile(r"frame-(\d+)\.color\.png$")


def sequence_folders(scene: Path) -> list[Path]:
    return sorted((p for p in scene.iterdir() if p.is_dir() and _SEQ.match(p.name)), key=natural_key)


def _pick_sequence(root: Path, sequence: int | str | None) -> Path:
    if any(root.glob("frame-*.color.png")):
        return root
    seqs = sequence_folders(root)
    if not seqs:
        raise FileNotFoundError(f"no 7-Scenes frames (frame-*.color.png) or seq-XX folders in: {root}")
    if sequence is None:
        if len(seqs) > 1:
            raise ValueError(f"{root} has {len(seqs)} sequences ({', '.join(p.name for p in seqs)}); pick one "
                             "with sequence=")  # fmt: skip
        return seqs[0]
    wanted = int(_SEQ.match(str(sequence)).group(1)) if _SEQ.match(str(sequence)) else int(sequence)
    for p in seqs:
        if int(_SEQ.match(p.name).group(1)) == wanted:
            return p
    raise ValueError(f"{root}: no sequence {sequence!r} (have {', '.join(p.name for p in seqs)})")


class SevenScenesSequence(Sequence):
    """One 7-Scenes sequence (see module doc for layout, conventions and the depth caveat)."""

    def __init__(self, path: str | os.PathLike, sequence: int | str | None = None, load_depth: bool = True) -> None:
        root = existing_dir(path, "7-Scenes folder")
        self.root = _pick_sequence(root, sequence)
        self.name = f"{self.root.parent.name}/{self.root.name}" if _SEQ.match(self.root.name) else self.root.name
        self.load_depth = load_depth
        frames = []
        for p in self.root.glob("frame-*.color.png"):
            m = _FRAME.match(p.name)
            if m:
                frames.append((int(m.group(1)), p))
        if not frames:
            raise ValueError(f"no frame-XXXXXX.color.png files in: {self.root}")
        frames.sort()
        self._numbers = [n for n, _ in frames]
        self._files = [p for _, p in frames]
        missing = [p for p in self._files if not self._sibling(p, "pose.txt").is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} frame(s) without a pose file, first: "
                                    f"{self._sibling(missing[0], 'pose.txt')}")  # fmt: skip
        self._intrinsic = as_intrinsic(SEVEN_SCENES_INTRINSICS, "7-Scenes", pixel_center=True)

    @staticmethod
    def _sibling(color: Path, suffix: str) -> Path:
        return color.with_name(color.name.replace(".color.png", f".{suffix}"))

    def __len__(self) -> int:
        return len(self._files)

    def frame(self, i: int) -> Frame:
        path = self._files[i]
        pose_path = self._sibling(path, "pose.txt")
        values = read_numbers(pose_path)
        if values.shape != (16,):
            raise ValueError(f"{pose_path}: expected a 4x4 matrix, got {len(values)} numbers")
        depth = None
        depth_path = self._sibling(path, "depth.png")
        if self.load_depth and depth_path.is_file():
            depth = read_depth_png(depth_path, DEPTH_SCALE, invalid=DEPTH_INVALID)
        return Frame(
            image=load_rgb(path),
            timestamp=self._numbers[i] / FPS,
            index=i,
            depth=depth,
            intrinsic=self._intrinsic.copy(),
            extrinsic=extrinsic_from_pose(values.reshape(4, 4), str(pose_path)),
            name=path.name,
            extras={"path": str(path)},
        )
