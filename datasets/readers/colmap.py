"""COLMAP sparse models (text or binary) as a `Sequence`, read through pycolmap.

`path` is the model folder (cameras.bin / cameras.txt ...), or a project folder with
sparse/0/ (or sparse/) in it; `model` picks another sub-model of sparse/. Frames are the
registered images sorted by name (natural order); images load from `images` (default: the
first existing of <model>/../images, <model>/../../images, <model>/images).

Conventions: COLMAP's image coordinates have (0, 0) at the top-left corner of the image, so
the centre of the top-left pixel is (0.5, 0.5) (its SIFT extractor adds 0.5 to VLFeat's
pixel-centred keypoints) -- the project's convention, so cx, cy are taken unchanged.
`Image.cam_from_world` is camera-from-world with OpenCV axes, as is `Frame.extrinsic`.
When an image file's size differs from its camera's (a downscaled images_2/ folder, say),
the intrinsic is scaled to the file's pixels.

Camera models: pinhole models with polynomial distortion (SIMPLE_PINHOLE, PINHOLE,
SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV) give their focal lengths and principal point;
the distortion is ignored, with a warning per camera when it moves an image corner by more
than `max_distortion_px` (undistort first with `colmap image_undistorter` for exact
geometry). Fisheye and other non-pinhole models are rejected. No depth.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from recon.datasets.types import Frame, Sequence

from .common import existing_dir, intrinsic_matrix, load_rgb, timestamps_from_names
from .folder import natural_key

PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
_MODEL_FILES = ("cameras.bin", "cameras.txt")


def _has_model(folder: Path) -> bool:
    return any((folder / f).is_file() for f in _MODEL_FILES)


def find_model_dir(path: Path, model: str = "0") -> Path:
    """The folder holding cameras.{bin,txt}: `path`, path/sparse/<model> or path/sparse."""
    for candidate in (path, path / "sparse" / model, path / "sparse", path / model):
        if _has_model(candidate):
            return candidate
    raise FileNotFoundError(f"no COLMAP model (cameras.bin/.txt in it, sparse/{model}/ or sparse/) at: {path}")


def find_image_dir(model_dir: Path) -> Path:
    for candidate in (model_dir.parent / "images", model_dir.parent.parent / "images", model_dir / "images"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no images/ folder found near the COLMAP model {model_dir}; pass images=")


def corner_distortion_px(camera) -> float:
    """Largest shift (pixels) the camera's distortion applies to the four image corners."""
    K = intrinsic_matrix(camera.focal_length_x, camera.focal_length_y, camera.principal_point_x,
                         camera.principal_point_y)  # fmt: skip
    corners = np.array([[0, 0], [camera.width, 0], [0, camera.height], [camera.width, camera.height]], float)
    rays = np.linalg.solve(K, np.concatenate((corners, np.ones((4, 1))), axis=1).T).T
    try:
        distorted = camera.img_from_cam(rays)
    except TypeError:  # pycolmap < 3.12 takes normalised [N, 2] points
        distorted = camera.img_from_cam(rays[:, :2])
    distorted = np.asarray(distorted, dtype=np.float64)
    return float(np.max(np.linalg.norm(distorted - corners, axis=1)))


def camera_intrinsic(camera, label: str, max_distortion_px: float) -> np.ndarray:
    """pycolmap Camera -> [3, 3] float64 (distortion ignored, see module doc)."""
    name = camera.model_name
    if name not in PINHOLE_MODELS:
        raise ValueError(f"{label}: camera {camera.camera_id} uses model {name}, not a pinhole model "
                         f"({', '.join(PINHOLE_MODELS)}); undistort the images first")  # fmt: skip
    if name not in ("SIMPLE_PINHOLE", "PINHOLE"):
        shift = corner_distortion_px(camera)
        if shift > max_distortion_px:
            warnings.warn(f"{label}: camera {camera.camera_id} ({name}) distortion moves image corners by up to "
                          f"{shift:.1f} px and is ignored", stacklevel=3)  # fmt: skip
    return intrinsic_matrix(camera.focal_length_x, camera.focal_length_y, camera.principal_point_x,
                            camera.principal_point_y)  # fmt: skip


def _cam_from_world(image) -> np.ndarray:
    pose = image.cam_from_world
    pose = pose() if callable(pose) else pose  # a method since pycolmap 3.12, a property before
    return np.asarray(pose.matrix(), dtype=np.float64)


class ColmapSequence(Sequence):
    """Registered images of a COLMAP sparse model (see module doc)."""

    def __init__(
        self,
        path: str | os.PathLike,
        images: str | os.PathLike | None = None,
        model: str = "0",
        max_distortion_px: float = 1.0,
    ) -> None:
        import pycolmap

        root = existing_dir(path, "COLMAP folder")
        self.model_dir = find_model_dir(root, model)
        self.image_dir = existing_dir(images, "image folder") if images is not None else find_image_dir(self.model_dir)
        self.name = root.name
        try:
            rec = pycolmap.Reconstruction(str(self.model_dir))
        except Exception as exc:  # pycolmap raises ValueError / RuntimeError with multi-line text
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"could not read COLMAP model {self.model_dir}: {first}") from exc

        registered = [rec.images[i] for i in rec.reg_image_ids()]
        if not registered:
            raise ValueError(f"COLMAP model has no registered images: {self.model_dir}")
        registered.sort(key=lambda im: natural_key(im.name))
        intrinsics = {cid: camera_intrinsic(cam, str(self.model_dir), max_distortion_px)
                      for cid, cam in rec.cameras.items()}  # fmt: skip
        self._names = [im.name for im in registered]
        self._files = [self.image_dir / im.name for im in registered]
        missing = [p for p in self._files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} registered image(s) missing from {self.image_dir}, "
                                    f"first: {missing[0]}")  # fmt: skip
        self._intrinsics = np.stack([intrinsics[im.camera_id] for im in registered])
        self._sizes = [(rec.cameras[im.camera_id].height, rec.cameras[im.camera_id].width) for im in registered]
        self._extrinsics = np.stack([_cam_from_world(im) for im in registered])
        stamps = timestamps_from_names([Path(n) for n in self._names])
        self._timestamps = np.arange(len(registered), dtype=np.float64) if stamps is None else stamps

    def __len__(self) -> int:
        return len(self._files)

    def frame(self, i: int) -> Frame:
        path = self._files[i]
        image = load_rgb(path)
        K = self._intrinsics[i].copy()
        (h0, w0), (h, w) = self._sizes[i], image.shape[:2]
        if (h, w) != (h0, w0):
            K[0] *= w / w0  # corner convention: resizing is a pure scale of the pixel axes
            K[1] *= h / h0
        return Frame(
            image=image,
            timestamp=float(self._timestamps[i]),
            index=i,
            intrinsic=K,
            extrinsic=self._extrinsics[i].copy(),
            name=Path(self._names[i]).name,
            extras={"path": str(path), "colmap_name": self._names[i]},
        )
