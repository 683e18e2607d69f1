"""Training targets and losses for the geometry transformer (VGGT recipe).

Shapes: B clips, S frames, H x W pixels.
  extrinsic [B, S, 3, 4] camera-from-world, intrinsic [B, S, 3, 3], depth [B, S, H, W],
  valid [B, S, H, W] bool.

Targets are expressed in the first camera's frame and divided by one scale per clip, so the
model learns scale-normalised geometry; predictions are compared to these targets directly.
The scale is the mean distance of the *first frame's* valid points to its camera: a causal
model sees frame 0 alone when it fixes the scale of its stream, so a scale that averaged over
later frames would ask it for what it cannot know (VGGT, which is bidirectional, averages
over the whole clip: `normaliser="clip"`).

`training_loss` picks the loss for the model (horizon models: `recon.losses_horizon`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon.align import extri_intri_to_pose_encoding, unproject_depth
from recon.align.se3 import to_homogeneous


@dataclass
class Targets:
    pose_enc: Tensor  # [B, S, 9]
    depth: Tensor  # [B, S, H, W]
    world_points: Tensor  # [B, S, H, W, 3]
    valid: Tensor  # [B, S, H, W]
    scale: Tensor  # [B] metres per normalised unit


NORMALISERS = ("first", "clip")


def make_targets(extrinsic: Tensor, intrinsic: Tensor, depth: Tensor, valid: Tensor, normaliser: str = "first") -> Targets:
    """normaliser: "first" (mean distance of frame 0's valid points) or "clip" (all frames')."""
    if normaliser not in NORMALISERS:
        raise ValueError(f"unknown normaliser {normaliser!r}; choose from {', '.join(NORMALISERS)}")
    H, W = depth.shape[-2:]
    valid = valid & (depth > 0) & torch.isfinite(depth)
    # Re-express every camera relative to the first: E_i' = E_i @ E_0^-1.
    first_inv = torch.linalg.inv(to_homogeneous(extrinsic[:, :1]))
    rel = (to_homogeneous(extrinsic) @ first_inv)[..., :3, :4]
    points = unproject_depth(depth, rel, intrinsic)  # first-camera frame
    dist = points.norm(dim=-1)
    counted = valid[:, :1] if normaliser == "first" else valid
    count = counted.flatten(1).sum(1)
    scale = (dist[:, : counted.shape[1]] * counted).flatten(1).sum(1) / count.clamp(min=1)
    if normaliser == "first":  # a first frame without valid pixels: fall back to the clip
        whole = (dist * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
        scale = torch.where(count > 0, scale, whole)
    scale = scale.clamp(min=1e-6)  # [B]
    s = scale.view(-1, 1, 1, 1)
    rel = torch.cat((rel[..., :3], rel[..., 3:] / s), dim=-1)
    depth_n = torch.where(valid, depth / s, torch.zeros_like(depth))
    points_n = torch.where(valid[..., None], points / s[..., None], torch.zeros_like(points))
    return Targets(extri_intri_to_pose_encoding(rel, intrinsic, (H, W)), depth_n, points_n, valid, scale)


# VGGT's camera loss weights (translation, rotation, field of view) of the pose encoding
# [T (3) | quaternion (4) | FoV (2)].
POSE_TERM_WEIGHTS = (1.0, 1.0, 0.5)


def pose_encoding_error(pred: Tensor, target: Tensor) -> Tensor:
    """Per-frame L1 error of pose encodings [..., 9] -> [...]: the mean absolute error of the
    translation (each component clamped at 100), of the quaternion (up to its sign) and of the
    field of view, weighted by POSE_TERM_WEIGHTS. L1 rather than Huber: a Huber loss is
    quadratic for the small errors that remain once training is under way (a 1 degree rotation
    is ~0.009 in a quaternion component), so its gradient fades with the error; L1 keeps a
    constant pull (VGGT's training code makes the same choice)."""
    pred = pred.float()
    err = (pred - target).abs()
    # q and -q are the same rotation. The targets keep w >= 0, so a camera that turns past
    # 180 degrees from the first one (most 48-frame "fast" and "rotation" clips) flips its
    # target's sign mid-clip; comparing with the nearer of the two keeps the target continuous.
    rot = torch.minimum(err[..., 3:7].mean(-1), (pred[..., 3:7] + target[..., 3:7]).abs().mean(-1))
    wt, wr, wf = POSE_TERM_WEIGHTS
    return wt * err[..., :3].clamp(max=100).mean(-1) + wr * rot + wf * err[..., 7:].mean(-1)


def camera_loss(pose_enc_list: list[Tensor], target: Tensor, gamma: float = 0.6) -> Tensor:
    """`pose_encoding_error` averaged over frames and over the refinement iterations, later
    iterations weighted more (gamma^(n-1-i))."""
    n = len(pose_enc_list)
    total = target.new_zeros(())
    for i, pred in enumerate(pose_enc_list):
        total = total + gamma ** (n - 1 - i) * pose_encoding_error(pred, target).mean()
    return total / n


def _gradients(x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Finite differences along W and H of x [..., H, W, C] where both pixels are valid."""
    gx = x[..., :, 1:, :] - x[..., :, :-1, :]
    gy = x[..., 1:, :, :] - x[..., :-1, :, :]
    vx = valid[..., :, 1:] & valid[..., :, :-1]
    vy = valid[..., 1:, :] & valid[..., :-1, :]
    return gx, vx, gy, vy


def confidence_loss(pred: Tensor, conf: Tensor, target: Tensor, valid: Tensor, alpha: float = 0.2,
                    grad_scales: int = 3) -> Tensor:  # fmt: skip
    """Aleatoric regression loss: conf * |err| - alpha * log(conf) averaged over valid pixels,
    plus conf * |grad err| averaged over `grad_scales` scales (every pixel, every 2nd, every
    4th, ...: VGGT's multi-scale gradient term, which also sees slopes and steps wider than a
    pixel). pred/target [B, S, H, W, C], conf/valid [B, S, H, W]."""
    pred, conf = pred.float(), conf.float()
    err = (pred - target).norm(dim=-1)
    n = valid.sum().clamp(min=1)
    loss = ((conf * err - alpha * torch.log(conf)) * valid).sum() / n
    diff = pred - target
    grad = loss.new_zeros(())
    for k in range(grad_scales):
        step = 2**k
        d, c, v = diff[..., ::step, ::step, :], conf[..., ::step, ::step], valid[..., ::step, ::step]
        gx, vx, gy, vy = _gradients(d, v)
        grad = grad + (c[..., :, 1:] * gx.norm(dim=-1) * vx).sum() / vx.sum().clamp(min=1)
        grad = grad + (c[..., 1:, :] * gy.norm(dim=-1) * vy).sum() / vy.sum().clamp(min=1)
    return loss + grad / max(1, grad_scales)


def total_loss(out: dict, targets: Targets, weights: dict[str, float] | None = None) -> dict[str, Tensor]:
    w = {"camera": 5.0, "depth": 1.0, "points": 1.0, **(weights or {})}
    terms = {
        "camera": camera_loss(out["pose_enc_list"], targets.pose_enc),
        "depth": confidence_loss(out["depth"][..., None], out["depth_conf"], targets.depth[..., None], targets.valid),
        "points": confidence_loss(out["world_points"], out["world_points_conf"], targets.world_points, targets.valid),
    }
    terms["total"] = sum(w[k] * v for k, v in terms.items())
    return terms


def training_loss(out: dict, batch: dict) -> dict[str, Tensor]:
    """The loss of one training step, for either architecture: the VGGT recipe above
    (`total_loss`), or the horizon loss (window poses, raw depth, metric scale) for models
    that return window poses. batch: extrinsic, intrinsic, depth, valid as in `make_targets`.
    Returns named scalar terms and their weighted sum "total"."""
    args = (batch["extrinsic"], batch["intrinsic"], batch["depth"], batch["valid"])
    if "window_pose_enc_list" in out:
        from .losses_horizon import horizon_loss, horizon_targets  # it builds on this module

        return horizon_loss(out, horizon_targets(*args, out["window_valid"]))
    return total_loss(out, make_targets(*args))
