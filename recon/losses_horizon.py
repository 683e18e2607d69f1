"""Training targets and losses for the "horizon" architecture (window poses + metric scale).

Shapes: B clips, S frames, H x W pixels, Wmax window slots per frame.
  batch:  extrinsic [B, S, 3, 4] camera-from-world (metres), intrinsic [B, S, 3, 3],
          depth [B, S, H, W] (metres), valid [B, S, H, W] bool.
  model:  window_pose_enc_list (one [B, S, Wmax, 9] per refinement iteration, raw),
          window_valid [S, Wmax], depth / depth_conf [B, S, H, W] (metric), metric_scale [B, S].

The model predicts everything of frame t in raw units and one positive scale s_t (metres
per raw unit) that the forward multiplies in: depth_t = raw_depth_t * s_t, and the window
translations of row t = raw_t * s_t. So each raw quantity is compared with its target
divided by the frame's normalisation scale n_t, and s_t with n_t:

  window poses  row t, slot j (frame f = t - L_t + 1 + j, current frame last): the pose of
                camera f relative to camera t, E_f E_t^-1 ("camera-from-current"), with
                camera f's field of view; translation / n_t. `pose_encoding_error` (L1) of
                every active slot, averaged over iterations weighted gamma^(n-1-i).
  depth         aleatoric confidence loss (`confidence_loss`) of depth_t / s_t (the raw
                depth) against depth_t / n_t.
  scale         |log s_t - log n_t| over frames with valid depth.

n_t ("frame" normaliser, the default) is the mean distance of frame t's valid points to
camera t: causal and local, so a frame's scale is knowable from the window it sees, on an
endless stream as in a clip. "clip" uses the VGGT recipe's one scale per clip instead (the
mean distance of all valid points to the first camera, `make_targets`): it depends on
future frames and on the first camera, which a streaming model cannot see. Either way the
camera and depth terms are scale-free (scaling the world changes only n_t).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon.align import extri_intri_to_pose_encoding, unproject_depth

from .losses import confidence_loss, make_targets, pose_encoding_error

NORMALISERS = ("frame", "clip")


@dataclass
class HorizonTargets:
    window_pose_enc: Tensor  # [B, S, Wmax, 9] translations / scale of the row's frame
    window_valid: Tensor  # [S, Wmax] active slots
    depth: Tensor  # [B, S, H, W] depth / scale of the frame (0 where invalid)
    valid: Tensor  # [B, S, H, W]
    scale: Tensor  # [B, S] normalisation scale n_t of each frame, metres
    frame_valid: Tensor  # [B, S] frames with at least one valid pixel


def window_slot_frames(window_valid: Tensor) -> Tensor:
    """[S, Wmax] active slots -> [S, Wmax] frame index of each slot (row t, L active slots:
    slot j <-> frame t - L + 1 + j; inactive slots -> the row's own frame)."""
    S, Wm = window_valid.shape
    lengths = window_valid.sum(dim=1, keepdim=True)
    t = torch.arange(S, device=window_valid.device)[:, None]
    frames = t - lengths + 1 + torch.arange(Wm, device=window_valid.device)[None]
    return torch.where(window_valid, frames, t.expand(S, Wm))


def window_pose_targets(
    extrinsic: Tensor, intrinsic: Tensor, window_valid: Tensor, image_hw: tuple[int, int]
) -> Tensor:
    """Ground-truth window poses in the model's convention: [B, S, Wmax, 9], row t slot j =
    encoding of E_f E_t^-1 (f the slot's frame) with camera f's field of view; translations in
    the units of `extrinsic`. Inactive slots hold the identity pose."""
    frames = window_slot_frames(window_valid)  # [S, Wm]
    R, t = extrinsic[..., :3, :3], extrinsic[..., :3, 3:]
    R_f, t_f = R[:, frames], t[:, frames]  # [B, S, Wm, 3, 3 | 1]
    R_t, t_t = R[:, :, None], t[:, :, None]  # [B, S, 1, 3, 3 | 1]
    R_rel = R_f @ R_t.transpose(-1, -2)
    rel = torch.cat((R_rel, t_f - R_rel @ t_t), dim=-1)
    return extri_intri_to_pose_encoding(rel, intrinsic[:, frames], image_hw)


def frame_scales(intrinsic: Tensor, depth: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Mean distance of each frame's valid points to its own camera -> ([B, S], frame has
    valid points [B, S]); frames without valid points get their clip's mean (1 if none)."""
    B, S = depth.shape[:2]
    eye = torch.eye(3, 4, dtype=depth.dtype, device=depth.device).expand(B, S, 3, 4)
    dist = unproject_depth(torch.where(valid, depth, torch.zeros_like(depth)), eye, intrinsic).norm(dim=-1)
    count = valid.flatten(2).sum(2)
    total = (dist * valid).flatten(2).sum(2)
    clip = (total.sum(1) / count.sum(1).clamp(min=1)).where(count.sum(1) > 0, torch.ones_like(total[:, 0]))
    return torch.where(count > 0, total / count.clamp(min=1), clip[:, None]), count > 0


def horizon_targets(
    extrinsic: Tensor, intrinsic: Tensor, depth: Tensor, valid: Tensor, window_valid: Tensor, normaliser: str = "frame"
) -> HorizonTargets:
    if normaliser not in NORMALISERS:
        raise ValueError(f"unknown normaliser {normaliser!r}; choose from {', '.join(NORMALISERS)}")
    valid = valid & (depth > 0) & torch.isfinite(depth)
    scale, frame_valid = frame_scales(intrinsic, depth, valid)
    if normaliser == "clip":
        scale = make_targets(extrinsic, intrinsic, depth, valid, "clip").scale[:, None].expand_as(scale)
    window = window_pose_targets(extrinsic, intrinsic, window_valid, depth.shape[-2:])
    window = torch.cat((window[..., :3] / scale[..., None, None], window[..., 3:]), dim=-1)
    depth_n = torch.where(valid, depth / scale[..., None, None], torch.zeros_like(depth))
    return HorizonTargets(window, window_valid, depth_n, valid, scale, frame_valid)


def window_camera_loss(enc_list: list[Tensor], target: Tensor, window_valid: Tensor, gamma: float = 0.6) -> Tensor:
    """`pose_encoding_error` of the window pose encodings [B, S, Wmax, 9] over the active slots,
    averaged over refinement iterations with later iterations weighted more (as `camera_loss`)."""
    n = len(enc_list)
    mask = window_valid.to(target.dtype).expand(target.shape[:-1])
    total = target.new_zeros(())
    for i, pred in enumerate(enc_list):
        err = pose_encoding_error(pred, target)
        total = total + gamma ** (n - 1 - i) * (err * mask).sum() / mask.sum().clamp(min=1)
    return total / n


def horizon_loss(out: dict, targets: HorizonTargets, weights: dict[str, float] | None = None) -> dict[str, Tensor]:
    """-> {"camera", "depth", "scale", "total"} (scalars)."""
    w = {"camera": 5.0, "depth": 1.0, "scale": 1.0, **(weights or {})}
    metric = out["metric_scale"].float()  # [B, S]
    raw_depth = out["depth"].float() / metric[..., None, None]
    log_err = (metric.log() - targets.scale.log()).abs()
    fv = targets.frame_valid.to(log_err.dtype)
    terms = {
        "camera": window_camera_loss(out["window_pose_enc_list"], targets.window_pose_enc, targets.window_valid),
        "depth": confidence_loss(raw_depth[..., None], out["depth_conf"], targets.depth[..., None], targets.valid),
        "scale": (log_err * fv).sum() / fv.sum().clamp(min=1),
    }
    terms["total"] = sum(w[k] * v for k, v in terms.items())
    return terms
