"""Vectorised ray / primitive intersection (torch, any device).

Rays of a batch are [B, S, H, W] (clips, frames, rows, columns) and primitives of one kind are
packed as [B, N, W] (clips, primitives padded to the batch maximum, columns): one tensor
expression covers every pixel of every frame against every primitive of the kind, as
[B, S, H, W, N] tensors.

Ray directions are *not* normalised: d = R_wc (x, y, 1) with x = (u - cx) / fx and
y = (v - cy) / fy at pixel centres, so the ray parameter t of a hit is its z-depth in that
camera. Because x depends on the column only and y on the row only, any dot product d . a with
a per-(frame, primitive) vector a is x (R^T a)_0 + y (R^T a)_1 + (R^T a)_2: one full-size add of
a [.., 1, W, N] and a [.., H, 1, N] tensor, which keeps the memory traffic low. Products are
explicit multiply-adds, never matmuls, so the caller's TF32 settings cannot degrade geometry.

Packed columns (the last column of every kind is `t_min`: 1e-4, or inf for padding rows):
plane [n(3), d] | quad [c(3), u(3), v(3), half_u, half_v, n(3)] | box [c(3), R(9, row-major,
world-from-box), half(3)] | sphere [c(3), r] | cylinder [x, y, z0, z1, r].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

Vec = tuple[Tensor, Tensor, Tensor]
INF = float("inf")
T_MIN = 1e-4


@dataclass
class Rays:
    """Pinhole rays of a batch: camera centres and rotations per frame, image-plane x per column
    and y per row."""

    origin: Vec  # 3 x [B, S, 1, 1, 1] world
    rotation: Tensor  # [B, S, 3, 3] world-from-camera
    x: Tensor  # [B, 1, 1, W, 1]
    y: Tensor  # [B, 1, H, 1, 1]

    def _r(self, i: int, j: int) -> Tensor:
        return self.rotation[:, :, i, j, None, None, None]

    def dot(self, a: Vec) -> Tensor:
        """d . a for vectors a of shape [B, 1 or S, 1, 1, N] -> [B, S, H, W, N]."""
        c = [self._r(0, j) * a[0] + self._r(1, j) * a[1] + self._r(2, j) * a[2] for j in range(3)]
        return (self.x * c[0] + c[2]) + self.y * c[1]

    def direction(self) -> Vec:
        """World ray directions, 3 x [B, S, H, W] (z-component 1 in the camera)."""
        return tuple((self.x * self._r(i, 0) + self._r(i, 2) + self.y * self._r(i, 1))[..., 0] for i in range(3))


def _col(p: Tensor, j: int) -> Tensor:
    """Column j of packed primitives [B, N, W] as [B, 1, 1, 1, N]."""
    return p[:, None, None, None, :, j]


def _vec(p: Tensor, j: int) -> Vec:
    return _col(p, j), _col(p, j + 1), _col(p, j + 2)


def _dot(a: Vec, b: Vec) -> Tensor:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _sub(a: Vec, b: Vec) -> Vec:
    return a[0] - b[0], a[1] - b[1], a[2] - b[2]


def planes(p: Tensor, rays: Rays) -> Tensor:
    """One-sided planes n.x = d, hit only from the side n points to. Returns t [B, S, H, W, N]."""
    n = _vec(p, 0)
    denom = rays.dot(n)
    t = (_col(p, 3) - _dot(rays.origin, n)) / denom
    return torch.where((denom < 0) & (t > _col(p, 4)), t, INF)


def quads(p: Tensor, rays: Rays) -> Tensor:
    """Two-sided rectangles. Returns t [B, S, H, W, N]."""
    oc = _sub(rays.origin, _vec(p, 0))
    u, v, n = _vec(p, 3), _vec(p, 6), _vec(p, 11)
    t = -_dot(oc, n) / rays.dot(n)
    lu = _dot(oc, u) + t * rays.dot(u)
    lv = _dot(oc, v) + t * rays.dot(v)
    hit = (lu.abs() <= _col(p, 9)) & (lv.abs() <= _col(p, 10)) & (t > _col(p, 14))
    return torch.where(hit, t, INF)


def boxes(p: Tensor, rays: Rays) -> Tensor:
    """Oriented boxes, slab test in box coordinates. Returns t [B, S, H, W, N]."""
    oc = _sub(rays.origin, _vec(p, 0))
    near = far = None
    for j in range(3):
        axis = (_col(p, 3 + j), _col(p, 6 + j), _col(p, 9 + j))  # column j of R: box axis j in the world
        o, inv, h = _dot(oc, axis), 1.0 / rays.dot(axis), _col(p, 12 + j)
        ta, tb = (-h - o) * inv, (h - o) * inv
        lo, hi = torch.minimum(ta, tb), torch.maximum(ta, tb)
        near = lo if near is None else torch.maximum(near, lo)
        far = hi if far is None else torch.minimum(far, hi)
    return torch.where((near <= far) & (near > _col(p, 15)), near, INF)


def spheres(p: Tensor, rays: Rays) -> Tensor:
    """Spheres (outside surface). Returns t [B, S, H, W, N]."""
    oc = _sub(rays.origin, _vec(p, 0))
    d = rays.direction()
    a = _dot(d, d)[..., None]
    b = rays.dot(oc)
    disc = b * b - a * (_dot(oc, oc) - _col(p, 3) ** 2)
    t = (-b - disc.clamp_min(0).sqrt()) / a
    return torch.where((disc > 0) & (t > _col(p, 4)), t, INF)


def cylinders(p: Tensor, rays: Rays) -> Tensor:
    """Vertical capped cylinders: side, or the cap facing the camera. Returns t [B, S, H, W, N]."""
    zero = torch.zeros_like(_col(p, 0))
    ox, oy = rays.origin[0] - _col(p, 0), rays.origin[1] - _col(p, 1)
    oz = rays.origin[2]
    z0, z1, r, t_min = _col(p, 2), _col(p, 3), _col(p, 4), _col(p, 5)
    dx, dy, dz = (v[..., None] for v in rays.direction())
    a = dx * dx + dy * dy
    b = rays.dot((ox, oy, zero))
    disc = b * b - a * (ox * ox + oy * oy - r * r)
    ts = (-b - disc.clamp_min(0).sqrt()) / a
    zs = oz + ts * dz
    side = (disc > 0) & (zs >= z0) & (zs <= z1) & (ts > t_min)
    tc = (torch.where(oz > z1, z1, z0) - oz) / dz
    hx, hy = ox + tc * dx, oy + tc * dy
    cap = (hx * hx + hy * hy <= r * r) & (tc > t_min)
    return torch.minimum(torch.where(side, ts, INF), torch.where(cap, tc, INF))


INTERSECT = {"plane": planes, "quad": quads, "box": boxes, "sphere": spheres, "cylinder": cylinders}


def cast(packed: dict[str, Tensor], rays: Rays) -> tuple[Tensor, Tensor]:
    """Nearest hit over all kinds: t [B, S, H, W] (inf on a miss) and the index [B, S, H, W] of the
    hit primitive in the concatenation of the kinds in `packed` order."""
    best_t = best_i = None
    offset = 0
    for kind, p in packed.items():
        t, i = INTERSECT[kind](p, rays).min(dim=-1)
        if best_t is None:
            best_t, best_i = t, i
        else:
            closer = t < best_t
            best_t, best_i = torch.where(closer, t, best_t), torch.where(closer, i + offset, best_i)
        offset += p.shape[1]
    return best_t, best_i


def normals(g: Tensor, kind: Tensor, x: Vec, direction: Vec) -> Vec:
    """Unit surface normals at hit points x, facing the camera.

    g [16, ...]: packed columns of the hit primitive, component first (zero-padded); kind [...]
    its index in `INTERSECT` order; x and direction 3 x [...]. Returns 3 x [...].
    """
    c = (g[0], g[1], g[2])
    d = _sub(x, c)
    # box: the axis along which the local hit point is furthest out, relative to the half size
    R = [[g[3 + 3 * i + j] for j in range(3)] for i in range(3)]
    q = [(d[0] * R[0][j] + d[1] * R[1][j] + d[2] * R[2][j]) / g[12 + j] for j in range(3)]
    aq = [v.abs() for v in q]
    m0 = (aq[0] >= aq[1]) & (aq[0] >= aq[2])
    m1 = ~m0 & (aq[1] >= aq[2])
    local = (m0 * q[0].sign(), m1 * q[1].sign(), (~m0 & ~m1) * q[2].sign())
    box = tuple(R[i][0] * local[0] + R[i][1] * local[1] + R[i][2] * local[2] for i in range(3))
    # cylinder: caps point along z; the side is radial
    rx, ry, radius = x[0] - g[0], x[1] - g[1], g[4]
    on_cap = rx * rx + ry * ry < radius * radius * (1 - 1e-3)
    up = torch.where(x[2] > 0.5 * (g[2] + g[3]), 1.0, -1.0)
    cylinder = (torch.where(on_cap, 0.0, rx), torch.where(on_cap, 0.0, ry), torch.where(on_cap, up, 0.0))
    by_kind = {
        0: (g[0], g[1], g[2]),  # plane
        1: (g[11], g[12], g[13]),  # quad
        2: box,
        3: d,  # sphere
        4: cylinder,
    }
    n = tuple(torch.zeros_like(x[0]) for _ in range(3))
    for k, nk in by_kind.items():
        n = tuple(torch.where(kind == k, a, b) for a, b in zip(nk, n))
    facing = torch.where(_dot(n, direction) > 0, -1.0, 1.0) / _dot(n, n).clamp_min(1e-20).sqrt()
    return n[0] * facing, n[1] * facing, n[2] * facing
