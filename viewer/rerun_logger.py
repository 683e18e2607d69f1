"""Live Rerun logging of `FramePrediction`s: camera, image, depth, points, trajectory, map, stats.

    logger = RerunLogger(spawn=True, rrd="run.rrd")      # sinks combine: spawn, web, rrd
    for pred in predictions:
        logger.log(pred, {"fps": fps, "latency_ms": ms, "memory_mb": mb, "dropped": n})
    logger.close()

Entities (timelines `frame` = prediction index and `time` = its timestamp):
    world                 view coordinates RDF (OpenCV; the world is the first camera), static
    world/camera          Transform3D world-from-camera + Pinhole (intrinsic in model pixels)
    world/camera/image    the model input image;  world/camera/depth  DepthImage (meter = 1)
    world/points          this frame's confident world points, coloured, subsampled
    world/trajectory      camera centres so far as one line strip (decimated when long)
    world/map             bounded voxel map of all frames, static, refreshed every `map_every` frames
    world/trajectory_final  after `revise` (the refiner's end-of-stream adjustment): the revised
                          camera centres, static; the map is then rebuilt from the revised frames
                          when they are all the frames logged
    stats/<name>          one scalar series per key of the `stats` dict
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from pathlib import Path

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from recon.atomic import atomic_path
from recon.points import VoxelCloud, confidence_mask, finite_rows, inside_original
from recon.session import FramePrediction

from .sinks import WebViewer, spawn_native_viewer

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 10.0
STATS_KEYS = ("fps", "latency_ms", "memory_mb", "dropped")
TRAJECTORY_COLOR = (255, 140, 0)
FINAL_TRAJECTORY_COLOR = (0, 170, 255)


def default_blueprint(stats_keys: tuple[str, ...] = STATS_KEYS) -> rrb.Blueprint:
    """3D view of `world` (depth left out: world/points already shows the geometry), the image
    and depth in 2D, and one time series per stat."""
    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Spatial3DView(name="3D", origin="world", contents=["+ world/**", "- world/camera/depth"]),
            rrb.Vertical(
                rrb.Spatial2DView(name="image", origin="world/camera/image"),
                rrb.Spatial2DView(name="depth", origin="world/camera/depth"),
                *(rrb.TimeSeriesView(name=key, origin=f"stats/{key}") for key in stats_keys),
            ),
            column_shares=[3, 1],
        ),
    )


def world_from_camera(extrinsic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-from-world [3, 4] -> (rotation [3, 3], translation = camera centre [3]) of the
    world-from-camera pose, float64: x_world = R_wc x_cam + C."""
    R = np.asarray(extrinsic, np.float64)[:, :3]
    t = np.asarray(extrinsic, np.float64)[:, 3]
    return R.T, -R.T @ t


def confident_points(
    pred: FramePrediction, conf_threshold: float | None, conf_percentile: float, max_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """World points [N, 3] float32 and colours [N, 3] float32 in [0, 1], N <= max_points.

    Keeps finite points inside the original image with points_conf > conf_threshold, then drops
    the lowest `conf_percentile` percent of those; evenly spaced pixels (deterministic, so the
    cloud does not flicker) stand for the rest when more than max_points remain.
    """
    points = pred.world_points.reshape(-1, 3)
    conf = pred.points_conf.reshape(-1)
    valid = finite_rows(points) & inside_original(pred).reshape(-1)
    index = np.flatnonzero(confidence_mask(conf, valid, conf_threshold, conf_percentile))
    if len(index) > max_points:
        index = index[np.linspace(0, len(index) - 1, max_points).astype(np.int64)]
    colors = pred.image.reshape(-1, 3)[index]
    return points[index].astype(np.float32, copy=False), colors.astype(np.float32, copy=False)


def to_uint8(colors: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1], any shape [..., 3] -> uint8."""
    return (np.clip(colors, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _check(pred: FramePrediction) -> None:
    H, W = np.shape(pred.depth)
    expected = {"extrinsic": (3, 4), "intrinsic": (3, 3), "depth_conf": (H, W), "world_points": (H, W, 3),
                "points_conf": (H, W), "image": (H, W, 3)}  # fmt: skip
    for name, shape in expected.items():
        if np.shape(getattr(pred, name)) != shape:
            raise ValueError(f"frame {pred.index}: {name} must have shape {shape}, got {np.shape(getattr(pred, name))}")


def _scalars(pred: FramePrediction, stats: dict[str, float] | None) -> dict[str, float]:
    """The finite stats as floats, plus latency_ms from the prediction when the caller gave none."""
    stats = dict(stats or {})
    if "latency_ms" not in stats and pred.latency_s > 0:
        stats["latency_ms"] = 1000.0 * pred.latency_s
    out = {}
    for key, value in stats.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"stats key must be a non-empty name without '/', got {key!r}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"stats[{key!r}] must be a number, got {value!r}") from None
        if np.isfinite(value):
            out[key] = value
    return out


class RerunLogger:
    """Logs each `FramePrediction` to any combination of a spawned native viewer (`spawn`), a
    web viewer on 127.0.0.1:`web_port` (`web`; its address is `url`) and an .rrd file (`rrd`,
    written atomically: it appears, complete, on `close()`). With no sink, `log` does nothing.
    """

    def __init__(
        self,
        app_id: str = "streamrecon",
        spawn: bool = False,
        web: bool = False,
        rrd: str | Path | None = None,
        web_port: int = 9090,
        spawn_port: int = 9876,
        conf_threshold: float | None = None,
        conf_percentile: float = 50.0,
        max_points_per_frame: int = 50_000,
        map_voxel: float = 0.02,
        map_budget: int = 200_000,
        map_every: int = 10,
        map_points_per_frame: int = 10_000,
        trajectory_max_vertices: int = 2_000,
        jpeg_quality: int | None = None,
        stats_keys: tuple[str, ...] = STATS_KEYS,
    ) -> None:
        if not 0 <= conf_percentile < 100:
            raise ValueError(f"conf_percentile must be in [0, 100), got {conf_percentile}")
        for name, value, low in (("max_points_per_frame", max_points_per_frame, 1), ("map_every", map_every, 1),
                                 ("map_points_per_frame", map_points_per_frame, 1),
                                 ("trajectory_max_vertices", trajectory_max_vertices, 2)):  # fmt: skip
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
        self.conf_threshold, self.conf_percentile = conf_threshold, float(conf_percentile)
        self.max_points_per_frame, self.map_every = max_points_per_frame, map_every
        self.map_points_per_frame = map_points_per_frame
        self.trajectory_max_vertices, self.jpeg_quality = trajectory_max_vertices, jpeg_quality
        self.map = VoxelCloud(map_voxel, map_budget)
        self.rrd = None if rrd is None else Path(rrd)
        self.web: WebViewer | None = None
        self.recording: rr.RecordingStream | None = None
        self._centers: list[np.ndarray] = []
        self._frames = self._frames_since_map = 0
        self._closed = False
        self._files = contextlib.ExitStack()
        if not (spawn or web or rrd is not None):
            return
        try:
            self.recording = rr.RecordingStream(app_id, recording_id=uuid.uuid4())
            sinks = self._open_sinks(spawn, web, web_port, spawn_port)
            self.recording.set_sinks(*sinks, default_blueprint=default_blueprint(tuple(stats_keys)))
            self._log_static(tuple(stats_keys))
        except BaseException as error:
            self._abort(error)
            raise

    def _open_sinks(self, spawn: bool, web: bool, web_port: int, spawn_port: int) -> list:
        sinks = []
        if self.rrd is not None:
            if self.rrd.is_dir():
                raise IsADirectoryError(f"rrd path is a directory: {self.rrd}")
            sinks.append(rr.FileSink(str(self._files.enter_context(atomic_path(self.rrd)))))
        if web:
            self.web = WebViewer(web_port=web_port)
            sinks.append(self.web.sink())
        if spawn:
            sinks.append(spawn_native_viewer(self.recording, spawn_port))
        return sinks

    def _log_static(self, stats_keys: tuple[str, ...]) -> None:
        rec = self.recording
        rec.log("world", rr.ViewCoordinates.RDF, static=True)
        for key in stats_keys:
            rec.log(f"stats/{key}", rr.SeriesLines(names=key), static=True)

    @property
    def url(self) -> str | None:
        """Address of the web viewer (None without `web`)."""
        return None if self.web is None else self.web.url

    @property
    def num_frames(self) -> int:
        return self._frames

    def log(self, pred: FramePrediction, stats: dict[str, float] | None = None) -> None:
        """Log one prediction (and optional scalar stats) at its frame index and timestamp."""
        if self._closed:
            raise RuntimeError("RerunLogger.log() called after close()")
        _check(pred)
        scalars = _scalars(pred, stats)  # validated before anything of the frame is logged
        self._frames += 1
        if self.recording is None:
            return
        rec = self.recording
        rec.set_time("frame", sequence=int(pred.index))
        rec.set_time("time", timestamp=float(pred.timestamp))

        R_wc, center = world_from_camera(pred.extrinsic)
        H, W = pred.depth.shape
        camera = [rr.Transform3D(translation=center, mat3x3=R_wc)]
        # An untrained or diverging model can predict a zero field of view (infinite focal
        # length); the viewer rejects such a projection, so that frame keeps the last one.
        if np.isfinite(pred.intrinsic).all():
            camera.append(rr.Pinhole(image_from_camera=pred.intrinsic, resolution=[W, H],
                                     camera_xyz=rr.ViewCoordinates.RDF))  # fmt: skip
        rec.log("world/camera", *camera)
        image = rr.Image(to_uint8(pred.image))
        rec.log("world/camera/image", image if self.jpeg_quality is None else image.compress(self.jpeg_quality))
        rec.log("world/camera/depth", rr.DepthImage(np.asarray(pred.depth, np.float32), meter=1.0))

        points, colors = confident_points(pred, self.conf_threshold, self.conf_percentile, self.max_points_per_frame)
        rec.log("world/points", rr.Points3D(points, colors=to_uint8(colors)))
        self._add_to_map(points, colors)

        self._centers.append(center)
        rec.log("world/trajectory", rr.LineStrips3D([self._trajectory()], colors=[TRAJECTORY_COLOR]))

        self._frames_since_map += 1
        if self._frames_since_map >= self.map_every:
            self._log_map()
        for key, value in scalars.items():
            rec.log(f"stats/{key}", rr.Scalars(value))

    def revise(self, predictions: list[FramePrediction]) -> None:
        """The end of stream's revised frames (recon.pipeline.run_stream): their trajectory as
        `world/trajectory_final`, and the map rebuilt from them if they are all the logged frames
        (the per-frame entities keep what was streamed, as it was seen live)."""
        if self._closed:
            raise RuntimeError("RerunLogger.revise() called after close()")
        for pred in predictions:
            _check(pred)
        if self.recording is None or not predictions:
            return
        centers = np.stack([world_from_camera(p.extrinsic)[1] for p in predictions]).astype(np.float32)
        self.recording.log("world/trajectory_final", rr.LineStrips3D([centers], colors=[FINAL_TRAJECTORY_COLOR]),
                           static=True)  # fmt: skip
        if len(predictions) != self._frames:
            return
        self.map = VoxelCloud(self.map.voxel, self.map.budget)
        for pred in predictions:
            self._add_to_map(*confident_points(pred, self.conf_threshold, self.conf_percentile, self.max_points_per_frame))
        self._log_map()

    def _add_to_map(self, points: np.ndarray, colors: np.ndarray) -> None:
        # The map's voxels are coarser than the pixels: a subsample finds nearly the same voxels
        # and keeps the periodic merge short.
        step = max(1, -(-len(points) // self.map_points_per_frame))
        self.map.add(points[::step], colors[::step])

    def _trajectory(self) -> np.ndarray:
        """[N, 3] camera centres; evenly decimated (first and last kept) beyond the vertex cap, so
        that each frame's log stays O(cap) rather than growing with the stream."""
        centers = np.asarray(self._centers, np.float32)
        if len(centers) > self.trajectory_max_vertices:
            centers = centers[np.linspace(0, len(centers) - 1, self.trajectory_max_vertices).astype(np.int64)]
        return centers

    def _log_map(self) -> None:
        # Static: a viewer keeps only the latest map instead of every refresh of it.
        points, colors = self.map.points()
        self.recording.log("world/map", rr.Points3D(points, colors=to_uint8(colors)), static=True)
        self._frames_since_map = 0

    def _abort(self, error: BaseException) -> None:
        """Undo a failed construction: stop what was started, leave no .rrd behind."""
        self._closed = True
        if self.recording is not None:
            self.recording.disconnect()
        if self.web is not None:
            self.web.close()
        self._files.__exit__(type(error), error, error.__traceback__)

    def close(self) -> None:
        """Log the final map, flush every sink, stop the web viewer and publish the .rrd file
        (also after an interrupted run: what was logged so far is a valid recording)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.recording is not None:
                if self._frames_since_map:
                    self._log_map()
                try:
                    self.recording.flush(timeout_sec=FLUSH_TIMEOUT_S)
                except Exception as error:  # a viewer that went away must not hang or fail the run
                    log.warning("rerun flush did not complete: %s", error)
                self.recording.disconnect()  # closes the file sink: the footer is written here
        finally:
            if self.web is not None:
                self.web.close()
            self._files.close()

    def __enter__(self) -> RerunLogger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
