"""The 9-d camera pose encoding of the VGGT family and its inverse.

Conventions (used everywhere in streamrecon):
  * extrinsic [..., 3, 4] = [R | t] maps world to camera (OpenCV: x right, y down,
    z forward): x_cam = R @ x_world + t. The world frame is the first camera's frame.
  * intrinsic [..., 3, 3] in pixels of the model input, principal point at the image
    centre (W/2, H/2), continuous pixel coordinates with (0, 0) at the top-left corner.
  * pose encoding [..., 9] = (t[3], q[4] scalar-last, fov_h, fov_w), fov in radians.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .rotation import mat_to_quat, quat_to_mat


def pose_encoding_to_extri_intri(pose_enc: Tensor, image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """[..., 9] -> (extrinsic [..., 3, 4], intrinsic [..., 3, 3])."""
    H, W = image_hw
    t, q, fov_h, fov_w = pose_enc[..., :3], pose_enc[..., 3:7], pose_enc[..., 7], pose_enc[..., 8]
    extrinsic = torch.cat((quat_to_mat(q), t[..., None]), dim=-1)
    intrinsic = torch.zeros(pose_enc.shape[:-1] + (3, 3), dtype=pose_enc.dtype, device=pose_enc.device)
    intrinsic[..., 0, 0] = (W / 2.0) / torch.tan(fov_w / 2.0)
    intrinsic[..., 1, 1] = (H / 2.0) / torch.tan(fov_h / 2.0)
    intrinsic[..., 0, 2] = W / 2.0
    intrinsic[..., 1, 2] = H / 2.0
    intrinsic[..., 2, 2] = 1.0
    return extrinsic, intrinsic


def extri_intri_to_pose_encoding(extrinsic: Tensor, intrinsic: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """(extrinsic [..., 3, 4], intrinsic [..., 3, 3]) -> [..., 9]."""
    H, W = image_hw
    fov_h = 2 * torch.atan((H / 2.0) / intrinsic[..., 1, 1])
    fov_w = 2 * torch.atan((W / 2.0) / intrinsic[..., 0, 0])
    q = mat_to_quat(extrinsic[..., :3, :3])
    return torch.cat((extrinsic[..., :3, 3], q, fov_h[..., None], fov_w[..., None]), dim=-1)
