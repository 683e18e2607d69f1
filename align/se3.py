"""Rigid-body helpers on [..., 3, 4] / [..., 4, 4] camera matrices and point maps."""

from __future__ import annotations

import torch
from torch import Tensor


def to_homogeneous(extrinsic: Tensor) -> Tensor:
    """[..., 3, 4] -> [..., 4, 4]."""
    bottom = torch.zeros(extrinsic.shape[:-2] + (1, 4), dtype=extrinsic.dtype, device=extrinsic.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat((extrinsic[..., :3, :4], bottom), dim=-2)


def invert_extrinsic(extrinsic: Tensor) -> Tensor:
    """camera-from-world [..., 3, 4] -> world-from-camera [..., 3, 4] (and vice versa)."""
    R, t = extrinsic[..., :3, :3], extrinsic[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    return torch.cat((Rt, -Rt @ t), dim=-1)


def camera_centers(extrinsic: Tensor) -> Tensor:
    """Camera centres in world coordinates, [..., 3]."""
    return invert_extrinsic(extrinsic)[..., :3, 3]


def unproject_depth(depth: Tensor, extrinsic: Tensor, intrinsic: Tensor) -> Tensor:
    """Depth [..., H, W] with cameras [..., 3, 4] / [..., 3, 3] -> world points [..., H, W, 3].

    Pixel (i, j) is sampled at its centre (j + 0.5, i + 0.5) in continuous coordinates.
    """
    H, W = depth.shape[-2:]
    v, u = torch.meshgrid(
        torch.arange(H, dtype=depth.dtype, device=depth.device) + 0.5,
        torch.arange(W, dtype=depth.dtype, device=depth.device) + 0.5,
        indexing="ij",
    )
    fx, fy = intrinsic[..., 0, 0, None, None], intrinsic[..., 1, 1, None, None]
    cx, cy = intrinsic[..., 0, 2, None, None], intrinsic[..., 1, 2, None, None]
    cam = torch.stack(((u - cx) / fx * depth, (v - cy) / fy * depth, depth), dim=-1)
    world_from_cam = invert_extrinsic(extrinsic)
    R, t = world_from_cam[..., None, None, :3, :3], world_from_cam[..., None, None, :3, 3]
    return (R @ cam[..., None]).squeeze(-1) + t
