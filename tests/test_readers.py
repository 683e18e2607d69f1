"""Dataset readers (recon.datasets.readers): each on a tiny fixture written to tmp_path, plus
the real TUM fr3 excerpt in ../shared when it is there."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from recon.datasets.readers import (
    ColmapSequence,
    FolderSequence,
    NerfSequence,
    SevenScenesSequence,
    TUMSequence,
    detect_kind,
    list_images,
    natural_key,
    open_sequence,
)
from recon.datasets.trajectory import Trajectory, quat_xyzw_to_matrix, write_kitti, write_tum

TUM_REAL = Path(__file__).resolve().parents[2] / "shared/data/tum_fr3_office_17kf"


def write_png(path: Path, h: int = 6, w: int = 8, bgr=(255, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = bgr
    assert cv2.imwrite(str(path), image)
    return path


def random_poses(n: int, seed: int = 0) -> np.ndarray:
    """[n, 4, 4] rigid world-from-camera poses."""
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = quat_xyzw_to_matrix(rng.normal(size=(n, 4)))
    poses[:, :3, 3] = rng.normal(size=(n, 3))
    return poses


def assert_inverse(extrinsic: np.ndarray, world_from_camera: np.ndarray) -> None:
    expected = np.linalg.inv(world_from_camera)[:3]
    np.testing.assert_allclose(extrinsic, expected, atol=1e-9)


# --- image folder ------------------------------------------------------------------------------


def test_natural_key_orders_numbers_by_value():
    names = ["frame10.png", "frame2.png", "Frame3.PNG", "frame1.jpg"]
    assert sorted(names, key=natural_key) == ["frame1.jpg", "frame2.png", "Frame3.PNG", "frame10.png"]


def test_list_images_natural_order_and_warns_about_non_images(tmp_path):
    for name in ("frame10.png", "frame2.png", "frame1.jpg"):
        write_png(tmp_path / name)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".DS_Store").write_text("x")
    (tmp_path / "sub").mkdir()
    with pytest.warns(UserWarning, match="notes.txt") as record:
        paths = list_images(tmp_path)
    assert not any(".DS_Store" in str(w.message) for w in record)
    assert [p.name for p in paths] == ["frame1.jpg", "frame2.png", "frame10.png"]


def test_folder_sequence_reads_rgb_lazily(tmp_path):
    write_png(tmp_path / "a.png", bgr=(255, 0, 0))  # blue in OpenCV's BGR order
    seq = FolderSequence(tmp_path)
    frame = seq[0]
    assert frame.image.shape == (6, 8, 3) and frame.image.dtype == np.uint8
    assert tuple(frame.image[0, 0]) == (0, 0, 255)
    assert frame.name == "a.png" and frame.extrinsic is None and frame.intrinsic is None


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=f"empty: {tmp_path}"):
        open_sequence(tmp_path)
    with pytest.raises(ValueError, match=f"no images .* {tmp_path}"):
        FolderSequence(tmp_path)


def test_missing_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        open_sequence(missing)
    for reader in (FolderSequence, TUMSequence, SevenScenesSequence, ColmapSequence, NerfSequence):
        with pytest.raises(FileNotFoundError, match=str(missing)):
            reader(missing)


def test_unrecognised_folder_and_unknown_kind(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=f"no dataset recognised in {tmp_path}"):
        open_sequence(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset kind 'bogus'"):
        open_sequence(tmp_path, kind="bogus")


def test_corrupt_image_error_names_the_file_when_read(tmp_path):
    write_png(tmp_path / "0.png")
    (tmp_path / "1.png").write_bytes(b"not a png at all")
    seq = FolderSequence(tmp_path)  # listing does not decode
    seq[0]
    with pytest.raises(ValueError, match="1.png"):
        seq[1]


def test_folder_with_tum_trajectory_associates_by_file_name_time(tmp_path):
    images = tmp_path / "images"
    for name in ("1.000.png", "2.000.png", "3.500.png"):
        write_png(images / name)
    poses = random_poses(3)
    traj_path = tmp_path / "traj.txt"
    write_tum(traj_path, Trajectory(poses, [1.005, 2.0, 3.0]))  # 3.5 has no row within 20 ms

    seq = FolderSequence(images, trajectory=traj_path)
    assert [f.name for f in seq] == ["1.000.png", "2.000.png"]
    assert seq[0].timestamp == 1.0
    for frame, pose in zip(seq, poses[:2]):
        np.testing.assert_allclose(frame.extrinsic, np.linalg.inv(pose)[:3], atol=1e-6)  # TUM text precision

    kept = FolderSequence(images, trajectory=traj_path, require_pose=False)
    assert len(kept) == 3 and kept[2].extrinsic is None and kept[1].extrinsic is not None


def test_folder_with_kitti_trajectory_by_order_and_intrinsic_file(tmp_path):
    images = tmp_path / "images"
    for name in ("img_b.png", "img_a.png"):
        write_png(images / name)
    poses = random_poses(2, seed=1)
    write_kitti(tmp_path / "poses.txt", Trajectory(poses, [0, 1]))
    (tmp_path / "K.txt").write_text("100 110 4 3\n")
    seq = FolderSequence(images, trajectory=tmp_path / "poses.txt", intrinsic=tmp_path / "K.txt")
    assert [f.timestamp for f in seq] == [0.0, 1.0]  # names are not numbers -> indices
    np.testing.assert_allclose(seq[1].extrinsic, np.linalg.inv(poses[1])[:3], atol=1e-6)
    np.testing.assert_array_equal(seq[0].intrinsic, [[100, 0, 4], [0, 110, 3], [0, 0, 1]])
    shifted = FolderSequence(images, intrinsic=[100, 110, 4, 3], pixel_center=True)
    assert shifted[0].intrinsic[0, 2] == 4.5 and shifted[0].intrinsic[1, 2] == 3.5

    write_kitti(tmp_path / "short.txt", Trajectory(poses[:1], [0]))
    with pytest.raises(ValueError, match="1 KITTI poses for 2 images"):
        FolderSequence(images, trajectory=tmp_path / "short.txt")


def test_associate_nearest_within_window_on_unsorted_reference():
    from recon.datasets.readers.common import associate

    match = associate(np.array([1.0, 2.0, 5.0, 2.99]), np.array([2.01, 0.99, 3.0, 2.97]), max_dt=0.02)
    np.testing.assert_array_equal(match, [1, 0, -1, 2])


# --- TUM RGB-D ---------------------------------------------------------------------------------


def make_tum(root: Path, rgb_times, depth_times, gt_times, poses) -> None:
    lines_rgb, lines_depth = ["# color images"], ["# depth maps"]
    for t in rgb_times:
        write_png(root / "rgb" / f"{t:.6f}.png")
        lines_rgb.append(f"{t:.6f} rgb/{t:.6f}.png")
    (root / "depth").mkdir()
    for k, t in enumerate(depth_times):
        raw = np.full((6, 8), 5000 * (k + 1), np.uint16)  # k + 1 metres
        raw[0, 0] = 0
        assert cv2.imwrite(str(root / "depth" / f"{t:.6f}.png"), raw)
        lines_depth.append(f"{t:.6f} depth/{t:.6f}.png")
    (root / "rgb.txt").write_text("\n".join(lines_rgb) + "\n")
    (root / "depth.txt").write_text("\n".join(lines_depth) + "\n")
    write_tum(root / "groundtruth.txt", Trajectory(poses, gt_times))


def test_tum_association_depth_and_fr1_intrinsics(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    poses = random_poses(3, seed=2)
    make_tum(root, rgb_times=[10.0, 10.5, 11.0], depth_times=[10.01, 10.49, 11.3],
             gt_times=[10.004, 10.6, 11.01], poses=poses)  # fmt: skip
    assert detect_kind(root) == "tum"
    seq = open_sequence(root)
    assert isinstance(seq, TUMSequence)
    assert [f.timestamp for f in seq] == [10.0, 11.0]  # 10.5 has no GT within 20 ms: dropped
    f0, f1 = seq[0], seq[1]
    np.testing.assert_allclose(f0.extrinsic, np.linalg.inv(poses[0])[:3], atol=1e-6)
    np.testing.assert_allclose(f1.extrinsic, np.linalg.inv(poses[2])[:3], atol=1e-6)
    np.testing.assert_allclose(f0.intrinsic, [[517.3, 0, 319.1], [0, 516.5, 255.8], [0, 0, 1]])
    assert f0.depth.dtype == np.float32 and f0.depth[0, 0] == 0.0 and f0.depth[1, 1] == pytest.approx(1.0)
    assert f1.depth is None  # nearest depth (11.3) is 0.3 s away

    kept = TUMSequence(root, require_pose=False)
    assert len(kept) == 3 and kept[1].extrinsic is None
    assert kept[1].depth[1, 1] == pytest.approx(2.0)


def test_tum_calibration_file_wins_over_folder_name(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg2_desk"
    make_tum(root, [1.0], [1.0], [1.0], random_poses(1))
    (root / "calib.txt").write_text("500 501 300 200\n")
    np.testing.assert_allclose(TUMSequence(root)[0].intrinsic, [[500, 0, 300.5], [0, 501, 200.5], [0, 0, 1]])


@pytest.mark.skipif(not TUM_REAL.is_dir(), reason=f"real TUM excerpt not found at {TUM_REAL}")
def test_tum_real_fr3_excerpt():
    seq = open_sequence(TUM_REAL)
    assert isinstance(seq, TUMSequence)
    files = sorted(p.name for p in (TUM_REAL / "rgb").glob("*.png"))
    assert len(files) == 17 and len(seq) == 16
    assert [f.name for f in seq] == files[1:]  # the first frame precedes the GT by 67 ms
    gt = np.loadtxt(TUM_REAL / "groundtruth.txt", comments="#")
    for frame in seq:
        np.testing.assert_allclose(frame.intrinsic, [[535.4, 0, 320.6], [0, 539.2, 248.1], [0, 0, 1]])
        assert frame.image.shape == (480, 640, 3)
        row = gt[np.argmin(np.abs(gt[:, 0] - frame.timestamp))]
        assert abs(row[0] - frame.timestamp) <= 0.02
        pose = np.eye(4)
        pose[:3, :3] = quat_xyzw_to_matrix(row[4:8])
        pose[:3, 3] = row[1:4]
        np.testing.assert_allclose(frame.extrinsic @ pose, np.eye(4)[:3], atol=1e-9)


# --- 7-Scenes ----------------------------------------------------------------------------------


def make_seven_scenes_seq(seq_dir: Path, poses: np.ndarray) -> None:
    for k, pose in enumerate(poses):
        write_png(seq_dir / f"frame-{k:06d}.color.png")
        raw = np.full((6, 8), 1500, np.uint16)
        raw[2, 3] = 65535
        assert cv2.imwrite(str(seq_dir / f"frame-{k:06d}.depth.png"), raw)
        np.savetxt(seq_dir / f"frame-{k:06d}.pose.txt", pose)


def test_seven_scenes(tmp_path):
    scene = tmp_path / "chess"
    poses = random_poses(2, seed=3)
    make_seven_scenes_seq(scene / "seq-01", poses)
    make_seven_scenes_seq(scene / "seq-02", poses[::-1])
    assert detect_kind(scene) == "7scenes" and detect_kind(scene / "seq-01") == "7scenes"
    with pytest.raises(ValueError, match="seq-01, seq-02"):
        SevenScenesSequence(scene)
    seq = SevenScenesSequence(scene, sequence=2)
    assert len(seq) == 2 and seq.name == "chess/seq-02"
    frame = open_sequence(scene / "seq-01")[1]
    assert_inverse(frame.extrinsic, poses[1])
    np.testing.assert_allclose(frame.intrinsic, [[585, 0, 320.5], [0, 585, 240.5], [0, 0, 1]])
    assert frame.depth[0, 0] == pytest.approx(1.5) and frame.depth[2, 3] == 0.0
    assert frame.timestamp == pytest.approx(1 / 30)


# --- COLMAP ------------------------------------------------------------------------------------


def make_colmap(root: Path, model: str = "PINHOLE", params=(100.0, 110.0, 4.2, 2.9), binary: bool = True):
    import pycolmap

    rec = pycolmap.Reconstruction()
    camera = pycolmap.Camera.create_from_model_name(1, model, 100.0, 8, 6)
    camera.params = list(params)
    rec.add_camera_with_trivial_rig(camera)
    poses = random_poses(3, seed=4)
    for image_id, (name, pose) in enumerate(zip(["img10.png", "img2.png", "img1.png"], poses), start=1):
        write_png(root / "images" / name)
        image = pycolmap.Image(name=name, camera_id=1, image_id=image_id)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(np.linalg.inv(pose)[:3]))
    model_dir = root / "sparse" / "0"
    model_dir.mkdir(parents=True)
    (rec.write_binary if binary else rec.write_text)(str(model_dir))
    return camera, poses


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_text_and_binary(tmp_path, binary):
    camera, poses = make_colmap(tmp_path, binary=binary)
    assert (tmp_path / "sparse/0" / ("cameras.bin" if binary else "cameras.txt")).is_file()
    assert detect_kind(tmp_path) == "colmap"
    seq = open_sequence(tmp_path)
    assert isinstance(seq, ColmapSequence)
    assert [f.name for f in seq] == ["img1.png", "img2.png", "img10.png"]
    for frame, pose in zip(seq, poses[[2, 1, 0]]):
        assert_inverse(frame.extrinsic, pose)
        np.testing.assert_allclose(frame.intrinsic, [[100, 0, 4.2], [0, 110, 2.9], [0, 0, 1]])
        # COLMAP's own projection agrees with K [R | t] in the same pixel convention.
        x_world = np.array([0.3, -0.2, 0.1])
        x_cam = frame.extrinsic @ np.append(x_world, 1.0)
        uv = frame.intrinsic @ x_cam
        np.testing.assert_allclose(uv[:2] / uv[2], camera.img_from_cam(x_cam[None], False)[0], atol=1e-9)


def test_colmap_scales_intrinsic_to_downscaled_images(tmp_path):
    make_colmap(tmp_path)
    for p in (tmp_path / "images").iterdir():
        write_png(tmp_path / "images_2" / p.name, h=3, w=4)
    frame = ColmapSequence(tmp_path / "sparse" / "0", images=tmp_path / "images_2")[0]
    np.testing.assert_allclose(frame.intrinsic, [[50, 0, 2.1], [0, 55, 1.45], [0, 0, 1]])


def test_colmap_distortion_warns_and_fisheye_is_rejected(tmp_path):
    # f = 10 px: the corners sit at normalised radius 0.5, so k shifts them by k * 0.25 * 5 px.
    make_colmap(tmp_path / "mild", model="SIMPLE_RADIAL", params=(10.0, 4.0, 3.0, 0.01))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ColmapSequence(tmp_path / "mild")
    make_colmap(tmp_path / "radial", model="SIMPLE_RADIAL", params=(10.0, 4.0, 3.0, 2.0))
    with pytest.warns(UserWarning, match=r"SIMPLE_RADIAL.* 2\.5 px"):
        ColmapSequence(tmp_path / "radial")
    make_colmap(tmp_path / "fisheye", model="OPENCV_FISHEYE", params=(100.0, 100.0, 4.0, 3.0, 0, 0, 0, 0))
    with pytest.raises(ValueError, match="OPENCV_FISHEYE"):
        ColmapSequence(tmp_path / "fisheye")


# --- NeRF transforms.json ----------------------------------------------------------------------


def look_at_gl(position, rotation) -> list:
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rotation, position
    return c2w.tolist()


def test_nerf_opengl_poses_project_like_opencv(tmp_path):
    w, h, angle = 8, 6, 2 * math.atan(0.5)  # tan(angle / 2) = 0.5 -> f = w / 2 / 0.5 = 8
    write_png(tmp_path / "train" / "r_0.png", h, w)
    write_png(tmp_path / "train" / "r_1.png", h, w)
    depth = np.full((h, w), 2500, np.uint16)
    assert cv2.imwrite(str(tmp_path / "train" / "d_0.png"), depth)
    turn = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])  # +90 deg about y: camera backward axis = world +x
    meta = {"camera_angle_x": angle, "frames": [
        {"file_path": "./train/r_0", "transform_matrix": look_at_gl([0, 0, 4], np.eye(3)),
         "depth_file_path": "train/d_0.png"},
        {"file_path": "train/r_1.png", "transform_matrix": look_at_gl([4, 0, 0], turn), "time": 0.5},
    ]}  # fmt: skip
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    assert detect_kind(tmp_path) == "nerf"
    seq = open_sequence(tmp_path)
    assert isinstance(seq, NerfSequence)

    def project(frame, x_world):
        x_cam = frame.extrinsic @ np.append(x_world, 1.0)
        uv = frame.intrinsic @ x_cam
        return uv[:2] / uv[2], x_cam[2]

    f0, f1 = seq[0], seq[1]
    np.testing.assert_allclose(f0.intrinsic, [[8, 0, 4], [0, 8, 3], [0, 0, 1]])
    # Camera 0 at z = 4 looking down -z, y up: a point right of and above the origin lands
    # right of and above the image centre, 4 m in front.
    uv, z = project(f0, [0.5, 0.25, 0.0])
    np.testing.assert_allclose(uv, [4 + 8 * 0.5 / 4, 3 - 8 * 0.25 / 4])
    assert z == pytest.approx(4.0)
    # Camera 1 at x = 4 looking down -x: world -z is to its right.
    uv, z = project(f1, [0.0, 0.0, -1.0])
    np.testing.assert_allclose(uv, [4 + 8 * 1 / 4, 3])
    assert z == pytest.approx(4.0)
    assert f0.depth[0, 0] == pytest.approx(2.5) and f1.depth is None
    assert (f0.timestamp, f1.timestamp) == (0.0, 0.5) and f0.name == "r_0.png"


def test_nerf_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "transforms.json").write_text("{not json")
    with pytest.raises(ValueError, match="transforms.json"):
        NerfSequence(tmp_path)
    (tmp_path / "transforms.json").write_text(json.dumps(
        {"fl_x": 10, "frames": [{"file_path": "missing", "transform_matrix": np.eye(4).tolist()}]}))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="missing"):
        NerfSequence(tmp_path)

