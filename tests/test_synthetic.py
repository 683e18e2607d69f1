"""Procedural synthetic scenes: determinism, outputs, geometry conventions, free-space cameras."""

import math

import numpy as np
import pytest
import torch

from recon.align.se3 import unproject_depth
from recon.datasets import Sequence
from recon.datasets.synthetic import (
    FAMILIES,
    MIN_CLEARANCE,
    TRAJECTORIES,
    ClipSpec,
    SyntheticSequence,
    make_clip_spec,
    render_batch,
    render_clip,
    render_specs,
)
from recon.datasets.synthetic.layout import environment
from recon.datasets.synthetic.random import RandomStream
from recon.datasets.synthetic.scene import CameraSpace, SceneBuilder

H, W = 32, 48


def _corner_cosine(intrinsic: torch.Tensor, height: int, width: int) -> float:
    """cos of the angle between the optical axis and the ray through the outermost pixel centre."""
    x = (width / 2 - 0.5) / float(intrinsic[0, 0])
    y = (height / 2 - 0.5) / float(intrinsic[1, 1])
    return 1.0 / math.sqrt(1.0 + x * x + y * y)


def _reprojection_agreement(clip: dict, i: int, j: int) -> tuple[float, float]:
    """Unproject frame i's depth to the world, project into frame j and compare the point's z with
    frame j's depth there. Frame j's inverse depth is interpolated bilinearly between pixel centres
    (exact on planes, where 1/z is affine in the image); points whose four neighbours are not all
    valid are skipped. Returns (fraction of frame i's valid pixels landing inside frame j, fraction
    of the compared points within 0.5 % of z)."""
    depth, K, E = clip["depth"].double(), clip["intrinsic"].double(), clip["extrinsic"].double()
    height, width = depth.shape[-2:]
    world = unproject_depth(depth[i], E[i], K[i])[clip["valid"][i]]
    cam = world @ E[j, :, :3].T + E[j, :, 3]
    z = cam[:, 2]
    u = cam[:, 0] / z * K[j, 0, 0] + K[j, 0, 2] - 0.5  # in units of pixel centres
    v = cam[:, 1] / z * K[j, 1, 1] + K[j, 1, 2] - 0.5
    u0, v0 = torch.floor(u).long(), torch.floor(v).long()
    inside = (z > 0) & (u0 >= 0) & (u0 < width - 1) & (v0 >= 0) & (v0 < height - 1)
    u, v, u0, v0, z = u[inside], v[inside], u0[inside], v0[inside], z[inside]
    fu, fv = u - u0, v - v0
    inv = torch.where(clip["valid"][j], 1.0 / depth[j].clamp_min(1e-9), torch.nan)
    inv_z = (inv[v0, u0] * (1 - fu) * (1 - fv) + inv[v0, u0 + 1] * fu * (1 - fv)
             + inv[v0 + 1, u0] * (1 - fu) * fv + inv[v0 + 1, u0 + 1] * fu * fv)  # fmt: skip
    compared = torch.isfinite(inv_z)
    error = (1.0 / inv_z[compared] - z[compared]).abs() / z[compared]
    return inside.double().mean().item(), (error < 5e-3).double().mean().item()


def test_same_seed_gives_identical_tensors_and_different_seeds_differ():
    a = render_clip(5, 3, H, W)
    b = render_clip(5, 3, H, W)
    assert a.keys() == b.keys() == {"images", "depth", "valid", "intrinsic", "extrinsic"}
    for key in a:
        assert torch.equal(a[key], b[key]), key
    c = render_clip(6, 3, H, W, family=make_clip_spec(5, 3).family)
    assert not torch.equal(a["images"], c["images"])
    assert not torch.equal(a["extrinsic"], c["extrinsic"])


def test_shorter_clip_is_a_prefix_of_a_longer_one():
    short, long = render_clip(9, 3, H, W), render_clip(9, 7, H, W)
    assert torch.equal(short["extrinsic"], long["extrinsic"][:3])
    assert torch.allclose(short["images"], long["images"][:3], atol=1e-5)
    assert torch.allclose(short["depth"], long["depth"][:3], atol=1e-5)


def test_shapes_dtypes_ranges_and_intrinsics():
    S = 4
    clip = render_clip(2, S, H, W)
    assert clip["images"].shape == (S, 3, H, W) and clip["images"].dtype == torch.float32
    assert clip["depth"].shape == (S, H, W) and clip["depth"].dtype == torch.float32
    assert clip["valid"].shape == (S, H, W) and clip["valid"].dtype == torch.bool
    assert clip["intrinsic"].shape == (S, 3, 3) and clip["extrinsic"].shape == (S, 3, 4)
    assert clip["images"].min() >= 0 and clip["images"].max() <= 1
    assert torch.all(clip["depth"][~clip["valid"]] == 0) and torch.all(clip["depth"][clip["valid"]] > 0)
    K = clip["intrinsic"]
    assert torch.allclose(K[:, 0, 0], K[:, 1, 1]) and torch.all(K[:, 0, 1] == 0)
    assert torch.all(K[:, 0, 2] == W / 2) and torch.all(K[:, 1, 2] == H / 2)
    fov = 2 * torch.rad2deg(torch.atan(W / 2 / K[:, 0, 0]))
    assert torch.all((fov >= 40 - 1e-3) & (fov <= 100 + 1e-3))
    R = clip["extrinsic"][:, :, :3].double()
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(S, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(S, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_and_trajectory_renders_textured_valid_frames(family):
    for k, trajectory in enumerate(TRAJECTORIES):
        clip = render_clip(100 + k, 3, 24, 32, family=family, trajectory=trajectory)
        valid = clip["valid"].double().mean(dim=(1, 2))
        assert valid.min() > (0.25 if family == "outdoor" else 0.5), (family, trajectory, valid)
        spread = clip["images"].std(dim=(1, 2, 3))
        assert spread.min() > 0.03, (family, trajectory, spread)


@pytest.mark.parametrize("family", FAMILIES)
def test_depth_and_poses_are_geometrically_consistent(family):
    for seed, trajectory in ((1, "handheld"), (2, "orbit")):
        clip = render_clip(seed, 3, 48, 64, family=family, trajectory=trajectory)
        for j in (1, 2):
            overlap, agreement = _reprojection_agreement(clip, 0, j)
            assert overlap > 0.5, (family, trajectory, j, overlap)
            assert agreement > 0.8, (family, trajectory, j, agreement)


@pytest.mark.parametrize("family", FAMILIES)
def test_hit_points_lie_on_scene_surfaces(family):
    spec = make_clip_spec(3, 2, family)
    clip = render_specs([spec], H, W)
    depth, valid = clip["depth"][0].double(), clip["valid"][0]
    world = unproject_depth(depth, clip["extrinsic"][0].double(), clip["intrinsic"][0].double())[valid]
    assert valid.double().mean() > 0.25
    distance = np.abs(spec.scene.distance(world.numpy()))
    assert np.mean(distance < 1e-4 + 1e-5 * depth[valid].numpy()) > 0.99


def _single_camera_clip(builder: SceneBuilder, world_from_cam: np.ndarray, fov: float) -> ClipSpec:
    space = CameraSpace(np.zeros(3), np.ones(3), 0.1, 1.0, (-10.0, 10.0), np.zeros((1, 3)), np.zeros(3),
                        (1.0, 2.0), np.zeros(3))  # fmt: skip
    scene = builder.build(environment(builder.rs, outdoor=True), space)
    return ClipSpec(0, "room", "handheld", scene, fov, world_from_cam[None])


def test_plane_depth_is_analytic_z_depth():
    """A wall x = 5 seen by a camera at the origin turned by 0.5 rad about z: the z-depth of pixel
    centre (u + 0.5, v + 0.5) is 5 / (cos a + x_c sin a), x_c = (u + 0.5 - cx) / fx."""
    builder = SceneBuilder("room", RandomStream(0, "test"))
    builder.plane([-1.0, 0.0, 0.0], -5.0, 1.0)
    a = 0.5
    pose = np.eye(4)
    pose[:3, :3] = np.array([[math.sin(a), 0.0, math.cos(a)], [-math.cos(a), 0.0, math.sin(a)], [0.0, -1.0, 0.0]])
    spec = _single_camera_clip(builder, pose, fov=60.0)
    clip = render_specs([spec], H, W)
    K = spec.intrinsic(H, W)
    x_c = (np.arange(W) + 0.5 - K[0, 2]) / K[0, 0]
    expected = np.broadcast_to(5.0 / (math.cos(a) + x_c * math.sin(a)), (H, W))
    assert clip["valid"][0, 0].all()
    np.testing.assert_allclose(clip["depth"][0, 0].numpy(), expected, rtol=1e-5)


def test_sphere_depth_matches_an_independent_ray_cast():
    builder = SceneBuilder("room", RandomStream(0, "test"))
    builder.sphere([0.3, -0.2, 4.0], 1.5)
    spec = _single_camera_clip(builder, np.eye(4), fov=70.0)  # camera axes = world axes
    clip = render_specs([spec], H, W)
    K = spec.intrinsic(H, W)
    v, u = np.mgrid[0:H, 0:W] + 0.5
    d = np.stack(((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((H, W))), axis=-1)
    oc = -np.array([0.3, -0.2, 4.0])
    a, b, c = (d * d).sum(-1), (d * oc).sum(-1), oc @ oc - 1.5**2
    disc = b * b - a * c
    expected_valid = disc > 0
    expected = np.where(expected_valid, (-b - np.sqrt(np.maximum(disc, 0))) / a, 0.0)
    valid = clip["valid"][0, 0].numpy()
    assert np.mean(valid == expected_valid) > 0.99 and 0.2 < valid.mean() < 0.9
    both = valid & expected_valid
    np.testing.assert_allclose(clip["depth"][0, 0].numpy()[both], expected[both], rtol=1e-4)


def test_cameras_keep_their_clearance_from_every_surface():
    for family in FAMILIES:
        for trajectory in TRAJECTORIES:
            for seed in range(4):
                spec = make_clip_spec(seed, 48, family, trajectory)
                space = spec.scene.space
                assert space.clearance >= MIN_CLEARANCE
                distance = spec.scene.distance(spec.world_from_cam[:, :3, 3])
                assert distance.min() >= space.clearance - 1e-9, (family, trajectory, seed, distance.min())
    clip = render_batch(list(range(4)), 3, H, W, families=list(FAMILIES), trajectories="fast")
    for b in range(4):
        floor = MIN_CLEARANCE * _corner_cosine(clip["intrinsic"][b, 0], H, W)
        assert clip["depth"][b][clip["valid"][b]].min() >= floor


def test_render_batch_matches_single_clips():
    seeds, families = [11, 12, 13], ["outdoor", "room", "tabletop"]
    batch = render_batch(seeds, 3, H, W, families=families)
    assert batch["images"].shape == (3, 3, 3, H, W)
    for b, (seed, family) in enumerate(zip(seeds, families)):
        single = render_clip(seed, 3, H, W, family=family)
        assert torch.equal(batch["extrinsic"][b], single["extrinsic"])
        assert torch.allclose(batch["depth"][b], single["depth"], rtol=1e-5, atol=1e-5)
        assert torch.allclose(batch["images"][b], single["images"], atol=1e-4)


def test_synthetic_sequence_yields_frames():
    seq = SyntheticSequence(4, 3, height=H, width=W, family="corridor", trajectory="forward")
    assert isinstance(seq, Sequence) and len(seq) == 3 and seq.has_ground_truth()
    assert "corridor" in seq.name and "forward" in seq.name
    clip = render_clip(4, 3, H, W, family="corridor", trajectory="forward")
    for i, frame in enumerate(seq):
        assert frame.index == i and frame.timestamp == pytest.approx(i / 30.0)
        assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
        assert frame.depth.dtype == np.float32 and frame.depth.shape == (H, W)
        assert frame.intrinsic.dtype == np.float64 and frame.extrinsic.dtype == np.float64
        expected = (clip["images"][i].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        np.testing.assert_array_equal(frame.image, expected)
        np.testing.assert_allclose(frame.extrinsic, clip["extrinsic"][i].numpy(), atol=1e-5)
        np.testing.assert_allclose(frame.intrinsic, clip["intrinsic"][i].numpy(), rtol=1e-6)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="'kitchen'"):
        render_clip(0, 2, H, W, family="kitchen")
    with pytest.raises(ValueError, match="'spiral'"):
        render_clip(0, 2, H, W, trajectory="spiral")
    with pytest.raises(ValueError, match="num_frames"):
        render_clip(0, 0, H, W)
    with pytest.raises(ValueError, match="0x48"):
        render_clip(0, 2, 0, W)


def test_rendering_in_chunks_of_rows_and_frames_changes_nothing(monkeypatch):
    import recon.datasets.synthetic.render as render

    specs = [make_clip_spec(seed, 3, family) for seed, family in ((21, "room"), (22, "outdoor"))]
    whole = render_specs(specs, H, W)
    monkeypatch.setitem(render._MAX_ELEMENTS, "cpu", 2 * W * 40 * 5)  # a few rows of one frame per chunk
    chunked = render_specs(specs, H, W)
    for key in whole:
        assert torch.allclose(whole[key].float(), chunked[key].float(), atol=1e-6), key
