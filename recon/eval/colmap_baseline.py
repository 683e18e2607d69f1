"""COLMAP incremental structure-from-motion as a baseline, scored like our model.

`run_colmap_sfm` runs pycolmap (>= 3.12, checked on 4.2): SIFT extraction on the CPU, exhaustive
or sequential matching, `pycolmap.incremental_mapping`, and keeps the largest model (most
registered images). One camera is shared by all images: the known intrinsics, held fixed,
or a camera COLMAP estimates (SIMPLE_RADIAL by default).

Conventions of the result: extrinsics camera-from-world [3, 4] OpenCV axes (COLMAP's own),
moved so that the world is the first *registered* camera (COLMAP's world frame is arbitrary;
the scale stays COLMAP's arbitrary one); intrinsics in pixels of the input images with (0, 0)
at the top-left corner of the top-left pixel, as in COLMAP. Images COLMAP does not register
keep NaN extrinsics and `registered[i] = False`: `score_against_ground_truth` reports the
registered fraction next to the errors, which are measured on the registered frames only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from recon.datasets.trajectory import Trajectory
from recon.preprocess import read_image

from .trajectory import path_length, sim3_scores

MATCHERS = ("exhaustive", "sequential")


@dataclass(frozen=True)
class KnownCamera:
    """Calibrated pinhole camera of the input images (no skew, no distortion)."""

    intrinsic: np.ndarray  # [3, 3] pixels, (0, 0) at the top-left corner
    width: int
    height: int


@dataclass
class ColmapResult:
    names: list[str]  # [N] file name each input image had in the COLMAP image folder
    registered: np.ndarray  # [N] bool
    extrinsics: np.ndarray  # [N, 3, 4] camera-from-world, NaN where not registered
    intrinsic: np.ndarray  # [3, 3] the shared camera (NaN when no model was built)
    camera_model: str  # COLMAP model name of the shared camera ("" when no model)
    camera_params: np.ndarray  # COLMAP's parameter vector (focal, principal point, distortion)
    image_size: tuple[int, int]  # (H, W) of the input images
    points: np.ndarray  # [P, 3] float64 sparse world points
    colors: np.ndarray  # [P, 3] uint8 RGB
    runtime_s: float  # extraction + matching + mapping, wall clock
    timings: dict[str, float] = field(default_factory=dict)  # per stage, seconds
    num_models: int = 0  # models COLMAP produced (only the largest is kept)
    mean_reprojection_error: float = float("nan")  # pixels
    workdir: Path | None = None  # kept working folder (database, images/, sparse/), else None

    @property
    def num_images(self) -> int:
        return len(self.names)

    @property
    def num_registered(self) -> int:
        return int(self.registered.sum())

    @property
    def num_points(self) -> int:
        return len(self.points)


def _to_uint8(image: np.ndarray, label: str) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)) or min(img.shape[:2]) == 0:
        raise ValueError(f"{label}: expected an [H, W] or [H, W, 3] image, got shape {img.shape}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.floating):
        img = np.clip(np.nan_to_num(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"{label}: unsupported image dtype {img.dtype} (uint8, uint16 or float in [0, 1])")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    return img[..., :3]


def _stage_images(images: Iterable, image_dir: Path) -> tuple[list[str], tuple[int, int]]:
    """Put every input into image_dir as 000000.<ext>, ...; returns the names and the common (H, W)."""
    names: list[str] = []
    size: tuple[int, int] | None = None
    for i, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            src = Path(item)
            label = str(src)
            shape = read_image(src).shape[:2]  # missing or corrupt files: one-line errors there
            name = f"{i:06d}{src.suffix.lower()}"
            shutil.copyfile(src, image_dir / name)
        else:
            label = f"image {i}"
            img = _to_uint8(item, label)
            name = f"{i:06d}.png"
            bgr = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            if not cv2.imwrite(str(image_dir / name), bgr):
                raise OSError(f"could not write {image_dir / name}")
            shape = img.shape[:2]
        if size is None:
            size = (int(shape[0]), int(shape[1]))
        elif tuple(shape) != size:
            raise ValueError(f"{label} is {shape[1]}x{shape[0]}, the first image {size[1]}x{size[0]}: "
                             "one shared camera needs one image size")  # fmt: skip
        names.append(name)
    if len(names) < 2:
        raise ValueError(f"structure from motion needs at least 2 images, got {len(names)}")
    assert size is not None
    return names, size


def _check_camera(camera: KnownCamera, size: tuple[int, int]) -> str:
    """COLMAP's PINHOLE parameter string "fx,fy,cx,cy" for a known camera of images of `size` (H, W)."""
    K = np.asarray(camera.intrinsic, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"camera intrinsic must be a finite [3, 3] with positive focal lengths, got {K.tolist()}")
    if abs(K[0, 1]) > 1e-9 * K[0, 0] or not np.allclose(K[2], (0, 0, 1)):
        raise ValueError(f"camera intrinsic must be a pinhole matrix without skew, got {K.tolist()}")
    if (camera.height, camera.width) != size:
        raise ValueError(f"camera is {camera.width}x{camera.height} but the images are {size[1]}x{size[0]}")
    return ",".join(repr(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))


def _options(pycolmap, camera_params: str | None, camera_model: str, max_image_size: int | None,
             max_num_features: int | None, num_threads: int, seed: int):  # fmt: skip
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE" if camera_params else camera_model
    if camera_params:
        reader.camera_params = camera_params
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = num_threads
    if max_image_size is not None:
        extraction.max_image_size = int(max_image_size)
    if max_num_features is not None:
        extraction.sift.max_num_features = int(max_num_features)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = num_threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = seed
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = num_threads
    mapping.min_model_size = 3  # the default (10) would drop every model of a short clip
    for opts in (mapping, mapping.mapper, mapping.triangulation):
        opts.random_seed = seed
    if camera_params:  # known intrinsics stay fixed
        mapping.ba_refine_focal_length = mapping.ba_refine_extra_params = False
        mapping.mapper.abs_pose_refine_focal_length = mapping.mapper.abs_pose_refine_extra_params = False
    return reader, extraction, matching, verification, mapping


def _first_camera_frame(extrinsics: np.ndarray, points: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-express extrinsics [N, 3, 4] and points [P, 3] with the world at camera `first`."""
    R0, t0 = extrinsics[first, :, :3], extrinsics[first, :, 3]
    R, t = extrinsics[..., :3], extrinsics[..., 3]
    # x_cam = R x_world + t, with x_world = R0^T (x_new - t0)
    R_new = R @ R0.T
    t_new = t - (R_new @ t0[:, None])[..., 0]
    return np.concatenate((R_new, t_new[..., None]), axis=2), points @ R0.T + t0


def run_colmap_sfm(
    images: Iterable,
    workdir: str | os.PathLike | None = None,
    camera: KnownCamera | None = None,
    matcher: str = "exhaustive",
    max_image_size: int | None = None,
    max_num_features: int | None = None,
    camera_model: str = "SIMPLE_RADIAL",
    num_threads: int = -1,
    seed: int = 0,
    keep: bool = False,
    verbose: bool = False,
) -> ColmapResult:
    """COLMAP incremental SfM on `images` (any iterable of [H, W, 3] uint8 RGB arrays or image paths,
    all of one size); see the module doc for the conventions of the result.

    `workdir`: parent of the temporary working folder (default: the system's temp folder); the
    folder is removed unless `keep` (its sparse/<k>/ models stay in COLMAP's own world frame). `camera`: known intrinsics, held fixed (else COLMAP estimates
    one `camera_model` camera). `max_image_size` / `max_num_features`: SIFT's limits (None:
    COLMAP's defaults, 3200 px and 8192). `verbose` lets COLMAP's log through.
    """
    import pycolmap

    if matcher not in MATCHERS:
        raise ValueError(f"matcher must be one of {MATCHERS}, got {matcher!r}")
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="colmap_", dir=workdir))
    log_level = pycolmap.logging.minloglevel
    try:
        image_dir, database, sparse = work / "images", work / "database.db", work / "sparse"
        image_dir.mkdir()
        sparse.mkdir()
        names, size = _stage_images(images, image_dir)
        params = _check_camera(camera, size) if camera is not None else None
        reader, extraction, matching, verification, mapping = _options(
            pycolmap, params, camera_model, max_image_size, max_num_features, num_threads, seed)
        if not verbose:
            pycolmap.logging.minloglevel = 2  # errors only
        timings, start = {}, time.perf_counter()
        pycolmap.extract_features(database, image_dir, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                  extraction_options=extraction, device=pycolmap.Device.cpu)  # fmt: skip
        timings["extraction_s"] = time.perf_counter() - start
        match = pycolmap.match_exhaustive if matcher == "exhaustive" else pycolmap.match_sequential
        match(database, matching_options=matching, verification_options=verification, device=pycolmap.Device.cpu)
        timings["matching_s"] = time.perf_counter() - start - timings["extraction_s"]
        models = pycolmap.incremental_mapping(database, image_dir, sparse, options=mapping)
        runtime = time.perf_counter() - start
        timings["mapping_s"] = runtime - timings["extraction_s"] - timings["matching_s"]
        result = _collect(models, names, size, runtime, timings)
        result.workdir = work if keep else None
        return result
    finally:
        pycolmap.logging.minloglevel = log_level
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _collect(models: dict, names: list[str], size: tuple[int, int], runtime: float,
             timings: dict[str, float]) -> ColmapResult:  # fmt: skip
    n = len(names)
    extrinsics = np.full((n, 3, 4), np.nan)
    registered = np.zeros(n, dtype=bool)
    empty = ColmapResult(names, registered, extrinsics, np.full((3, 3), np.nan), "", np.zeros(0), size,
                         np.zeros((0, 3)), np.zeros((0, 3), np.uint8), runtime, timings, len(models))  # fmt: skip
    if not models:
        return empty
    rec = max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    index = {name: i for i, name in enumerate(names)}
    for image in rec.images.values():
        if image.has_pose:
            i = index[image.name]
            registered[i] = True
            extrinsics[i] = np.asarray(image.cam_from_world().matrix(), dtype=np.float64)
    if not registered.any():
        return empty
    points3d = list(rec.points3D.values())
    points = np.array([p.xyz for p in points3d], dtype=np.float64).reshape(-1, 3)
    colors = np.array([p.color for p in points3d], dtype=np.uint8).reshape(-1, 3)
    extrinsics, points = _first_camera_frame(extrinsics, points, int(np.flatnonzero(registered)[0]))
    cam = next(iter(rec.cameras.values()))
    return ColmapResult(
        names, registered, extrinsics, np.asarray(cam.calibration_matrix(), dtype=np.float64), cam.model_name,
        np.asarray(cam.params, dtype=np.float64), size, points, colors, runtime, timings, len(models),
        float(rec.compute_mean_reprojection_error()),
    )  # fmt: skip


def score_against_ground_truth(result: ColmapResult, gt_extrinsics: np.ndarray, timestamps: np.ndarray,
                               name: str = "sequence") -> dict:  # fmt: skip
    """`result` against ground truth camera-from-world [N, 3, 4] at `timestamps` [N] (one per input
    image; NaN rows = no ground truth). The keys of `recon.evaluate.SequenceEvaluator.compute`
    (ATE after Sim(3) and as % of the ground-truth path, RPE over consecutive scored frames), all
    NaN when fewer than 3 frames are registered, plus the registration numbers.

    The errors cover only frames that are registered and have ground truth (`scored_frames`);
    `path_length` is that of the whole ground truth, as for our model, so ATE % is comparable.
    """
    gt = np.asarray(gt_extrinsics, dtype=np.float64)
    stamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    n = result.num_images
    if gt.shape != (n, 3, 4) or stamps.shape != (n,):
        raise ValueError(f"ground truth must be [{n}, 3, 4] extrinsics and [{n}] timestamps (one per input image), "
                         f"got {gt.shape} and {stamps.shape}")  # fmt: skip
    has_gt = np.isfinite(gt).all(axis=(1, 2))
    scored = result.registered & has_gt
    full = Trajectory.from_extrinsics(gt[has_gt], stamps[has_gt])
    length = path_length(full) if has_gt.sum() > 1 else 0.0
    nan = float("nan")
    out: dict = {
        "sequence": name, "method": "colmap", "frames": n, "registered": result.num_registered,
        "registered_fraction": result.num_registered / n, "scored_frames": int(scored.sum()),
        "ate_rmse": nan, "ate_pct_of_path": nan, "path_length": length, "sim3_scale": nan,
        "rpe_trans_rmse": nan, "rpe_rot_rmse_deg": nan, "num_points3D": result.num_points,
        "runtime_s": result.runtime_s,
    }  # fmt: skip
    results: dict = {}
    if scored.sum() >= 3:
        ref = Trajectory.from_extrinsics(gt[scored], stamps[scored])
        est = Trajectory.from_extrinsics(result.extrinsics[scored], stamps[scored])
        try:
            scores, a, r = sim3_scores(ref, est, length)  # % of the whole ground-truth path
        except ValueError as exc:  # degenerate alignment (e.g. collinear camera centres)
            out["score_error"] = str(exc)
        else:
            out.update(scores)
            results.update(ape=a, rpe=r)
    out["_results"] = results
    return out
