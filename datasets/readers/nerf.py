"""NeRF-style transforms.json (Blender synthetic, instant-ngp, nerfstudio) as a `Sequence`.

`path` is a folder with transforms.json (or transforms_<split>.json with `split=`), or the
JSON file itself. Frames keep the order of the file's "frames" list; `file_path` is relative
to the JSON's folder, with or without an image extension ("./train/r_0" -> r_0.png).

Poses: `transform_matrix` is camera-to-world with OpenGL/Blender camera axes (x right, y up,
z backward). Frames carry camera-from-world with OpenCV axes (x right, y down, z forward):
``world_from_cv = world_from_gl @ diag(1, -1, -1, 1)``, then inverted.

Intrinsics (a frame's own keys override the file's): fl_x / fl_y, or camera_angle_x /
camera_angle_y (full field of view in radians, ``f = size / 2 / tan(angle / 2)``); fl_y
defaults to fl_x; cx / cy default to the image centre (w / 2, h / 2). These tools cast rays
through pixel centres at (i + 0.5), i.e. the project's corner convention, so cx, cy are used
unchanged. w / h come from the file, else from the image; if the image's size differs from
the file's w / h the intrinsic is scaled to the image. Distortion keys (k1, k2, p1, p2) are
ignored. RGBA images (Blender) lose their alpha channel; nothing is composited.

Depth (optional): `depth_file_path` per frame; 16-bit PNGs are multiplied by
`depth_unit_scale_factor` (file key, default 0.001 = millimetres, nerfstudio's convention),
.npy files and float images are taken as metres. Timestamps: a frame's "time" key, else its
position in the list.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np

from recon.datasets.types import Frame, Sequence

from .common import existing_dir, extrinsic_from_pose, intrinsic_matrix, load_rgb, read_depth_png
from .folder import IMAGE_EXTENSIONS

GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")


def find_transforms(path: Path, split: str | None = None) -> Path:
    if path.is_file():
        return path
    root = existing_dir(path, "NeRF dataset folder")
    name = "transforms.json" if split is None else f"transforms_{split}.json"
    if not (root / name).is_file():
        splits = sorted(p.name for p in root.glob("transforms_*.json"))
        hint = f" (found {', '.join(splits)}: pass split=)" if splits else ""
        raise FileNotFoundError(f"no {name} in: {root}{hint}")
    return root / name


def resolve_image(base: Path, file_path: str) -> Path:
    """`file_path` relative to `base`, trying image extensions when it has none that exists."""
    candidate = base / file_path
    if candidate.is_file():
        return candidate
    for ext in IMAGE_EXTENSIONS:
        for variant in (ext, ext.upper()):
            with_ext = candidate.with_name(candidate.name + variant)
            if with_ext.is_file():
                return with_ext
    raise FileNotFoundError(f"image not found (with or without an extension): {candidate}")


def read_depth_any(path: Path, png_scale: float) -> np.ndarray:
    """Depth file -> [H, W] float32 metres, 0 where invalid (non-finite or negative)."""
    if path.suffix.lower() == ".npy":
        depth = np.load(path).astype(np.float32)
    elif path.suffix.lower() == ".png":
        depth = read_depth_png(path, 1.0 / png_scale)
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
        if raw is None:
            raise ValueError(f"could not read depth map (unsupported or corrupt): {path}")
        depth = raw.astype(np.float32)
    depth = np.squeeze(depth)
    if depth.ndim != 2:
        raise ValueError(f"expected an [H, W] depth map, got shape {depth.shape}: {path}")
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


class NerfSequence(Sequence):
    """Frames of a transforms.json (see module doc for axes, intrinsics and depth)."""

    def __init__(self, path: str | os.PathLike, split: str | None = None, load_depth: bool = True) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"NeRF dataset not found: {path}")
        self.json_path = find_transforms(path, split)
        self.name = self.json_path.parent.name
        self.load_depth = load_depth
        try:
            meta = json.loads(self.json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.json_path}: not valid JSON ({exc})") from None
        frames = meta.get("frames") if isinstance(meta, dict) else None
        if not isinstance(frames, list) or not frames:
            raise ValueError(f"{self.json_path}: no 'frames' list")
        base = self.json_path.parent
        self._depth_scale = float(meta.get("depth_unit_scale_factor", 1e-3))
        self._files, self._depths, self._cams, extrinsics, stamps = [], [], [], [], []
        for k, f in enumerate(frames):
            label = f"{self.json_path} frame {k}"
            if not isinstance(f, dict) or "file_path" not in f or "transform_matrix" not in f:
                raise ValueError(f"{label}: needs 'file_path' and 'transform_matrix'")
            self._files.append(resolve_image(base, f["file_path"]))
            depth = f.get("depth_file_path")
            self._depths.append(base / depth if depth and load_depth else None)
            cam = {}
            for key in _INTRINSIC_KEYS:
                value = f.get(key, meta.get(key))
                if value is not None:
                    try:
                        cam[key] = float(value)
                    except (TypeError, ValueError):
                        raise ValueError(f"{label}: {key} is not a number: {value!r}") from None
            if "fl_x" not in cam and "camera_angle_x" not in cam:
                raise ValueError(f"{label}: no focal length (fl_x or camera_angle_x)")
            self._cams.append(cam)
            c2w = np.asarray(f["transform_matrix"], dtype=np.float64)
            if c2w.shape == (3, 4):
                c2w = np.concatenate((c2w, [[0.0, 0.0, 0.0, 1.0]]))
            if c2w.shape != (4, 4):
                raise ValueError(f"{label}: transform_matrix must be 4x4, got shape {c2w.shape}")
            extrinsics.append(extrinsic_from_pose(c2w @ GL_TO_CV, label))
            stamps.append(float(f.get("time", k)))
        self._extrinsics = np.stack(extrinsics)
        self._timestamps = np.asarray(stamps, dtype=np.float64)

    def __len__(self) -> int:
        return len(self._files)

    @staticmethod
    def _intrinsic(cam: dict, h: int, w: int) -> np.ndarray:
        """[3, 3] for an image of h x w pixels from the frame's keys."""
        w0, h0 = cam.get("w", w), cam.get("h", h)
        fx = cam["fl_x"] if "fl_x" in cam else 0.5 * w0 / math.tan(0.5 * cam["camera_angle_x"])
        if "fl_y" in cam:
            fy = cam["fl_y"]
        elif "camera_angle_y" in cam:
            fy = 0.5 * h0 / math.tan(0.5 * cam["camera_angle_y"])
        else:
            fy = fx
        K = intrinsic_matrix(fx, fy, cam.get("cx", w0 / 2), cam.get("cy", h0 / 2))
        K[0] *= w / w0
        K[1] *= h / h0
        return K

    def frame(self, i: int) -> Frame:
        path = self._files[i]
        image = load_rgb(path)
        depth_path = self._depths[i]
        return Frame(
            image=image,
            timestamp=float(self._timestamps[i]),
            index=i,
            depth=None if depth_path is None else read_depth_any(depth_path, self._depth_scale),
            intrinsic=self._intrinsic(self._cams[i], *image.shape[:2]),
            extrinsic=self._extrinsics[i].copy(),
            name=path.name,
            extras={"path": str(path)},
        )
