"""Photometric depth refinement: a plane sweep around each frame's depth, scored against its neighbours.

Once the end-of-stream adjustment has made the cameras agree, a frame's depth can be measured
from the images instead of taken from the model: at the right depth, a pixel's patch looks the
same from the neighbouring views. Each pixel's depth is tried at `hypotheses` values within
exp(+-span) of its current one; each try warps a neighbour's image into the frame (bilinear), and
the cost is 1 - NCC over a (2 window + 1)^2 patch (zero mean, unit variance: fog and lamp falloff
differ from view to view). A pixel's cost is the mean over its `best_of` best neighbours (one that
is occluded there, or sees it outside its image, is left out). The depth at the lowest cost,
refined to the vertex of a parabola, replaces the pixel's where that minimum lies inside the range,
costs less than `max_cost` and the patch is textured (grey-level standard deviation above
`min_texture`); elsewhere the depth stays.

Neighbours: of the frames up to `radius` away, those that see at least `min_overlap` of the frame
from a baseline near `baseline` times its median depth (wider resolves depth better, narrower keeps
the patches alike); frames nearer than `min_baseline` are left out, so a camera that only turns
keeps its depth (a sweep cannot measure it).

Shapes: depth [S, H, W] (> 0 where valid), images [S, H, W] grey in [0, 1], intrinsic [S, 3, 3],
extrinsic [S, 3, 4] camera-from-world; pixel centres at +0.5 (recon.refine's convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .bundle import lift


@dataclass
class SweepConfig:
    radius: int = 24  # frames either side that may serve as neighbours
    neighbours: int = 6
    best_of: int = 3
    min_baseline: float = 0.02  # of the frame's median depth
    baseline: float = 0.15  # the preferred one
    min_overlap: float = 0.3  # of the frame's pixels the neighbour sees
    hypotheses: int = 33
    span: float = 0.3  # log depth either side of the current depth
    window: int = 6  # NCC patch radius (px)
    max_cost: float = 0.3  # 1 - NCC
    min_texture: float = 0.02


def grey(images: np.ndarray) -> np.ndarray:
    """RGB images [S, H, W, 3] in [0, 1] -> grey [S, H, W] float32 (ITU-R 601 weights)."""
    return (np.asarray(images, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)


def sweep_depth(depth: np.ndarray, images: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray,
                config: SweepConfig | None = None, device: str | torch.device = "cpu") -> np.ndarray:  # fmt: skip
    """Depths [S, H, W] refined by the plane sweep (see the module doc); the computation runs on
    `device`. Returns a new float64 array; frames without two usable neighbours are unchanged."""
    c = config or SweepConfig()
    depth = np.asarray(depth, np.float64)
    out = depth.copy()
    images_t = torch.as_tensor(np.asarray(images, np.float32), device=device)
    for i in range(len(depth)):
        nbrs = pick_neighbours(i, depth[i], intrinsic, extrinsic, c)
        if len(nbrs) < 2:
            continue
        refined, accept = _sweep_frame(i, nbrs, depth[i], images_t, intrinsic, extrinsic, c)
        out[i][accept] = refined[accept]
    return out


def pick_neighbours(i: int, depth: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray,
                    config: SweepConfig, stride: int = 8) -> list[int]:  # fmt: skip
    """Frame i's neighbours for the sweep (see the module doc), best first. depth [H, W] is frame
    i's; its pixels on a grid of `stride` measure the overlap."""
    c = config
    H, W = depth.shape
    v, u = np.mgrid[stride // 2 : H : stride, stride // 2 : W : stride]
    d = depth[v, u]
    ok = np.isfinite(d) & (d > 0)
    if not ok.any():
        return []
    world = lift(np.stack((u[ok] + 0.5, v[ok] + 0.5), axis=1), d[ok], extrinsic[i], intrinsic[i])
    centre = -np.einsum("sji,sj->si", extrinsic[:, :, :3], extrinsic[:, :, 3])
    median = float(np.median(d[ok]))
    scored = []
    for j in range(max(0, i - c.radius), min(len(extrinsic), i + c.radius + 1)):
        ratio = np.linalg.norm(centre[j] - centre[i]) / median
        if j == i or ratio < c.min_baseline:
            continue
        x = world @ extrinsic[j, :, :3].T + extrinsic[j, :, 3]
        z = np.maximum(x[:, 2], 1e-9)
        col = intrinsic[j, 0, 0] * x[:, 0] / z + intrinsic[j, 0, 2]
        row = intrinsic[j, 1, 1] * x[:, 1] / z + intrinsic[j, 1, 2]
        overlap = np.mean((x[:, 2] > 1e-9) & (col >= 0) & (col < W) & (row >= 0) & (row < H))
        if overlap >= c.min_overlap:
            scored.append((overlap * min(ratio / c.baseline, c.baseline / ratio), j))
    return [j for _, j in sorted(scored, reverse=True)[: c.neighbours]]


def _box(x: Tensor, r: int) -> Tensor:
    """Mean over the (2r+1)^2 window, clipped at the borders; separable (rows, then columns)."""
    x = F.avg_pool2d(x, (1, 2 * r + 1), stride=1, padding=(0, r), count_include_pad=False)
    return F.avg_pool2d(x, (2 * r + 1, 1), stride=1, padding=(r, 0), count_include_pad=False)


def _sweep_frame(i: int, nbrs: list[int], depth: np.ndarray, images: Tensor, intrinsic: np.ndarray,
                 extrinsic: np.ndarray, c: SweepConfig) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Frame i's swept depth [H, W] and where to take it [H, W] (bool)."""
    dev = images.device
    H, W = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    d0 = torch.as_tensor(np.where(valid, depth, 1.0), dtype=torch.float32, device=dev)
    K = torch.tensor(intrinsic[i], dtype=torch.float32, device=dev)
    v, u = torch.meshgrid(torch.arange(H, device=dev) + 0.5, torch.arange(W, device=dev) + 0.5, indexing="ij")
    rays = torch.stack(((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)))  # [3, H, W]
    offsets = torch.linspace(-c.span, c.span, c.hypotheses, device=dev)
    z = d0 * torch.exp(offsets)[:, None, None]  # [D, H, W]
    D = len(offsets)
    ref = images[i][None, None]
    mean_ref = _box(ref, c.window)
    var_ref = (_box(ref * ref, c.window) - mean_ref**2).clamp_min(0)
    costs = []
    for j in nbrs:
        # camera j from camera i, in float64 before the cast
        rel = extrinsic[j, :, :3] @ extrinsic[i, :, :3].T
        R = torch.as_tensor(rel, dtype=torch.float32, device=dev)
        t = torch.as_tensor(extrinsic[j, :, 3] - rel @ extrinsic[i, :, 3], dtype=torch.float32, device=dev)
        Kj = torch.tensor(intrinsic[j], dtype=torch.float32, device=dev)
        x = torch.einsum("ab,bhw->ahw", R, rays)[:, None] * z[None] + t[:, None, None, None]  # [3, D, H, W]
        zj = x[2].clamp_min(1e-6)
        col = Kj[0, 0] * x[0] / zj + Kj[0, 2]
        row = Kj[1, 1] * x[1] / zj + Kj[1, 2]
        grid = torch.stack((2 * col / W - 1, 2 * row / H - 1), dim=-1)  # align_corners=False: edges at +-1
        warped = F.grid_sample(images[j][None, None].expand(D, 1, H, W), grid, align_corners=False,
                               padding_mode="border")  # fmt: skip
        mean_w = _box(warped, c.window)
        var_w = (_box(warped * warped, c.window) - mean_w**2).clamp_min(0)
        cov = _box(warped * ref, c.window) - mean_w * mean_ref
        cost = (1 - cov / torch.sqrt((var_w * var_ref).clamp_min(1e-10)))[:, 0].clamp(0, 2)
        seen = (x[2] > 1e-6) & (col >= 0) & (col <= W) & (row >= 0) & (row <= H)
        costs.append(torch.where(seen, cost, torch.full_like(cost, 2.0)))
    cost = torch.sort(torch.stack(costs), dim=0).values[: min(c.best_of, len(nbrs))].mean(0)  # [D, H, W]
    k = cost.argmin(0, keepdim=True)
    at = cost.gather(0, k)[0]
    left = cost.gather(0, (k - 1).clamp_min(0))[0]
    right = cost.gather(0, (k + 1).clamp_max(D - 1))[0]
    curvature = left - 2 * at + right
    vertex = torch.where(curvature > 1e-6, 0.5 * (left - right) / curvature.clamp_min(1e-6), torch.zeros_like(at))
    step = 2 * c.span / (D - 1)
    k = k[0]
    log_offset = offsets[k] + vertex.clamp(-0.5, 0.5) * step
    accept = (k > 0) & (k < D - 1) & (at < c.max_cost) & (var_ref[0, 0].sqrt() > c.min_texture)
    refined = (d0 * torch.exp(log_offset)).double().cpu().numpy()
    return refined, accept.cpu().numpy() & valid
