"""`Exporter`: a FramePrediction subscriber that writes point clouds, trajectories, a COLMAP
model, depth maps and a mesh for other tools.

    with Exporter("out", formats=parse_formats("ply,traj,colmap")) as exporter:
        for frame in frames:
            exporter.add(rec.step(frame))
    # leaving the block (normally, by an exception or Ctrl-C) finalizes: outputs cover the
    # frames added so far

What is written on arrival (depth maps, COLMAP images) and what at `finalize()` (ply, traj,
colmap model, mesh) is written file by file atomically. `revise(predictions)` (the refiner's
end-of-stream adjustment, via recon.pipeline.run_stream) replaces frames already added: their
cameras and depth maps, and the point cloud and mesh are fused again from the revised frames
when every added frame is among them. Memory stays bounded over long
streams: the point cloud is voxel-fused under a point budget, the mesh is a TSDF volume,
and only a small camera record is kept per frame.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from recon.points import VoxelCloud, confidence_mask, inside_original
from recon.session import FramePrediction

from .cameras import FrameCamera, write_intrinsics, write_trajectories
from .cloud import frame_points, write_ply
from .colmap import RESOLUTIONS, build_reconstruction, image_name, to_uint8_rgb, write_image, write_model
from .depth import DepthWriter

log = logging.getLogger(__name__)

FORMATS = ("ply", "traj", "colmap", "depth", "mesh")
SOURCES = ("depth", "points")


class ExportError(Exception):
    """An export cannot be set up or written; the message names the offending path or value."""


def parse_formats(spec: str | Iterable[str]) -> frozenset[str]:
    """"ply,traj" (or an iterable of names, or "all") -> a validated set of format names."""
    names = [n.strip().lower() for n in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if names == ["all"]:
        return frozenset(FORMATS)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)} (or all)")
    if not names:
        raise ExportError(f"no export format given; choose from {', '.join(FORMATS)} (or all)")
    return frozenset(names)


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ExportError(f"output folder is not writable: {out_dir} ({e.strerror or e})") from None


class Exporter:
    """Writes the requested `formats` (see FORMATS) under `out_dir`.

    Points (ply, colmap points3D, mesh) come from `source`: "depth" (default; depth maps
    unprojected with the predicted cameras, the more accurate path per the VGGT paper) or
    "points" (the point-map head). A pixel is kept when it lies inside the original image
    (not padding), is finite, its confidence is > `conf_threshold` (VGGT confidences are
    1 + exp(x) > 1, higher is better; None disables) and it is not among the lowest
    `conf_percentile` percent of those (None or 0 disables).

    `voxel_size` of the fused cloud defaults to 1/200 of the first frame's median depth; the
    cloud keeps at most `max_points` (the voxel grows when needed). `mesh_voxel_size` defaults to
    1/100 of that median depth. `colmap_resolution`: "model" writes the model-input images with
    model-resolution cameras (`intrinsic`); "original" needs `add(pred, original_image=...)` and
    writes those with original-resolution cameras (`intrinsic_original`).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        formats: str | Iterable[str] = ("ply", "traj"),
        *,
        source: str = "depth",
        conf_threshold: float | None = None,
        conf_percentile: float | None = 50.0,
        voxel_size: float | None = None,
        max_points: int = 2_000_000,
        depth_format: str = "png",
        depth_scale: float = 1000.0,
        conf_scale: float = 100.0,
        colmap_resolution: str = "model",
        colmap_text: bool = False,
        mesh_voxel_size: float | None = None,
        mesh_depth_max: float | None = None,
    ) -> None:
        self.formats = parse_formats(formats)
        if source not in SOURCES:
            raise ExportError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        if colmap_resolution not in RESOLUTIONS:
            raise ExportError(f"colmap_resolution must be one of {', '.join(RESOLUTIONS)}, got {colmap_resolution!r}")
        if conf_percentile is not None and not 0 <= conf_percentile < 100:
            raise ExportError(f"conf_percentile must be in [0, 100), got {conf_percentile}")
        if max_points < 2:
            raise ExportError(f"max_points must be at least 2, got {max_points}")
        for name, value in (("voxel_size", voxel_size), ("mesh_voxel_size", mesh_voxel_size)):
            if value is not None and not value > 0:
                raise ExportError(f"{name} must be positive, got {value}")
        self.out_dir = Path(out_dir)
        self.source, self.conf_threshold, self.conf_percentile = source, conf_threshold, conf_percentile
        self.voxel_size, self.max_points = voxel_size, int(max_points)
        self.colmap_resolution, self.colmap_text = colmap_resolution, bool(colmap_text)
        self.mesh_voxel_size, self.mesh_depth_max = mesh_voxel_size, mesh_depth_max
        self._depth = None
        if "depth" in self.formats:
            try:
                self._depth = DepthWriter(self.out_dir, depth_format, depth_scale, conf_scale)
            except ValueError as e:
                raise ExportError(str(e)) from None
        _check_writable(self.out_dir)

        self.cameras: list[FrameCamera] = []
        self._indices: set[int] = set()
        self._cloud: VoxelCloud | None = None
        self._mesher = None
        self._result: dict[str, Path] | None = None

    # -- streaming -----------------------------------------------------------------------
    def add(self, pred: FramePrediction, original_image: np.ndarray | None = None) -> None:
        """Consume one prediction; `original_image` (HxWx3 RGB) is used by colmap_resolution="original"."""
        if self._result is not None:
            raise ExportError(f"exporter for {self.out_dir} is finalized; no more frames can be added")
        if pred.index in self._indices:
            raise ExportError(f"frame index {pred.index} was already exported to {self.out_dir} (after "
                              "Reconstructor.reset(), export into a new folder)")  # fmt: skip
        camera = FrameCamera.from_prediction(pred)
        if self.cameras and camera.model_hw != self.cameras[0].model_hw:
            raise ExportError(f"frame {pred.index}: model resolution {camera.model_hw} differs from the "
                              f"stream's {self.cameras[0].model_hw}")  # fmt: skip
        if not self.cameras:
            self._start(pred)
        if "colmap" in self.formats:
            self._write_colmap_image(pred, original_image)
        if self._depth is not None:
            self._depth.write(pred.index, pred.depth, pred.depth_conf)
        self._fuse(pred)
        self.cameras.append(camera)
        self._indices.add(pred.index)

    def revise(self, predictions: list[FramePrediction]) -> None:
        """Replace frames already added (by index) with revised predictions: cameras and depth
        maps of those frames; the fused cloud and mesh are rebuilt from the revision when it
        covers every added frame, and otherwise keep the streamed geometry (logged)."""
        if self._result is not None:
            raise ExportError(f"exporter for {self.out_dir} is finalized; frames can no longer be revised")
        position = {camera.index: i for i, camera in enumerate(self.cameras)}
        unknown = [p.index for p in predictions if p.index not in position]
        if unknown:
            raise ExportError(f"frame {unknown[0]} is revised but was never added to the export in {self.out_dir}")
        for pred in predictions:
            self.cameras[position[pred.index]] = FrameCamera.from_prediction(pred)
            if self._depth is not None:
                self._depth.write(pred.index, pred.depth, pred.depth_conf)
        if self._cloud is None and self._mesher is None:
            return
        if {p.index for p in predictions} != self._indices:
            log.warning("the revision covers %d of %d frames: the point cloud and mesh keep the streamed geometry",
                        len(predictions), len(self._indices))  # fmt: skip
            return
        self._cloud, self._mesher = None, None
        self._start(predictions[0])
        for pred in predictions:
            self._fuse(pred)

    def _fuse(self, pred: FramePrediction) -> None:
        """The frame's points into the cloud and its depth into the mesh volume (those requested)."""
        if self._cloud is not None:
            self._cloud.add(*frame_points(pred, self.source, self.conf_threshold, self.conf_percentile))
        if self._mesher is not None:
            self._integrate_mesh(pred)

    def _start(self, pred: FramePrediction) -> None:
        """First frame: derive the scene scale and set up the fusers."""
        depth = np.asarray(pred.depth, dtype=np.float64)
        valid = depth[np.isfinite(depth) & (depth > 0)]
        scale = float(np.median(valid)) if valid.size else 1.0
        if {"ply", "colmap"} & self.formats:
            self._cloud = VoxelCloud(self.voxel_size or scale / 200, self.max_points, dtype=np.float64)
        if "mesh" in self.formats:
            from .mesh import TSDFMesher

            self._mesher = TSDFMesher(self.mesh_voxel_size or scale / 100, depth_max=self.mesh_depth_max)

    def _write_colmap_image(self, pred: FramePrediction, original_image: np.ndarray | None) -> None:
        if self.colmap_resolution == "model":
            rgb = to_uint8_rgb(pred.image)
        else:
            if original_image is None:
                raise ExportError(f"frame {pred.index}: colmap_resolution='original' needs "
                                  "add(pred, original_image=...)")
            rgb = to_uint8_rgb(original_image)
            if rgb.shape[:2] != tuple(pred.transform.original_hw):
                raise ExportError(f"frame {pred.index}: original image is {rgb.shape[:2]}, the prediction's "
                                  f"original size is {tuple(pred.transform.original_hw)}")  # fmt: skip
        write_image(self.out_dir / "colmap" / "images" / image_name(pred.index), rgb)

    def _integrate_mesh(self, pred: FramePrediction) -> None:
        depth = np.asarray(pred.depth, dtype=np.float32)
        valid = np.isfinite(depth) & (depth > 0) & inside_original(pred)
        keep = confidence_mask(np.asarray(pred.depth_conf), valid, self.conf_threshold, self.conf_percentile)
        self._mesher.integrate(np.where(keep, depth, 0.0), pred.image, pred.intrinsic, pred.extrinsic)

    # -- finishing -----------------------------------------------------------------------
    def finalize(self) -> dict[str, Path]:
        """Write the end-of-stream outputs; returns {output name: path}. Safe to call twice."""
        if self._result is not None:
            return self._result
        written: dict[str, Path] = {}
        if not self.cameras:
            log.warning("no frames were added; nothing exported to %s", self.out_dir)
        if self.cameras and self._depth is not None:
            written["depth"] = self._depth.depth_dir
            if self._depth.fmt == "png":
                written["depth_conf"] = self._depth.conf_dir
        if self.cameras:
            self._write_final(written)
        self._result = written
        return written

    def _write_final(self, written: dict[str, Path]) -> None:
        if "traj" in self.formats:
            written.update(write_trajectories(self.out_dir, self.cameras))
            written["intrinsics"] = write_intrinsics(self.out_dir / "intrinsics.json", self.cameras)
        points, colors = self._cloud.points() if self._cloud is not None else (None, None)
        if "ply" in self.formats:
            written["ply"] = self.out_dir / "points.ply"
            write_ply(written["ply"], points, colors)
        if "colmap" in self.formats:
            written["colmap"] = self.out_dir / "colmap" / "sparse" / "0"
            rec = build_reconstruction(self.cameras, self.colmap_resolution, points, colors)
            write_model(written["colmap"], rec, text=self.colmap_text)
            written["colmap_images"] = self.out_dir / "colmap" / "images"
        if self._mesher is not None:
            written["mesh"] = self.out_dir / "mesh.ply"
            if self._mesher.write(written["mesh"]) == 0:
                log.warning("the mesh %s is empty (no confident depth)", written["mesh"])
            self._mesher = None  # free the volume

    def __enter__(self) -> "Exporter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finalize()
