"""Scene description (numpy, float64): primitives, their materials, lights and the camera space.

World frame of every synthetic scene: metres, right-handed, z up (gravity along -z), the
floor / ground at z = 0. Frame 0 of a clip is *not* the identity (the training code
re-expresses poses relative to it).

Primitive rows (one table per kind, `PRIMITIVE_WIDTHS` floats per row):
- plane    [nx, ny, nz, d]: one-sided infinite plane n.x = d, seen only from the side n points to
           (walls, floor, ceiling of a room seen from inside; the outdoor ground);
- quad     [c(3), u(3), v(3), half_u, half_v]: two-sided finite rectangle (posters, rugs, doors);
- box      [c(3), R(9, row-major, world-from-box), half(3)]: oriented box;
- sphere   [c(3), r];
- cylinder [x, y, z0, z1, r]: vertical capped cylinder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .materials import NUM_COLUMNS, make_material, make_palette
from .random import RandomStream

KINDS = ("plane", "quad", "box", "sphere", "cylinder")
PRIMITIVE_WIDTHS = {"plane": 4, "quad": 11, "box": 15, "sphere": 4, "cylinder": 5}

# Environment row (one per clip): lighting, sky, fog and the depth cap.
AMBIENT = 0
SUN_1 = slice(1, 4)  # direction towards the light times its intensity
SUN_2 = slice(4, 7)
LAMP = slice(7, 10)  # point light position
LAMP_POWER, LAMP_RANGE = 10, 11
INV_FOG = 12  # 1 / fog distance (0: no fog)
MAX_DEPTH = 13  # hits farther than this (z-depth) are invalid
HORIZON = slice(14, 17)
ZENITH = slice(17, 20)
GAIN = slice(20, 23)  # exposure times white balance
CLOUDS = 23
NUM_ENV = 24


@dataclass
class CameraSpace:
    """Where cameras may go and what they should look at."""

    low: np.ndarray  # [3] box of camera centres used by trajectories
    high: np.ndarray  # [3]
    clearance: float  # minimum distance from a camera centre to any surface (m)
    scale: float  # typical motion scale of the family (m)
    pitch: tuple[float, float]  # allowed pitch range, degrees (+ up)
    targets: np.ndarray  # [T, 3] points of interest
    orbit_center: np.ndarray  # [3]
    orbit_radius: tuple[float, float]
    safe_point: np.ndarray  # [3] a centre kept free of objects
    forward_axis: np.ndarray | None = None  # [3] unit, the natural dolly direction


@dataclass
class Scene:
    family: str
    primitives: dict[str, np.ndarray]  # kind -> [N, PRIMITIVE_WIDTHS[kind]]
    materials: dict[str, np.ndarray]  # kind -> [N, NUM_COLUMNS]
    env: np.ndarray  # [NUM_ENV]
    space: CameraSpace

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Distance [N] from points [N, 3] to the nearest surface (negative inside a solid or
        behind a one-sided plane)."""
        p = np.asarray(points, dtype=np.float64)
        best = np.full(len(p), np.inf)
        for kind in KINDS:
            rows = self.primitives[kind]
            if len(rows):
                best = np.minimum(best, _DISTANCES[kind](p[:, None, :], rows[None]).min(axis=1))
        return best


def _plane_distance(p, r):
    return (p * r[..., :3]).sum(-1) - r[..., 3]


def _quad_distance(p, r):
    d = p - r[..., 0:3]
    u, v = r[..., 3:6], r[..., 6:9]
    n = np.cross(u, v)
    du = np.maximum(np.abs((d * u).sum(-1)) - r[..., 9], 0.0)
    dv = np.maximum(np.abs((d * v).sum(-1)) - r[..., 10], 0.0)
    return np.sqrt(du**2 + dv**2 + (d * n).sum(-1) ** 2)


def _box_distance(p, r):
    R = r[..., 3:12].reshape(r.shape[:-1] + (3, 3))
    local = np.einsum("...ji,...j->...i", R, p - r[..., 0:3])
    q = np.abs(local) - r[..., 12:15]
    return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(-1), 0.0)


def _sphere_distance(p, r):
    return np.linalg.norm(p - r[..., 0:3], axis=-1) - r[..., 3]


def _cylinder_distance(p, r):
    radial = np.hypot(p[..., 0] - r[..., 0], p[..., 1] - r[..., 1]) - r[..., 4]
    axial = np.maximum(r[..., 2] - p[..., 2], p[..., 2] - r[..., 3])
    outside = np.hypot(np.maximum(radial, 0.0), np.maximum(axial, 0.0))
    return outside + np.minimum(np.maximum(radial, axial), 0.0)


_DISTANCES = {"plane": _plane_distance, "quad": _quad_distance, "box": _box_distance,
              "sphere": _sphere_distance, "cylinder": _cylinder_distance}  # fmt: skip


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation [3, 3] about +z by `yaw` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class SceneBuilder:
    """Collects primitives; every primitive gets its own material unless one is given."""

    family: str
    rs: RandomStream
    palette: np.ndarray = field(init=False)
    rows: dict[str, list] = field(init=False)
    mats: dict[str, list] = field(init=False)

    def __post_init__(self) -> None:
        self.palette = make_palette(self.rs)
        self.rows = {k: [] for k in KINDS}
        self.mats = {k: [] for k in KINDS}

    def material(self, size: float) -> np.ndarray:
        return make_material(self.rs, self.palette, size)

    def _add(self, kind: str, row, size: float, material: np.ndarray | None) -> np.ndarray:
        material = self.material(size) if material is None else material
        self.rows[kind].append(np.asarray(row, dtype=np.float64))
        self.mats[kind].append(material)
        return material

    def plane(self, normal, offset: float, size: float, material=None) -> np.ndarray:
        return self._add("plane", [*normal, offset], size, material)

    def quad(self, center, u, v, half_u: float, half_v: float, material=None) -> np.ndarray:
        return self._add("quad", [*center, *u, *v, half_u, half_v], 2 * max(half_u, half_v), material)

    def box(self, center, half, yaw: float = 0.0, rotation=None, material=None) -> np.ndarray:
        R = yaw_matrix(yaw) if rotation is None else np.asarray(rotation)
        return self._add("box", [*center, *R.reshape(-1), *half], 2 * max(half), material)

    def sphere(self, center, radius: float, material=None) -> np.ndarray:
        return self._add("sphere", [*center, radius], 2 * radius, material)

    def cylinder(self, x: float, y: float, z0: float, z1: float, radius: float, material=None) -> np.ndarray:
        return self._add("cylinder", [x, y, z0, z1, radius], max(z1 - z0, 2 * radius), material)

    def room_shell(self, low, high, size: float) -> None:
        """Six inward-facing planes bounding the box [low, high] (floor, ceiling, four walls)."""
        for axis in range(3):
            n = np.zeros(3)
            n[axis] = 1.0
            self.plane(n, low[axis], size)
            self.plane(-n, -high[axis], size)

    def build(self, env: np.ndarray, space: CameraSpace) -> Scene:
        prims = {k: np.asarray(v, dtype=np.float64).reshape(-1, PRIMITIVE_WIDTHS[k]) for k, v in self.rows.items()}
        mats = {k: np.asarray(v, dtype=np.float64).reshape(-1, NUM_COLUMNS) for k, v in self.mats.items()}
        return Scene(self.family, prims, mats, np.asarray(env, dtype=np.float64), space)
