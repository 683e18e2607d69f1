"""Rerun logger: what is logged to an .rrd file, read back with rerun's own reader."""

from __future__ import annotations

import socket
import sys
import urllib.request
from collections import defaultdict

import numpy as np
import pytest
import rerun as rr
from rerun.chunk import RrdReader

from recon.preprocess import preprocess_frame
from recon.session import FramePrediction
from recon.viewer.rerun_logger import RerunLogger, confident_points
from recon.viewer.sinks import WebViewer

H, W = 28, 42
K = np.array([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]], np.float32)
PLANE_Z = 2.0


@pytest.fixture(autouse=True)
def strict_rerun():
    """Misuse of the rerun API raises instead of being logged as a warning."""
    before = rr.strict_mode()
    rr.set_strict_mode(True)
    yield
    rr.set_strict_mode(before)


def rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def pose(i: int) -> tuple[np.ndarray, np.ndarray]:
    """World-from-camera (R_wc, centre) of synthetic frame i: moving along x, turning about y."""
    return rot_y(0.05 * i), np.array([0.1 * i, 0.02 * i, 0.0])


def make_prediction(i: int, pad: bool = False) -> FramePrediction:
    """A camera looking at the plane z = PLANE_Z; depth and world points are exact."""
    pre = preprocess_frame(np.zeros((H, W, 3), np.uint8), target_width=W, mode="pad" if pad else "crop")
    h, w = pre.transform.model_hw
    K_model = K.copy()
    K_model[:2, 2] = w / 2, h / 2
    R_wc, C = pose(i)
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K_model).T.astype(np.float64)
    rays_world = rays_cam @ R_wc.T
    depth = (PLANE_Z - C[2]) / rays_world[..., 2]  # ray z in the camera is 1, so the scale is the depth
    world_points = C + depth[..., None] * rays_world
    R_cw = R_wc.T
    rng = np.random.default_rng(i)
    return FramePrediction(
        index=i, timestamp=1_700_000_000.0 + 0.1 * i,
        extrinsic=np.concatenate([R_cw, (-R_cw @ C)[:, None]], 1).astype(np.float32),
        intrinsic=K_model, intrinsic_original=K_model,
        depth=depth.astype(np.float32), depth_conf=np.full((h, w), 2.0, np.float32),
        world_points=world_points.astype(np.float32), points_conf=(1 + rng.random((h, w))).astype(np.float32),
        image=rng.random((h, w, 3)).astype(np.float32), transform=pre.transform, latency_s=0.05,
    )  # fmt: skip


def read_rrd(path) -> dict[str, list]:
    """Entity path -> record batches of its chunks."""
    out = defaultdict(list)
    for chunk in RrdReader(path).stream():
        out[chunk.entity_path].append(chunk.to_record_batch())
    return out


def rows(batches: list, column: str) -> list[tuple[int | None, object]]:
    """(frame or None for static, value) for every row holding `column`, sorted by frame."""
    found = []
    for batch in batches:
        if column not in batch.schema.names:
            continue
        frames = batch.column("frame").to_pylist() if "frame" in batch.schema.names else [None] * batch.num_rows
        found += [(f, v) for f, v in zip(frames, batch.column(column).to_pylist()) if v is not None]
    return sorted(found, key=lambda fv: -1 if fv[0] is None else fv[0])


def log_frames(path, n: int = 5, **options) -> list[FramePrediction]:
    preds = [make_prediction(i) for i in range(n)]
    with RerunLogger(rrd=path, **options) as logger:
        for i, pred in enumerate(preds):
            logger.log(pred, {"fps": 10.0 + i, "memory_mb": 100.0 + i, "dropped": i // 2})
        assert not path.exists(), "the .rrd must appear only once complete"
    assert path.is_file()
    return preds


def test_rrd_holds_every_entity_and_the_logged_camera_poses(tmp_path):
    path = tmp_path / "run.rrd"
    preds = log_frames(path, max_points_per_frame=100, map_every=2)
    data = read_rrd(path)
    expected = {"/world", "/world/camera", "/world/camera/image", "/world/camera/depth", "/world/points",
                "/world/trajectory", "/world/map", "/stats/fps", "/stats/latency_ms", "/stats/memory_mb",
                "/stats/dropped"}  # fmt: skip
    assert expected <= set(data)
    assert RrdReader(path).blueprints(), "the default blueprint is saved with the recording"

    translations = rows(data["/world/camera"], "Transform3D:translation")
    matrices = rows(data["/world/camera"], "Transform3D:mat3x3")
    assert [f for f, _ in translations] == [f for f, _ in matrices] == [p.index for p in preds]
    for (_, t), (_, m), pred in zip(translations, matrices, preds):
        R_wc, C = pose(pred.index)
        t, R = np.asarray(t[0]), np.asarray(m[0]).reshape(3, 3, order="F")  # rerun stores columns
        np.testing.assert_allclose(t, C, atol=1e-6)
        np.testing.assert_allclose(R, R_wc, atol=1e-6)
        # The logged transform maps camera coordinates (the unprojected depth) onto the world points.
        u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
        x_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(pred.intrinsic).T * pred.depth[..., None]
        np.testing.assert_allclose(x_cam @ R.T + t, pred.world_points, atol=1e-5)

    for _, k in rows(data["/world/camera"], "Pinhole:image_from_camera"):
        np.testing.assert_allclose(np.asarray(k[0]).reshape(3, 3, order="F"), K, atol=1e-6)
    assert [tuple(r[0]) for _, r in rows(data["/world/camera"], "Pinhole:resolution")] == [(W, H)] * 5
    assert len(rows(data["/world/camera/image"], "Image:buffer")) == 5
    assert len(rows(data["/world/camera/depth"], "DepthImage:buffer")) == 5

    points = rows(data["/world/points"], "Points3D:positions")
    assert [f for f, _ in points] == list(range(5))
    assert all(0 < len(p) <= 100 for _, p in points)
    strip = rows(data["/world/trajectory"], "LineStrips3D:strips")[-1][1][0]
    np.testing.assert_allclose(strip, [pose(i)[1] for i in range(5)], atol=1e-6)

    maps = rows(data["/world/map"], "Points3D:positions")
    assert maps and all(f is None for f, _ in maps), "the map is static"
    assert len(maps) == 3, "refreshed every 2 frames and once more on close"
    assert len(maps[-1][1]) > len(points[-1][1])
    fps = rows(data["/stats/fps"], "Scalars:scalars")
    assert [f for f, _ in fps] == list(range(5)) and [v[0] for _, v in fps] == [10.0 + i for i in range(5)]
    latency = rows(data["/stats/latency_ms"], "Scalars:scalars")
    np.testing.assert_allclose([v[0] for _, v in latency], [50.0] * 5)


def test_long_trajectory_is_decimated_keeping_both_ends(tmp_path):
    path = tmp_path / "run.rrd"
    log_frames(path, n=5, trajectory_max_vertices=3)
    strips = rows(read_rrd(path)["/world/trajectory"], "LineStrips3D:strips")
    assert [len(s[0]) for _, s in strips] == [1, 2, 3, 3, 3]
    np.testing.assert_allclose(strips[-1][1][0], [pose(0)[1], pose(2)[1], pose(4)[1]], atol=1e-6)


def _shifted(pred: FramePrediction, shift: np.ndarray) -> FramePrediction:
    """The frame in a world moved by `shift` (as a revision moves a camera and its points)."""
    import dataclasses

    extrinsic = pred.extrinsic.astype(np.float64)
    extrinsic[:, 3] -= extrinsic[:, :3] @ shift
    return dataclasses.replace(pred, extrinsic=extrinsic.astype(np.float32),
                               world_points=(pred.world_points + shift).astype(np.float32))  # fmt: skip


@pytest.mark.parametrize("revise_all", [True, False])
def test_revision_logs_the_final_trajectory_and_rebuilds_the_map_from_all_frames(tmp_path, revise_all):
    path = tmp_path / "run.rrd"
    shift = np.array([0.0, 0.0, 5.0])
    preds = [make_prediction(i) for i in range(4)]
    revised = [_shifted(p, shift) for p in (preds if revise_all else preds[2:])]
    with RerunLogger(rrd=path, map_every=100) as logger:
        for pred in preds:
            logger.log(pred)
        logger.revise(revised)
    data = read_rrd(path)
    final = rows(data["/world/trajectory_final"], "LineStrips3D:strips")
    assert [f for f, _ in final] == [None]  # static
    np.testing.assert_allclose(final[0][1][0], [pose(p.index)[1] + shift for p in revised], atol=1e-5)
    maps = rows(data["/world/map"], "Points3D:positions")
    z = np.asarray(maps[-1][1])[:, 2]
    if revise_all:  # rebuilt from the revised frames: the plane moved with them
        np.testing.assert_allclose(z, PLANE_Z + shift[2], atol=1e-4)
    else:  # a partial revision leaves the streamed map
        np.testing.assert_allclose(z, PLANE_Z, atol=1e-4)


def test_confident_points_drop_padding_low_confidence_and_respect_the_cap():
    pred = make_prediction(0, pad=True)  # 42x42 model input, the 28 original rows in the middle
    pts, colors = confident_points(pred, conf_threshold=1.2, conf_percentile=50.0, max_points=10_000)
    oy = int(pred.transform.offset[1])
    inside = np.zeros(pred.depth.shape, bool)
    inside[oy : oy + H] = True
    conf = pred.points_conf
    candidates = inside & (conf > 1.2)
    kept = candidates & (conf >= np.percentile(conf[candidates], 50))
    np.testing.assert_array_equal(pts, pred.world_points[kept])
    np.testing.assert_array_equal(colors, pred.image[kept])
    capped, _ = confident_points(pred, None, 0.0, max_points=50)
    assert len(capped) == 50


def test_logger_without_sinks_needs_no_viewer_and_rejects_bad_input(tmp_path):
    with RerunLogger() as logger:  # no spawn, no web, no file: logging is a no-op
        logger.log(make_prediction(0))
        assert logger.url is None and logger.recording is None
    with pytest.raises(RuntimeError, match="after close"):
        logger.log(make_prediction(1))

    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        RerunLogger(rrd=tmp_path)
    with pytest.raises(ValueError, match="map_every"):
        RerunLogger(map_every=0)
    path = tmp_path / "bad.rrd"
    with RerunLogger(rrd=path) as logger:
        bad = make_prediction(0)
        bad.extrinsic = bad.extrinsic[:, :3]
        with pytest.raises(ValueError, match=r"frame 0: extrinsic must have shape \(3, 4\)"):
            logger.log(bad)
        with pytest.raises(ValueError, match=r"stats\['fps'\] must be a number"):
            logger.log(make_prediction(0), {"fps": "fast"})
    assert "/world/camera" not in read_rrd(path), "a rejected frame logs nothing"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is for Linux")
def test_spawn_without_a_display_fails_at_once_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="needs a display"):
        RerunLogger(spawn=True, rrd=tmp_path / "run.rrd")
    assert list(tmp_path.iterdir()) == []


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_web_viewer_on_localhost_combines_with_a_file_and_closes(tmp_path):
    path = tmp_path / "web.rrd"
    logger = RerunLogger(web=True, web_port=0, rrd=path)  # ephemeral ports, 127.0.0.1 only
    try:
        web = logger.web
        assert logger.url.startswith(f"http://127.0.0.1:{web.web_port}/?url=rerun%2Bhttp%3A%2F%2F127.0.0.1%3A")
        page = urllib.request.urlopen(logger.url, timeout=10).read().decode()
        assert "<html" in page.lower()
        logger.log(make_prediction(0), {"fps": 1.0})
    finally:
        logger.close()
    assert web.process.poll() is not None
    assert not _accepts(web.web_port) and not _accepts(web.grpc_port)
    assert "/world/camera" in read_rrd(path)


def test_web_viewer_refuses_a_busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError, match=f"port {s.getsockname()[1]}"):
            WebViewer(web_port=s.getsockname()[1])
