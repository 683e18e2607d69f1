"""Clip specification (numpy) and batched rendering (torch): `render_clip`, `render_batch`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import scene as E
from .cameras import make_trajectory
from .culling import visible
from .families import make_scene, resolve_kind
from .materials import NUM_COLUMNS
from .random import RandomStream
from .raycast import INF, T_MIN, Rays, cast, normals
from .scene import KINDS, Scene
from .shading import albedo, light, sky

FOV_RANGE = (40.0, 100.0)  # horizontal field of view, degrees
TABLE_WIDTH = 16  # widest packed primitive row (box)
# [B, S, H, W, N] elements per chunk of frames / rows: bounds peak memory; on the CPU, small
# temporaries stay in the allocator's heap instead of being mapped and faulted in every time.
_MAX_ELEMENTS = {"cuda": 1 << 26, "cpu": 1 << 21}


@dataclass
class ClipSpec:
    """Everything about a clip except its resolution: scene, lens and world-from-camera poses."""

    seed: int
    family: str
    trajectory: str
    scene: Scene
    fov_deg: float  # horizontal
    world_from_cam: np.ndarray  # [S, 4, 4] float64

    def intrinsic(self, height: int, width: int) -> np.ndarray:
        """[3, 3] float64 pixels; principal point at the image centre, square pixels."""
        f = (width / 2.0) / math.tan(math.radians(self.fov_deg) / 2.0)
        return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])

    def extrinsic(self) -> np.ndarray:
        """Camera-from-world [S, 3, 4] float64."""
        R, c = self.world_from_cam[:, :3, :3], self.world_from_cam[:, :3, 3]
        Rt = np.transpose(R, (0, 2, 1))
        return np.concatenate((Rt, -Rt @ c[..., None]), axis=2)


def make_clip_spec(seed: int, num_frames: int, family: str | None = None, trajectory: str | None = None) -> ClipSpec:
    """Scene, lens and camera path of clip `seed` (numpy, no rendering; picklable for workers).
    family / trajectory: a name from FAMILIES / TRAJECTORIES, or None to draw it from the seed."""
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames!r}")
    family, trajectory = resolve_kind(seed, family, trajectory)
    scene = make_scene(seed, family)
    poses = make_trajectory(RandomStream(seed, f"camera:{trajectory}"), scene, trajectory, int(num_frames))
    fov = RandomStream(seed, "lens").uniform(*FOV_RANGE)
    return ClipSpec(int(seed), family, trajectory, scene, fov, poses)


def _pack_kind(kind: str, rows: list[np.ndarray]) -> np.ndarray:
    """[B, N, W + 1] rows padded to the batch maximum; the extra last column is t_min (inf pads)."""
    if kind == "quad":
        rows = [np.concatenate((r, np.cross(r[:, 3:6], r[:, 6:9])), axis=1) for r in rows]
    width = (rows[0].shape[1] if rows else 0) + 1
    out = np.zeros((len(rows), max(1, max(len(r) for r in rows)), width))
    out[..., -1] = INF
    for b, r in enumerate(rows):
        out[b, : len(r), :-1], out[b, : len(r), -1] = r, T_MIN
    return out


def pack(specs: list[ClipSpec], height: int, width: int, device: torch.device) -> dict:
    """Device tensors for a batch: per-kind primitives, the hit table [B, TABLE_WIDTH + 1 +
    NUM_COLUMNS, N] (primitive row, kind index, material), environments [B, NUM_ENV] and cameras.
    Primitives outside every frame's view are dropped first (culling.py)."""
    rows: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    mats: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    for spec in specs:
        tan_x = math.tan(math.radians(spec.fov_deg) / 2.0)
        for k in KINDS:
            keep = visible(k, spec.scene.primitives[k], spec.world_from_cam, tan_x, tan_x * height / width)
            rows[k].append(spec.scene.primitives[k][keep])
            mats[k].append(spec.scene.materials[k][keep])
    kinds = [k for k in KINDS if max(len(r) for r in rows[k]) > 0] or ["plane"]  # nothing in view: one pad row
    per_kind = {k: _pack_kind(k, rows[k]) for k in kinds}
    total = sum(p.shape[1] for p in per_kind.values())
    table = np.zeros((len(specs), total, TABLE_WIDTH + 1 + NUM_COLUMNS))
    offset = 0
    for k, p in per_kind.items():
        n = p.shape[1]
        table[:, offset : offset + n, : p.shape[2] - 1] = p[..., :-1]
        table[:, offset : offset + n, TABLE_WIDTH] = KINDS.index(k)
        for b, m in enumerate(mats[k]):
            table[b, offset : offset + len(m), TABLE_WIDTH + 1 :] = m
        offset += n
    poses = np.stack([s.world_from_cam for s in specs])
    focal = np.array([0.5 / math.tan(math.radians(s.fov_deg) / 2.0) for s in specs])  # per unit width

    def put(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device, non_blocking=True)

    return {
        "kinds": {k: put(p) for k, p in per_kind.items()},
        "table": put(table.transpose(0, 2, 1)),
        "env": put(np.stack([s.scene.env for s in specs])),
        "rotation": put(poses[:, :, :3, :3]),  # world-from-camera [B, S, 3, 3]
        "center": put(poses[:, :, :3, 3]),  # [B, S, 3]
        "focal": put(focal),  # [B], in units of the image width
        "outdoor": any(s.family == "outdoor" for s in specs),
    }


def _render_frames(packed: dict, frames: slice, rows: slice, height: int, width: int, device: torch.device) -> dict:
    """Render image rows `rows` of frames `frames` of every clip (see `render_specs`)."""
    R, C = packed["rotation"][:, frames], packed["center"][:, frames]
    B, S = R.shape[:2]
    fx = (packed["focal"] * width)[:, None, None, None, None]  # [B, 1, 1, 1, 1]
    u = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    v = torch.arange(rows.start, rows.stop, device=device, dtype=torch.float32) + 0.5
    rays = Rays(origin=tuple(C[:, :, i, None, None, None] for i in range(3)), rotation=R,
                x=(u[:, None] - width / 2.0) / fx, y=(v[:, None, None] - height / 2.0) / fx)  # fmt: skip
    t, index = cast(packed["kinds"], rays)  # [B, S, H, W]
    hit = torch.isfinite(t)
    env = packed["env"]
    valid = hit & (t <= env[:, E.MAX_DEPTH, None, None, None])
    ts = torch.where(hit, t, 1.0)
    direction = rays.direction()
    x = tuple(rays.origin[i][..., 0] + ts * direction[i] for i in range(3))
    table = packed["table"]  # [B, C, N]
    g = torch.gather(table, 2, index.reshape(B, 1, -1).expand(-1, table.shape[1], -1))
    g = g.reshape(B, -1, S, len(v), width).transpose(0, 1)  # [C, B, S, H, W], component slices contiguous
    n = normals(g[:TABLE_WIDTH], g[TABLE_WIDTH], x, direction)
    ray_length = ts * sum(d * d for d in direction).sqrt()
    cosine = (-sum(n[i] * direction[i] for i in range(3)) * ts / ray_length).clamp_min(0.25)
    footprint = ray_length / fx[..., 0] / cosine
    colour = light(albedo(x, n, g[TABLE_WIDTH + 1 :], footprint, device), x, n, ray_length, env)
    if packed["outdoor"]:
        colour = torch.where(hit, colour, sky(direction, env, device))
    colour = (colour * env[:, E.GAIN].T[:, :, None, None, None]).clamp(0.0, 1.0)
    return {"images": colour.permute(1, 2, 0, 3, 4), "depth": torch.where(valid, t, 0.0), "valid": valid}


@torch.no_grad()
def render_specs(specs: list[ClipSpec], height: int, width: int, device: str | torch.device = "cpu") -> dict:
    """Render clips of equal length as [B, S, ...] tensors (see the package docstring)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    lengths = {len(s.world_from_cam) for s in specs}
    if len(lengths) != 1:
        raise ValueError(f"clips of one batch need the same number of frames, got {sorted(lengths)}")
    device = torch.device(device)
    packed = pack(specs, height, width, device)
    B, S = packed["rotation"].shape[:2]
    per_row = B * width * max(p.shape[1] for p in packed["kinds"].values())
    budget = _MAX_ELEMENTS.get(device.type, _MAX_ELEMENTS["cuda"])
    rows = max(1, min(height, budget // per_row))
    frames = max(1, budget // (per_row * height)) if rows == height else 1
    chunks = []
    for s in range(0, S, frames):
        parts = [_render_frames(packed, slice(s, s + frames), slice(r, min(r + rows, height)), height, width, device)
                 for r in range(0, height, rows)]  # fmt: skip
        chunks.append({k: torch.cat([p[k] for p in parts], dim=-2) for k in parts[0]})
    out = {k: torch.cat([c[k] for c in chunks], dim=1) for k in chunks[0]}
    intrinsic = np.stack([s.intrinsic(height, width) for s in specs])
    out["intrinsic"] = torch.from_numpy(np.repeat(intrinsic[:, None], S, 1).astype(np.float32)).to(device)
    out["extrinsic"] = torch.from_numpy(np.stack([s.extrinsic() for s in specs]).astype(np.float32)).to(device)
    return out


def render_batch(seeds: list[int], num_frames: int, height: int, width: int,
                 families: str | list[str | None] | None = None, trajectories: str | list[str | None] | None = None,
                 device: str | torch.device = "cpu") -> dict[str, Tensor]:  # fmt: skip
    """Clips for `seeds` stacked as images [B, S, 3, H, W], depth [B, S, H, W], valid [B, S, H, W],
    intrinsic [B, S, 3, 3], extrinsic [B, S, 3, 4]. `families` / `trajectories`: one name for all,
    one per seed, or None (drawn from each seed)."""
    fams = families if isinstance(families, list) else [families] * len(seeds)
    trajs = trajectories if isinstance(trajectories, list) else [trajectories] * len(seeds)
    if not seeds or len(fams) != len(seeds) or len(trajs) != len(seeds):
        raise ValueError(f"need one family/trajectory per seed for {len(seeds)} seeds")
    specs = [make_clip_spec(s, num_frames, f, t) for s, f, t in zip(seeds, fams, trajs)]
    return render_specs(specs, height, width, device)


def render_clip(seed: int, num_frames: int, height: int, width: int, family: str | None = None,
                trajectory: str | None = None, device: str | torch.device = "cpu") -> dict[str, Tensor]:  # fmt: skip
    """One clip: images [S, 3, H, W] float32 in [0, 1], depth [S, H, W] metric z-depth (0 where
    invalid), valid [S, H, W] bool, intrinsic [S, 3, 3], extrinsic [S, 3, 4] camera-from-world."""
    out = render_specs([make_clip_spec(seed, num_frames, family, trajectory)], height, width, device)
    return {k: v[0] for k, v in out.items()}
