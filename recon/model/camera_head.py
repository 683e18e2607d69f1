"""Camera head: iterative refinement of a 9-d pose encoding from each frame's camera token.

Input  the last aggregator level [B, S, P, 2C]; token 0 of each frame is its camera token.
Output a list (one per iteration) of pose encodings [B, S, 9] = (t, q, fov) with
       t: camera-from-world translation, q: rotation quaternion (x, y, z, w),
       fov: (vertical, horizontal) field of view in radians (see recon.align.pose_encoding).

The trunk attends across frames (causally when streaming), with adaLN modulation by the
current estimate. Cache layouts for streaming:
  "per_iteration": one cache slot per (iteration, layer); iteration i of frame t sees
                   iteration i of frames <= t, exactly what the causal batch forward does.
  "shared":        one slot per layer, appended at every iteration (StreamVGGT's released
                   streaming inference); later iterations also see earlier iterations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.attention import StreamState

from .blocks import Block, Mlp

POSE_ENC_DIM = 9
CACHE_LAYOUTS = ("per_iteration", "shared")


class CameraHead(nn.Module):
    def __init__(
        self,
        dim_in: int,
        trunk_depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        init_values: float = 0.01,
        num_iterations: int = 4,
        cache_layout: str = "per_iteration",
    ) -> None:
        super().__init__()
        if cache_layout not in CACHE_LAYOUTS:
            raise ValueError(f"cache_layout must be one of {CACHE_LAYOUTS}, got {cache_layout!r}")
        self.trunk_depth = trunk_depth
        self.num_iterations = num_iterations
        self.cache_layout = cache_layout
        self.trunk = nn.Sequential(
            *[Block(dim_in, num_heads, mlp_ratio, init_values=init_values) for _ in range(trunk_depth)]
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENC_DIM))
        self.embed_pose = nn.Linear(POSE_ENC_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENC_DIM)

    @property
    def num_cache_slots(self) -> int:
        return self.trunk_depth * (self.num_iterations if self.cache_layout == "per_iteration" else 1)

    def forward(self, last_level: Tensor, state: StreamState | None = None, causal: bool = True) -> list[Tensor]:
        tokens = self.token_norm(last_level[:, :, 0])  # [B, S, 2C]
        B, S, _ = tokens.shape
        if state is not None and self.cache_layout == "shared" and S != 1:
            raise ValueError("the 'shared' camera cache layout streams one frame per step")
        mask = None
        if causal and S > 1:
            mask = torch.ones(S, S, dtype=torch.bool, device=tokens.device).tril()

        pose_enc, outputs = None, []
        for it in range(self.num_iterations):
            pose_in = self.empty_pose_tokens.expand(B, S, -1) if pose_enc is None else pose_enc.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(pose_in)).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            for j, block in enumerate(self.trunk):
                kv = None
                if state is not None:
                    slot = it * self.trunk_depth + j if self.cache_layout == "per_iteration" else j
                    kv = state.camera.layer(slot)
                x = block(x, attn_mask=mask, kv=kv)
            delta = self.pose_branch(self.trunk_norm(x))
            pose_enc = delta if pose_enc is None else pose_enc + delta
            outputs.append(activate_pose(pose_enc))
        return outputs


def activate_pose(pose_enc: Tensor) -> Tensor:
    """Translation and quaternion are linear; the field of view goes through ReLU."""
    return torch.cat((pose_enc[..., :7], F.relu(pose_enc[..., 7:])), dim=-1)
