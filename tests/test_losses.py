"""Training targets and losses."""

import math

import torch

from recon.align import pose_encoding_to_extri_intri, quat_to_mat
from recon.losses import camera_loss, confidence_loss, make_targets, pose_encoding_error


def _scene(B=2, S=3, H=12, W=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, S, 4, generator=g)
    R = quat_to_mat(q)
    t = torch.randn(B, S, 3, 1, generator=g)
    extrinsic = torch.cat((R, t), dim=-1)
    K = torch.tensor([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]]).expand(B, S, 3, 3)
    depth = 1 + torch.rand(B, S, H, W, generator=g) * 3
    valid = torch.rand(B, S, H, W, generator=g) > 0.1
    return extrinsic, K, depth, valid


def test_targets_put_first_camera_at_origin_and_are_scale_invariant():
    E, K, D, V = _scene()
    a = make_targets(E, K, D, V)
    first_R, first_t = pose_encoding_to_extri_intri(a.pose_enc[:, 0], (12, 16))[0].split([3, 1], dim=-1)
    assert torch.allclose(first_R, torch.eye(3).expand_as(first_R), atol=1e-5)
    assert first_t.abs().max() < 1e-5
    # Scaling the world (depth and translations by 2.5) changes only the scale.
    E2 = torch.cat((E[..., :3], E[..., 3:] * 2.5), dim=-1)
    b = make_targets(E2, K, D * 2.5, V)
    assert torch.allclose(a.pose_enc, b.pose_enc, atol=1e-4)
    assert torch.allclose(a.depth, b.depth, atol=1e-5)
    assert torch.allclose(b.scale / a.scale, torch.full_like(a.scale, 2.5), atol=1e-4)
    # The first frame's normalised points have mean distance 1 to the first camera.
    first, fv = a.world_points[:, 0].norm(dim=-1), a.valid[:, 0]
    dist = (first * fv).flatten(1).sum(1) / fv.flatten(1).sum(1)
    assert torch.allclose(dist, torch.ones_like(dist), atol=1e-4)
    # "clip": all frames' points have mean distance 1 (the bidirectional VGGT recipe).
    c = make_targets(E, K, D, V, normaliser="clip")
    dist = (c.world_points.norm(dim=-1) * c.valid).flatten(1).sum(1) / c.valid.flatten(1).sum(1)
    assert torch.allclose(dist, torch.ones_like(dist), atol=1e-4)
    assert not torch.allclose(a.scale, c.scale)


def test_first_frame_targets_do_not_depend_on_later_frames():
    """A causal model fixes its scale at frame 0: the targets of a clip's prefix must equal
    those of the whole clip on the prefix frames, whatever comes later."""
    E, K, D, V = _scene(S=4)
    whole = make_targets(E, K, D, V)
    prefix = make_targets(E[:, :2], K[:, :2], D[:, :2], V[:, :2])
    assert torch.allclose(whole.depth[:, :2], prefix.depth, atol=1e-6)
    assert torch.allclose(whole.pose_enc[:, :2], prefix.pose_enc, atol=1e-5)
    clip_whole = make_targets(E, K, D, V, normaliser="clip")
    clip_prefix = make_targets(E[:, :2], K[:, :2], D[:, :2], V[:, :2], normaliser="clip")
    assert not torch.allclose(clip_whole.depth[:, :2], clip_prefix.depth, atol=1e-3)


def test_first_frame_without_valid_pixels_falls_back_to_the_clip_scale():
    E, K, D, V = _scene()
    V = V.clone()
    V[0, 0] = False
    a = make_targets(E, K, D, V)
    c = make_targets(E, K, D, V, normaliser="clip")
    assert torch.isfinite(a.depth).all() and a.scale[0] == c.scale[0]


def test_confidence_loss_is_minimal_at_truth_and_penalises_errors():
    _, _, D, V = _scene()
    target = D[..., None]
    conf = torch.ones_like(D)
    assert confidence_loss(target, conf, target, V).abs() < 1e-6
    worse = confidence_loss(target + 0.1, conf, target, V)
    assert math.isclose(worse.item(), 0.1, rel_tol=1e-4)  # gradient term is 0 for a constant offset
    # Confidence trades off: at error e the optimum conf is alpha / e.
    e, alpha = 0.1, 0.2
    losses = {c: confidence_loss(target + e, torch.full_like(D, c), target, V, alpha).item() for c in (1.0, 2.0, 4.0)}
    assert losses[2.0] < losses[1.0] and losses[2.0] < losses[4.0]


def test_camera_loss_weights_later_iterations_more():
    target = torch.zeros(1, 2, 9)
    early_bad = [torch.ones(1, 2, 9), torch.zeros(1, 2, 9)]
    late_bad = [torch.zeros(1, 2, 9), torch.ones(1, 2, 9)]
    assert camera_loss(early_bad, target) < camera_loss(late_bad, target)
    assert camera_loss([target, target], target) == 0


def test_gradient_term_covers_several_scales():
    # An error growing linearly along W (slope a) differs by a, 2a and 4a between neighbours
    # at strides 1, 2 and 4: the gradient term is their mean; it is 0 along H.
    a = 0.01
    target = torch.ones(1, 1, 16, 32, 1)
    ramp = a * torch.arange(32.0).view(1, 1, 1, 32, 1)
    valid = torch.ones(1, 1, 16, 32, dtype=torch.bool)
    conf = torch.ones(1, 1, 16, 32)
    plain = ramp.abs().mean().item()  # the regression term (alpha * log 1 = 0)
    total = confidence_loss(target + ramp, conf, target, valid).item()
    assert math.isclose(total - plain, a * (1 + 2 + 4) / 3, rel_tol=1e-4)
    one = confidence_loss(target + ramp, conf, target, valid, grad_scales=1).item()
    assert math.isclose(one - plain, a, rel_tol=1e-4)


def test_pose_encoding_error_weights_its_terms():
    target = torch.zeros(2, 9)
    pred = target.clone()
    pred[0, 0] = 3.0  # translation: mean over 3 components
    pred[1, 7:] = 2.0  # field of view: weight 0.5
    assert torch.allclose(pose_encoding_error(pred, target), torch.tensor([1.0, 1.0]))
    far = target.clone()
    far[0, :3] = 1e4  # translation errors are clamped at 100 per component
    assert pose_encoding_error(far, target)[0].item() == 100.0


def test_camera_loss_keeps_pulling_on_small_rotation_errors():
    # L1: the gradient on a quaternion component does not fade as its error shrinks (a
    # Huber loss's would, ~0.009 for a 1 degree rotation).
    target = torch.zeros(1, 1, 9)
    grads = []
    for e in (0.5, 0.005):
        pred = target.clone()
        pred[..., 3] = e
        pred.requires_grad_(True)
        camera_loss([pred], target).backward()
        grads.append(pred.grad[..., 3].item())
    assert grads[0] == grads[1] > 0


def test_pose_encoding_error_ignores_the_quaternion_sign():
    # Rotations of 179 and 181 degrees about z are 2 degrees apart; with w >= 0 their
    # quaternions are ~(0, 0, +-1, 0.009): far apart component-wise, close up to sign.
    from recon.align.rotation import mat_to_quat

    def about_z(deg):
        a = math.radians(deg)
        return torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])

    q179, q181 = mat_to_quat(about_z(179.0)), mat_to_quat(about_z(181.0))
    assert (q179 - q181).abs().max() > 1.9  # the sign flipped
    pred, target = torch.zeros(9), torch.zeros(9)
    pred[3:7], target[3:7] = q179, q181
    assert pose_encoding_error(pred, target).item() < 0.01
    pred[3:7] = -q181
    assert pose_encoding_error(pred, target).item() < 1e-6
