"""Horizon training targets and losses: the window-pose convention, scale-free terms, the metric scale."""

import torch

from recon.align import extri_intri_to_pose_encoding, quat_to_mat
from recon.attention import PoseHistory
from recon.losses import training_loss
from recon.losses_horizon import horizon_loss, horizon_targets, window_pose_targets
from recon.model.horizon_layout import WindowLayout
from recon.model.horizon_poses import absolute_from_windows, pose_to_encoding, relative_to_first

H, W = 12, 16


def _scene(B=2, S=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    R = quat_to_mat(torch.randn(B, S, 4, generator=g))
    t = 2 * torch.randn(B, S, 3, 1, generator=g)
    focal = 10 + 20 * torch.rand(B, S, generator=g)
    K = torch.zeros(B, S, 3, 3)
    K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = focal, 1.1 * focal, W / 2, H / 2, 1
    depth = 1 + 3 * torch.rand(B, S, H, W, generator=g)
    valid = torch.rand(B, S, H, W, generator=g) > 0.1
    return torch.cat((R, t), dim=-1), K, depth, valid


def _fuse(window: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
    """The model's own online fusion (graph_finish) of window poses -> absolute encodings."""
    S = window.shape[1]
    w2c = absolute_from_windows(window, list(layout.row_lengths), PoseHistory(window.shape[2]))
    return pose_to_encoding(w2c, window[:, torch.arange(S), layout.lengths - 1, 7:])


def test_window_targets_fuse_back_to_the_true_poses():
    """The target window poses, fed through the model's fusion path, recover the ground-truth
    absolute poses (world = first camera): targets and model share one convention."""
    E, K, _, _ = _scene()
    for window in (3, 9):  # sliding windows (7 frames > 3 + 1) and growing ones only
        layout = WindowLayout.build(0, E.shape[1], window, 0, False)
        targets = window_pose_targets(E, K, layout.valid, (H, W))
        truth = extri_intri_to_pose_encoding(relative_to_first(E, E[:, :1]), K, (H, W))
        assert (_fuse(targets, layout) - truth).abs().max() < 1e-4
    # The test can tell conventions apart: the inverse relative pose (current-from-camera) fails.
    layout = WindowLayout.build(0, E.shape[1], 3, 0, False)
    inverse = torch.cat((E[..., :3].transpose(-1, -2), -E[..., :3].transpose(-1, -2) @ E[..., 3:]), dim=-1)
    wrong = window_pose_targets(inverse, K, layout.valid, (H, W))
    assert (_fuse(wrong, layout) - truth).abs().max() > 0.1


def _perfect(t, enc_noise=0.0, scale_factor=1.0, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    enc = t.window_pose_enc + enc_noise * torch.randn(t.window_pose_enc.shape, generator=g)
    scale = t.scale * scale_factor
    return {"window_pose_enc_list": [enc] * 4, "window_valid": t.window_valid, "metric_scale": scale,
            "depth": t.depth * scale[..., None, None], "depth_conf": torch.ones_like(t.depth)}  # fmt: skip


def test_loss_is_zero_for_perfect_predictions_and_grows_with_errors():
    E, K, D, V = _scene()
    layout = WindowLayout.build(0, E.shape[1], 3, 0, False)
    t = horizon_targets(E, K, D, V, layout.valid)
    perfect = horizon_loss(_perfect(t), t)
    assert perfect["camera"] < 1e-6 and perfect["scale"] < 1e-6 and perfect["depth"].abs() < 1e-6
    noisy = horizon_loss(_perfect(t, enc_noise=0.1), t)
    assert noisy["camera"] > 1e-3 and noisy["scale"] < 1e-6
    # A wrong metric scale is the scale term's alone: raw depth and poses are still right.
    off = horizon_loss(_perfect(t, scale_factor=2.0), t)
    assert abs(off["scale"].item() - torch.log(torch.tensor(2.0)).item()) < 1e-4
    assert off["camera"] < 1e-6 and off["depth"].abs() < 1e-5
    # Inactive slots are not scored.
    junk = _perfect(t)
    inactive = ~t.window_valid[..., None]
    junk["window_pose_enc_list"] = [e.masked_fill(inactive, 5.0) for e in junk["window_pose_enc_list"]]
    assert horizon_loss(junk, t)["camera"] < 1e-6


def test_targets_are_scale_free_and_the_scale_is_metric():
    E, K, D, V = _scene()
    layout = WindowLayout.build(0, E.shape[1], 3, 0, False)
    for normaliser in ("frame", "clip"):
        a = horizon_targets(E, K, D, V, layout.valid, normaliser)
        b = horizon_targets(torch.cat((E[..., :3], 2.5 * E[..., 3:]), dim=-1), K, 2.5 * D, V, layout.valid, normaliser)
        assert torch.allclose(a.window_pose_enc, b.window_pose_enc, atol=1e-4)
        assert torch.allclose(a.depth, b.depth, atol=1e-5)
        assert torch.allclose(b.scale / a.scale, torch.full_like(a.scale, 2.5), atol=1e-4)
    # Frame normaliser: each frame's raw points have mean distance 1 to its camera.
    a = horizon_targets(E, K, D, V, layout.valid)
    mean_depth = (a.depth * a.valid).flatten(2).sum(2) / a.valid.flatten(2).sum(2)
    assert (mean_depth < 1).all() and (mean_depth > 0.8).all()  # depth <= distance, FoV < 90 degrees


def test_training_loss_dispatches_on_the_outputs():
    E, K, D, V = _scene(S=3)
    layout = WindowLayout.build(0, 3, 9, 0, False)
    t = horizon_targets(E, K, D, V, layout.valid)
    batch = {"extrinsic": E, "intrinsic": K, "depth": D, "valid": V}
    assert set(training_loss(_perfect(t), batch)) == {"camera", "depth", "scale", "total"}
