"""Correspondence supervision of temporal attention: one head per chosen layer learns to look,
from each patch of a frame, at the patch of an earlier frame that sees the same surface point.

Why: session 6 found the camera head predicting how far the camera had turned but not which
way, and the temporal attention of the shipped tiny weights spread almost uniformly over
frames (a patch put 1-3 % of its frame-0 attention on its true correspondence, uniform being
0.4 %). Pose needs correspondence; the synthetic renderer knows it exactly, so it is
supervised directly instead of hoping it emerges from the pose and depth losses.

Shapes: B clips, S frames, H x W pixels, p the patch size, N = (H/p)(W/p) patches a frame,
n frame pairs, P tokens a frame (special tokens first, patches from `patch_start`).
  extrinsic [B, S, 3, 4] camera-from-world, intrinsic [B, S, 3, 3], depth/valid [B, S, H, W]
  q, k      [B, heads, S*P, D]  a temporal attention layer's post-norm, post-RoPE queries/keys

Pairs: each frame j >= 1 against frame 0 (the stream's anchor) and against frame j-1 (the
neighbour a causal model chains from), query frame later than key frame, as the block-causal
attention allows.

Target: the query patch's centre pixel is unprojected with its ground-truth depth, projected
into the key frame, and the four patch centres around the projection get bilinear weights
(sub-patch motion is kept). A query counts when its centre pixel is valid and its point lands
inside the key frame unoccluded (the key frame's depth there agrees within `occlusion_tol`).
Loss: cross-entropy of the head's softmax over the key frame's N patches (its attention
restricted to that frame) against that soft target, averaged over counted queries.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from recon.align.se3 import unproject_depth


def frame_pairs(num_frames: int) -> tuple[list[int], list[int]]:
    """(query frames, key frames): j against 0 and j against j-1 for every j >= 1, no repeats."""
    queries, keys = [], []
    for j in range(1, num_frames):
        for i in sorted({0, j - 1}):
            queries.append(j)
            keys.append(i)
    return queries, keys


def patch_centre_intrinsic(intrinsic, patch: int):
    """Intrinsics [..., 3, 3] (numpy or torch) of the image made of the pixel at each patch's
    centre: its pixel (r, c) is pixel (r p + p // 2, c p + p // 2) of the frame, so
    `unproject_depth` / `camera_points` apply to depth sampled there."""
    K = intrinsic * 1.0  # a float copy
    K[..., :2, :] /= patch
    K[..., :2, 2] += 0.5 - (patch // 2 + 0.5) / patch
    return K


@torch.no_grad()
def patch_correspondences(extrinsic: Tensor, intrinsic: Tensor, depth: Tensor, valid: Tensor, patch: int,
                          queries: list[int], keys: list[int], occlusion_tol: float = 0.05,
                          ) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Soft patch targets for the frame pairs (queries[m] -> keys[m]).
    Returns index [B, n, N, 4] long (patches of the key frame) and weight [B, n, N, 4]
    (bilinear weights summing to 1 for a counted query, all 0 otherwise)."""
    H, W = depth.shape[-2:]
    rows, cols = H // patch, W // patch
    qi = torch.as_tensor(queries, device=depth.device)
    ki = torch.as_tensor(keys, device=depth.device)
    py = torch.arange(rows, device=depth.device) * patch + patch // 2  # the pixel at each patch's centre
    px = torch.arange(cols, device=depth.device) * patch + patch // 2
    d = depth.float()[:, :, py][:, :, :, px]  # [B, S, rows, cols]
    ok = valid[:, :, py][:, :, :, px].flatten(2) & (d.flatten(2) > 0)
    world = unproject_depth(d, extrinsic.float(), patch_centre_intrinsic(intrinsic.float(), patch)).flatten(2, 3)
    E, K = extrinsic.float()[:, ki], intrinsic.float()[:, ki]  # the key frames' cameras [B, n, ...]
    X = world[:, qi] @ E[..., :3].transpose(-1, -2) + E[..., None, :, 3]  # [B, n, N, 3] in the key camera
    z = X[..., 2]
    uk = X[..., 0] / z.clamp(min=1e-6) * K[..., 0, 0, None] + K[..., 0, 2, None]
    vk = X[..., 1] / z.clamp(min=1e-6) * K[..., 1, 1, None] + K[..., 1, 2, None]
    inside = (z > 1e-6) & (uk >= 0) & (uk < W) & (vk >= 0) & (vk < H)
    # Occlusion: the key frame must see this point, not something in front of it.
    ui, vi = uk.floor().long().clamp(0, W - 1), vk.floor().long().clamp(0, H - 1)
    dk = depth.float()[:, ki].flatten(2)
    seen = torch.gather(dk, 2, vi * W + ui)
    seen_ok = torch.gather(valid[:, ki].flatten(2), 2, vi * W + ui)
    counted = ok[:, qi] & inside & seen_ok & ((seen - z).abs() <= occlusion_tol * z)
    # Bilinear weights over the patch centres ((c + 0.5) p, (r + 0.5) p).
    x = (uk / patch - 0.5).clamp(0, cols - 1)
    y = (vk / patch - 0.5).clamp(0, rows - 1)
    x0, y0 = x.floor().clamp(max=max(cols - 2, 0)), y.floor().clamp(max=max(rows - 2, 0))
    fx_, fy_ = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=cols - 1), (y0 + 1).clamp(max=rows - 1)
    index = torch.stack((y0 * cols + x0, y0 * cols + x1, y1 * cols + x0, y1 * cols + x1), dim=-1)
    weight = torch.stack(((1 - fx_) * (1 - fy_), fx_ * (1 - fy_), (1 - fx_) * fy_, fx_ * fy_), dim=-1)
    return index, weight * counted[..., None]


def attention_match_loss(q: Tensor, k: Tensor, index: Tensor, weight: Tensor, queries: list[int],
                         keys: list[int], tokens_per_frame: int, patch_start: int, head: int = 0,
                         ) -> Tensor:  # fmt: skip
    """Cross-entropy of one head's attention from the query frames' patches over the key
    frames' patches against the soft targets of `patch_correspondences` (see module doc)."""
    B, _, T, D = q.shape
    S, P = T // tokens_per_frame, tokens_per_frame
    qh = q[:, head].float().reshape(B, S, P, D)[:, :, patch_start:]
    kh = k[:, head].float().reshape(B, S, P, D)[:, :, patch_start:]
    logits = torch.einsum("bnqd,bnkd->bnqk", qh[:, queries], kh[:, keys]) * D**-0.5
    picked = torch.gather(F.log_softmax(logits, dim=-1), -1, index)  # [B, n, N, 4]
    per_query = -(picked * weight).sum(-1)
    counted = weight.sum(-1) > 0
    return (per_query * counted).sum() / counted.sum().clamp(min=1)


class MatchProbes:
    """Keeps the queries/keys of the temporal attention layers `layers` of a VGGT-family model
    during its forward (training only) and turns them into the correspondence loss."""

    def __init__(self, model: torch.nn.Module, layers: list[int], head: int = 0) -> None:
        blocks = model.aggregator.global_blocks
        bad = [i for i in layers if not 0 <= i < len(blocks)]
        if bad or not 0 <= head < blocks[0].attn.num_heads:
            raise ValueError(f"correspondence layers {layers} / head {head}: the model has {len(blocks)} temporal "
                             f"layers of {blocks[0].attn.num_heads} heads")  # fmt: skip
        self.attns = [blocks[i].attn for i in layers]
        for attn in self.attns:
            attn.keep_qk = True
        self.head = head
        self.patch = model.config.patch_size
        self.patch_start = model.aggregator.patch_start_idx

    def loss(self, batch: dict) -> Tensor:
        """Mean over the probed layers of `attention_match_loss` for this forward's batch."""
        S, H, W = batch["depth"].shape[1:]
        queries, keys = frame_pairs(S)
        kept = [attn.kept_qk for attn in self.attns]
        for attn in self.attns:
            attn.kept_qk = None  # release the graph's tensors with the step
        if not queries:
            return sum(q.sum() * 0 for q, _ in kept)
        index, weight = patch_correspondences(batch["extrinsic"], batch["intrinsic"], batch["depth"],
                                              batch["valid"], self.patch, queries, keys)  # fmt: skip
        P = self.patch_start + (H // self.patch) * (W // self.patch)
        terms = [attention_match_loss(q, k, index, weight, queries, keys, P, self.patch_start, self.head)
                 for q, k in kept]  # fmt: skip
        return sum(terms) / len(terms)
