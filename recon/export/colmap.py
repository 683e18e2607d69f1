"""COLMAP sparse model (`colmap/sparse/0/`) and its images (`colmap/images/`).

One PINHOLE camera per frame (intrinsics are predicted per frame), image i has camera and
image id i + 1 and the name `NNNNNN.jpg` of its frame index. COLMAP's pixel convention
(top-left pixel centre at (0.5, 0.5)) is the project's, so intrinsics go in unchanged.
Points3D come from the fused cloud with empty tracks, which COLMAP and pycolmap accept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from recon.atomic import atomic_path

from .cameras import FrameCamera

RESOLUTIONS = ("model", "original")


def image_name(index: int) -> str:
    return f"{index:06d}.jpg"


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """HxW or HxWx{1,3,4} uint8 / uint16 / float [0, 1] image -> HxWx3 uint8 RGB."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW or HxWx{{1,3,4}} image, got shape {image.shape}")
    if image.dtype == np.uint16:
        image = image / 65535.0
    if image.dtype != np.uint8:
        image = np.clip(np.rint(np.asarray(image, np.float64) * 255), 0, 255).astype(np.uint8)
    image = image[:, :, :3]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def write_image(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an HxWx3 uint8 RGB image as JPEG, atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise OSError(f"could not write image: {path}")


def build_reconstruction(cameras: list[FrameCamera], resolution: str, points: np.ndarray, colors: np.ndarray):
    """pycolmap.Reconstruction with posed images for `cameras` and colour points [N, 3] (colours in [0, 1])."""
    import pycolmap

    rec = pycolmap.Reconstruction()
    for cam in cameras:
        if resolution == "model":
            K, (h, w) = cam.intrinsic, cam.model_hw
        else:
            K, (h, w) = cam.intrinsic_original, cam.original_hw
        cid = cam.index + 1
        rec.add_camera_with_trivial_rig(pycolmap.Camera(
            model="PINHOLE", width=w, height=h, params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]], camera_id=cid))
        R, t = cam.extrinsic[:, :3], cam.extrinsic[:, 3]
        # Re-orthonormalise: a float32 rotation is orthonormal only to ~1e-7, and COLMAP stores a quaternion.
        u, _, vt = np.linalg.svd(R)
        R = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
        image = pycolmap.Image(name=image_name(cam.index), camera_id=cid, image_id=cid)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pycolmap.Rotation3d(R), t))
    rgb = np.clip(np.rint(colors * 255), 0, 255).astype(np.uint8)
    for xyz, c in zip(points, rgb):
        rec.add_point3D(xyz, pycolmap.Track(), c)
    return rec


def write_model(model_dir: Path, reconstruction, text: bool = False) -> list[Path]:
    """Write binary (and with `text` also text) model files; each file is replaced atomically."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}."))
    try:
        reconstruction.write_binary(str(tmp))
        if text:
            reconstruction.write_text(str(tmp))
        written = []
        for f in sorted(tmp.iterdir()):
            os.replace(f, model_dir / f.name)
            written.append(model_dir / f.name)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
