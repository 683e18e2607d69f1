"""Exports: synthetic predictions of a known plane seen by known cameras, written and read back
with the tools they are meant for (open3d, pycolmap, the trajectory readers, cv2)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from recon.datasets.trajectory import Trajectory, read_kitti, read_tum
from recon.export import Exporter, ExportError, parse_formats
from recon.preprocess import preprocess_frame
from recon.session import FramePrediction

ORIGINAL_HW = (60, 90)  # -> model input 28 x 42 in crop mode
NORMAL = np.array([0.1, -0.2, 1.0]) / np.linalg.norm([0.1, -0.2, 1.0])
OFFSET = 3.0  # plane: NORMAL . X = OFFSET
OUTLIER = 0.2  # fraction of pixels with low confidence and wrong geometry


def rotation(rx: float, ry: float) -> np.ndarray:
    cx, sx, cy, sy = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry)
    return np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])


def plane_colour(X: np.ndarray) -> np.ndarray:
    """Linear in position, so voxel averages keep colour and position consistent."""
    return np.stack((0.5 + 0.2 * X[..., 0], 0.5 + 0.2 * X[..., 1], np.full(X.shape[:-1], 0.3)), -1)


def make_prediction(index: int, seed: int = 0) -> FramePrediction:
    rng = np.random.default_rng(seed + index)
    transform = preprocess_frame(np.zeros(ORIGINAL_HW + (3,), np.uint8), target_width=42).transform
    H, W = transform.model_hw
    R = rotation(0.05 * index, -0.08 * index) if index else np.eye(3)
    center = np.array([0.3 * index, -0.1 * index, 0.2 * index])
    extrinsic = np.concatenate((R, (-R @ center)[:, None]), 1).astype(np.float32)
    K = np.array([[40.0 + index, 0, W / 2], [0, 41.0 + index, H / 2], [0, 0, 1]], np.float32)
    R64, t64 = extrinsic[:, :3].astype(np.float64), extrinsic[:, 3].astype(np.float64)
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    rays_cam = np.stack(((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)), -1)
    rays_world = rays_cam @ R64  # R^T d per pixel
    cam_center = -R64.T @ t64
    depth = (OFFSET - NORMAL @ cam_center) / (rays_world @ NORMAL)
    world_points = cam_center + depth[..., None] * rays_world
    conf = rng.uniform(2.0, 6.0, (H, W))
    bad = rng.random((H, W)) < OUTLIER  # low confidence, and far off the plane: must be filtered out
    conf[bad], depth[bad], world_points[bad] = 1.2, depth[bad] * 1.5, world_points[bad] * 1.5
    return FramePrediction(
        index=index, timestamp=100.0 + 0.1 * index, extrinsic=extrinsic, intrinsic=K,
        intrinsic_original=np.asarray(transform.intrinsics_to_original(K), np.float32),
        depth=depth.astype(np.float32), depth_conf=conf.astype(np.float32),
        world_points=world_points.astype(np.float32), points_conf=conf.astype(np.float32),
        image=np.clip(plane_colour(world_points), 0, 1).astype(np.float32), transform=transform,
    )  # fmt: skip


def plane_residual(points: np.ndarray, shift: np.ndarray | None = None) -> float:
    return float(np.abs((points - (0 if shift is None else shift)) @ NORMAL - OFFSET).max())


def leftover_temp_files(root) -> list[str]:
    return [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in files + dirs if n.startswith(".")]


@pytest.fixture(scope="module")
def full_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    preds = [make_prediction(i) for i in range(3)]
    with Exporter(out, formats="all", conf_threshold=1.5, conf_percentile=None, mesh_voxel_size=0.1) as exporter:
        for pred in preds:
            exporter.add(pred)
    return out, preds, exporter.finalize()


def test_parse_formats_validates_names():
    assert parse_formats("ply, traj") == {"ply", "traj"}
    assert parse_formats("all") == {"ply", "traj", "colmap", "depth", "mesh"}
    with pytest.raises(ExportError, match="'obj'"):
        parse_formats("ply,obj")
    with pytest.raises(ExportError, match="'obj'"):
        Exporter("unused", formats=["obj"])


def test_unwritable_out_dir_fails_at_construction(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match="not writable: .*file/out"):
        Exporter(blocker / "out", formats="traj")
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ExportError, match="not writable: .*locked"):
            Exporter(locked, formats="traj")


def test_ply_is_binary_coloured_and_on_the_plane(full_export):
    import open3d as o3d

    out, _, written = full_export
    assert written["ply"] == out / "points.ply"
    assert b"format binary_little_endian" in written["ply"].read_bytes()[:200]
    cloud = o3d.io.read_point_cloud(str(written["ply"]))
    points, colors = np.asarray(cloud.points), np.asarray(cloud.colors)
    assert len(points) > 100 and cloud.has_colors()
    assert plane_residual(points) < 1e-5  # the low-confidence outliers are off the plane: all filtered
    np.testing.assert_allclose(colors, np.clip(plane_colour(points), 0, 1), atol=1.5 / 255)


def test_point_source_uses_the_point_map(tmp_path):
    import open3d as o3d

    preds = [make_prediction(i) for i in range(2)]
    for p in preds:
        p.world_points[...] += np.float32([0, 0, 1])  # the point head disagrees with the depth head
    with Exporter(tmp_path, formats="ply", source="points") as exporter:
        for pred in preds:
            exporter.add(pred)
    points = np.asarray(o3d.io.read_point_cloud(str(tmp_path / "points.ply")).points)
    assert plane_residual(points, shift=np.array([0, 0, 1])) < 1e-5


def test_conf_percentile_keeps_the_top_share_of_each_frame(tmp_path):
    pred = make_prediction(0)
    counts = {}
    for pct in (None, 50.0):
        exporter = Exporter(tmp_path / str(pct), formats="ply", conf_threshold=None, conf_percentile=pct,
                            voxel_size=1e-6)  # fmt: skip
        exporter.add(pred)
        counts[pct] = len(exporter._cloud)
    assert counts[None] == pred.depth.size
    assert abs(counts[50.0] - pred.depth.size / 2) <= 2


def test_colmap_model_reads_back_with_matching_poses(full_export):
    import pycolmap

    out, preds, written = full_export
    rec = pycolmap.Reconstruction(str(written["colmap"]))
    assert rec.num_images() == len(preds) and rec.num_points3D() > 100
    for pred in preds:
        image = rec.find_image_with_name(f"{pred.index:06d}.jpg")
        np.testing.assert_allclose(image.cam_from_world().matrix(), pred.extrinsic, atol=1e-6)
        camera = rec.camera(image.camera_id)
        assert camera.model.name == "PINHOLE" and (camera.height, camera.width) == pred.depth.shape
        K = pred.intrinsic
        np.testing.assert_allclose(camera.params, [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], atol=1e-6)
        jpg = cv2.imread(str(written["colmap_images"] / image.name))
        assert jpg.shape[:2] == pred.depth.shape
    xyz = np.stack([p.xyz for p in rec.points3D.values()])
    assert plane_residual(xyz) < 1e-5


def test_colmap_original_resolution_uses_original_images_and_intrinsics(tmp_path):
    import pycolmap

    pred = make_prediction(1)
    original = np.full(ORIGINAL_HW + (3,), 128, np.uint8)
    with Exporter(tmp_path, formats="colmap", conf_threshold=1.5, colmap_resolution="original", colmap_text=True) as exporter:
        with pytest.raises(ExportError, match="original_image"):
            exporter.add(pred)
        exporter.add(pred, original_image=original)
    assert (tmp_path / "colmap/sparse/0/points3D.txt").is_file()
    camera = next(iter(pycolmap.Reconstruction(str(tmp_path / "colmap/sparse/0")).cameras.values()))
    K = pred.intrinsic_original
    assert (camera.height, camera.width) == ORIGINAL_HW
    np.testing.assert_allclose(camera.params, [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], atol=1e-5)
    assert cv2.imread(str(tmp_path / "colmap/images/000001.jpg")).shape[:2] == ORIGINAL_HW


def test_trajectories_and_intrinsics_round_trip(full_export):
    out, preds, written = full_export
    expected = Trajectory.from_extrinsics(np.stack([p.extrinsic for p in preds]), [p.timestamp for p in preds])
    for traj in (read_tum(written["traj_tum"]), read_kitti(written["traj_kitti"])):
        np.testing.assert_allclose(traj.poses, expected.poses, atol=1e-6)
    np.testing.assert_allclose(read_tum(written["traj_tum"]).timestamps, expected.timestamps, atol=1e-9)
    doc = json.loads(written["intrinsics"].read_text())
    assert "top-left corner" in doc["convention"]
    for pred, frame in zip(preds, doc["frames"]):
        for key, K, hw in (("model", pred.intrinsic, pred.transform.model_hw),
                           ("original", pred.intrinsic_original, pred.transform.original_hw)):  # fmt: skip
            entry = frame[key]
            np.testing.assert_allclose([entry["fx"], entry["fy"], entry["cx"], entry["cy"]],
                                       [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], rtol=1e-6)  # fmt: skip
            assert (entry["height"], entry["width"]) == tuple(hw)


def test_depth_png_round_trips_within_quantisation(full_export):
    out, preds, _ = full_export
    info = json.loads((out / "depth/depth_info.json").read_text())
    for pred in preds:
        depth = cv2.imread(str(out / f"depth/{pred.index:06d}.png"), cv2.IMREAD_UNCHANGED)
        conf = cv2.imread(str(out / f"depth_conf/{pred.index:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and conf.dtype == np.uint16
        np.testing.assert_allclose(depth / info["depth_scale"], pred.depth, atol=0.5 / info["depth_scale"] + 1e-6)
        np.testing.assert_allclose(conf / info["conf_scale"], pred.depth_conf, atol=0.5 / info["conf_scale"] + 1e-6)


def test_depth_npz_is_exact(tmp_path):
    pred = make_prediction(2)
    with Exporter(tmp_path, formats="depth", depth_format="npz") as exporter:
        exporter.add(pred)
    data = np.load(tmp_path / "depth/000002.npz")
    np.testing.assert_array_equal(data["depth"], pred.depth)
    np.testing.assert_array_equal(data["depth_conf"], pred.depth_conf)


def test_mesh_is_non_empty_and_on_the_plane(full_export):
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(full_export[2]["mesh"]))
    vertices = np.asarray(mesh.vertices)
    assert len(mesh.triangles) > 100 and mesh.has_vertex_colors()
    assert plane_residual(vertices) < 0.03  # a third of the 0.1 TSDF voxel
    # Colours come from the nearest pixel: a pixel spans ~0.08 on the plane, the colour slope is 0.2.
    np.testing.assert_allclose(np.asarray(mesh.vertex_colors), plane_colour(vertices), atol=0.03)


def test_interrupted_run_keeps_valid_outputs_of_the_frames_so_far(tmp_path):
    import pycolmap

    preds = [make_prediction(i) for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        with Exporter(tmp_path, formats="ply,traj,colmap,depth") as exporter:
            for pred in preds[:2]:
                exporter.add(pred)
            raise KeyboardInterrupt
    assert len(read_tum(tmp_path / "trajectory_tum.txt")) == 2
    assert pycolmap.Reconstruction(str(tmp_path / "colmap/sparse/0")).num_images() == 2
    assert sorted(p.name for p in (tmp_path / "depth").glob("*.png")) == ["000000.png", "000001.png"]
    assert (tmp_path / "points.ply").stat().st_size > 1000
    with pytest.raises(ExportError, match="finalized"):
        exporter.add(preds[2])


def test_repeated_frame_index_is_refused(tmp_path):
    with Exporter(tmp_path, formats="traj") as exporter:
        exporter.add(make_prediction(0))
        with pytest.raises(ExportError, match="frame index 0 was already exported"):
            exporter.add(make_prediction(0))


def test_no_temp_files_left_behind(full_export):
    assert leftover_temp_files(full_export[0]) == []


def test_everything_filtered_still_writes_valid_empty_files(tmp_path):
    import pycolmap

    with Exporter(tmp_path, formats="ply,colmap,mesh", conf_threshold=1e6) as exporter:
        exporter.add(make_prediction(0))
    assert b"element vertex 0" in (tmp_path / "points.ply").read_bytes()
    assert b"element face 0" in (tmp_path / "mesh.ply").read_bytes()
    rec = pycolmap.Reconstruction(str(tmp_path / "colmap/sparse/0"))
    assert rec.num_images() == 1 and rec.num_points3D() == 0
