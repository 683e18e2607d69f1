"""Indoor scene families: `room` and `corridor` (world frame: see scene.py).

Each builder lays out randomised primitives, keeps a disc around `space.safe_point` free of
objects (so a valid camera always exists), and describes where cameras may move.
"""

from __future__ import annotations

import math

import numpy as np

from . import scene as S
from .layout import environment, free_spot
from .random import RandomStream
from .scene import CameraSpace, Scene, SceneBuilder


def _wall_pose(rs: RandomStream, size, depth: float, width: float):
    """Centre (x, y) and yaw of an object of half `depth` standing against a random wall of the
    room [0, size[0]] x [0, size[1]]; its local +y axis points into the room."""
    wall = rs.integer(0, 3)
    normal = [(1, 0), (-1, 0), (0, 1), (0, -1)][wall]
    along = 1 - wall // 2
    xy = np.zeros(2)
    xy[along] = rs.uniform(width + 0.05, size[along] - width - 0.05)
    xy[1 - along] = depth + 0.01 if normal[1 - along] > 0 else size[1 - along] - depth - 0.01
    return xy, math.atan2(-normal[0], normal[1])


def _furniture(b: SceneBuilder, rs: RandomStream, size, keep_out: list, targets: list) -> None:
    kind = rs.choice(["table", "cabinet", "sofa", "shelf", "pillar", "lamp", "ball", "stool", "crate"],
                     [3, 3, 2, 2, 1, 1, 1, 1, 2])  # fmt: skip
    hx, hy = rs.uniform(0.3, 0.9), rs.uniform(0.2, 0.6)
    if kind in ("cabinet", "shelf", "sofa"):
        hy = min(hy, 0.3) if kind != "sofa" else rs.uniform(0.4, 0.8)
        hz = {"cabinet": rs.uniform(0.4, 1.1), "shelf": rs.uniform(0.8, 1.1), "sofa": rs.uniform(0.2, 0.45)}[kind]
        xy, yaw = _wall_pose(rs, size, hy, hx)
        if all(np.hypot(*(xy - c)) > math.hypot(hx, hy) + r for c, r in keep_out):
            b.box([xy[0], xy[1], hz], [hx, hy, hz], yaw)
            keep_out.append((xy, math.hypot(hx, hy)))
            targets.append([xy[0], xy[1], hz])
        return
    radius = {"table": math.hypot(hx, hy), "crate": 0.5, "pillar": 0.3, "lamp": 0.25, "ball": 0.4, "stool": 0.25}
    xy = free_spot(rs, (0.2, 0.2), (size[0] - 0.2, size[1] - 0.2), radius[kind], keep_out)
    if xy is None:
        return
    keep_out.append((xy, radius[kind]))
    x, y = xy
    if kind == "table":
        top, yaw, legs = rs.uniform(0.68, 0.78), rs.uniform(0, math.pi), b.material(0.8)
        b.box([x, y, top - 0.025], [hx, hy, 0.025], yaw)
        for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            leg = np.array([x, y]) + S.yaw_matrix(yaw)[:2, :2] @ [sx * (hx - 0.06), sy * (hy - 0.06)]
            b.box([leg[0], leg[1], (top - 0.05) / 2], [0.03, 0.03, (top - 0.05) / 2], yaw, material=legs)
        for _ in range(rs.integer(0, 3)):
            r = rs.uniform(0.04, 0.12)
            b.sphere([x + rs.uniform(-0.6, 0.6) * hx, y + rs.uniform(-0.6, 0.6) * hy, top + r], r)
        targets.append([x, y, top])
    elif kind == "crate":
        h = rs.uniform(0.15, 0.35)
        b.box([x, y, h], [h * rs.uniform(0.8, 1.4), h * rs.uniform(0.8, 1.4), h], rs.uniform(0, math.pi))
        targets.append([x, y, h])
    elif kind == "pillar":
        b.cylinder(x, y, 0.0, size[2], rs.uniform(0.1, 0.3))
        targets.append([x, y, 1.2])
    elif kind == "lamp":
        h = rs.uniform(1.2, 1.7)
        b.cylinder(x, y, 0.0, h, rs.uniform(0.02, 0.04))
        b.sphere([x, y, h + 0.1], rs.uniform(0.12, 0.2))
        targets.append([x, y, h])
    elif kind == "ball":
        r = rs.uniform(0.15, 0.4)
        b.sphere([x, y, r], r)
        targets.append([x, y, r])
    else:
        h = rs.uniform(0.4, 0.5)
        b.cylinder(x, y, 0.0, h, rs.uniform(0.15, 0.25))
        targets.append([x, y, h])


def room(rs: RandomStream) -> Scene:
    b = SceneBuilder("room", rs)
    size = np.array([rs.uniform(3.5, 8.0), rs.uniform(3.0, 7.0), rs.uniform(2.4, 3.4)])
    b.room_shell(np.zeros(3), size, 2.0)
    safe = np.array([size[0] * rs.uniform(0.35, 0.65), size[1] * rs.uniform(0.35, 0.65), 1.5])
    keep_out, targets = [(safe[:2], 0.9)], []
    for _ in range(rs.integer(4, 9)):
        _furniture(b, rs, size, keep_out, targets)
    _decals(b, rs, size, rs.integer(2, 5))
    if rs.chance(0.6):
        rug = [safe[0] + rs.uniform(-0.5, 0.5), safe[1] + rs.uniform(-0.5, 0.5), 0.004]
        b.quad(rug, [1, 0, 0], [0, 1, 0], rs.uniform(0.5, 1.2), rs.uniform(0.4, 0.9))
    targets += [[size[0] / 2, size[1] / 2, 1.0], list(safe[:2]) + [0.0]]
    space = CameraSpace(np.array([0.6, 0.6, 1.1]), np.array([size[0] - 0.6, size[1] - 0.6, min(2.0, size[2] - 0.5)]),
                        clearance=0.3, scale=1.0, pitch=(-35.0, 20.0), targets=np.array(targets),
                        orbit_center=np.array(targets[rs.integer(0, len(targets) - 1)]),
                        orbit_radius=(0.8, 2.0), safe_point=safe)  # fmt: skip
    return b.build(environment(rs, False, [size[0] / 2, size[1] / 2, size[2] - 0.3], rs.uniform(2.0, 5.0)), space)


def _decals(b: SceneBuilder, rs: RandomStream, size, count: int) -> None:
    """Posters / doors on the walls, 5 mm in front of them."""
    for _ in range(count):
        wall = rs.integer(0, 3)
        along = 1 - wall // 2
        hu, hv = rs.uniform(0.2, 0.6), rs.uniform(0.2, 0.7)
        c = np.zeros(3)
        c[along] = rs.uniform(hu + 0.05, size[along] - hu - 0.05)
        c[1 - along] = 0.005 if wall % 2 == 0 else size[1 - along] - 0.005
        c[2] = rs.uniform(hv + 0.3, max(hv + 0.31, size[2] - hv - 0.2))
        u = np.zeros(3)
        u[along] = 1.0
        b.quad(c, u, [0, 0, 1], hu, hv)


def corridor(rs: RandomStream) -> Scene:
    b = SceneBuilder("corridor", rs)
    length, width, height = rs.uniform(10.0, 35.0), rs.uniform(1.6, 3.0), rs.uniform(2.4, 3.4)
    size = np.array([length, width, height])
    b.room_shell(np.zeros(3), size, 2.0)
    depth_max, targets = 0.22 * width, [[length - 0.1, width / 2, 1.3], [0.1, width / 2, 1.3]]
    x = rs.uniform(0.5, 2.0)
    while x < length - 0.8:
        for side in (0, 1):
            if not rs.chance(0.6):
                continue
            wall_y, inward = (0.0, 1.0) if side == 0 else (width, -1.0)
            kind = rs.choice(["cabinet", "pillar", "door", "bench", "ball"], [3, 2, 3, 2, 1])
            d = rs.uniform(0.4, 1.0) * depth_max / 2
            if kind in ("cabinet", "bench"):
                hz = rs.uniform(0.4, 1.2) if kind == "cabinet" else rs.uniform(0.2, 0.3)
                b.box([x, wall_y + inward * (d + 0.01), hz], [rs.uniform(0.3, 0.8), d, hz])
                targets.append([x, wall_y + inward * d, hz])
            elif kind == "pillar":
                b.cylinder(x, wall_y + inward * (d + 0.01), 0.0, height, d)
            elif kind == "ball":
                b.sphere([x, wall_y + inward * (d + 0.01), d], d)
            else:
                b.quad([x, wall_y + inward * 0.005, 1.05], [1, 0, 0], [0, 0, 1], 0.45, 1.05)
                targets.append([x, wall_y, 1.2])
        x += rs.uniform(1.2, 3.5)
    lights = b.material(0.6)
    for lx in np.arange(rs.uniform(0.5, 2.0), length - 0.5, rs.uniform(3.0, 5.0))[:6]:
        b.quad([lx, width / 2, height - 0.005], [1, 0, 0], [0, 1, 0], 0.3, 0.15, material=lights)
    lane = width / 2 - depth_max - 0.25
    axis = np.array([rs.sign(), 0.0, 0.0])
    safe = np.array([length / 2, width / 2, 1.5])
    space = CameraSpace(np.array([0.6, width / 2 - lane, 1.1]),
                        np.array([length - 0.6, width / 2 + lane, min(1.9, height - 0.5)]),
                        clearance=0.25, scale=1.0, pitch=(-25.0, 15.0), targets=np.array(targets),
                        orbit_center=np.array([rs.uniform(1.0, length - 1.0), width / 2, 1.2]),
                        orbit_radius=(0.15, max(0.2, lane)), safe_point=safe, forward_axis=axis)  # fmt: skip
    lamp = [length * rs.uniform(0.2, 0.8), width / 2, height - 0.2]
    return b.build(environment(rs, False, lamp, rs.uniform(3.0, 8.0)), space)


def tabletop(rs: RandomStream) -> Scene:
    b = SceneBuilder("tabletop", rs)
    size = np.array([rs.uniform(4.0, 8.0), rs.uniform(4.0, 7.0), rs.uniform(2.5, 3.2)])
    b.room_shell(np.zeros(3), size, 2.0)
    cx, cy = size[0] / 2 + rs.uniform(-0.5, 0.5), size[1] / 2 + rs.uniform(-0.5, 0.5)
    hx, hy, top = rs.uniform(0.45, 1.1), rs.uniform(0.35, 0.7), rs.uniform(0.7, 0.8)
    b.box([cx, cy, top - 0.02], [hx, hy, 0.02])
    legs = b.material(0.8)
    for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        b.box([cx + sx * (hx - 0.05), cy + sy * (hy - 0.05), (top - 0.04) / 2], [0.03, 0.03, (top - 0.04) / 2],
              material=legs)  # fmt: skip
    targets, keep_out, z_max = [], [], top
    for _ in range(rs.integer(8, 18)):
        kind = rs.choice(["box", "sphere", "cylinder", "paper"], [3, 2, 3, 1])
        r = rs.uniform(0.02, 0.09)
        xy = free_spot(rs, (cx - hx + 1.5 * r, cy - hy + 1.5 * r), (cx + hx - 1.5 * r, cy + hy - 1.5 * r), r, keep_out)
        if xy is None:
            continue
        keep_out.append((xy, 1.5 * r if kind == "paper" else r))
        (x, y), height = xy, 0.0
        if kind == "box":
            height = rs.uniform(0.02, 0.12)
            b.box([x, y, top + height], [r * rs.uniform(0.5, 0.7), r * rs.uniform(0.5, 0.7), height],
                  rs.uniform(0, math.pi))  # fmt: skip
            height *= 2
        elif kind == "sphere":
            b.sphere([x, y, top + r], r)
            height = 2 * r
        elif kind == "cylinder":
            height = rs.uniform(0.04, 0.25)
            b.cylinder(x, y, top, top + height, 0.8 * r)
        else:
            yaw = rs.uniform(0, math.pi)
            b.quad([x, y, top + 0.002], [math.cos(yaw), math.sin(yaw), 0], [-math.sin(yaw), math.cos(yaw), 0],
                   1.5 * r, r)  # fmt: skip
        targets.append([x, y, top + height / 2])
        z_max = max(z_max, top + height)
    room_keep_out = [(np.array([cx, cy]), math.hypot(hx, hy) + 0.8)]
    for _ in range(rs.integer(1, 4)):
        _furniture(b, rs, size, room_keep_out, [])
    _decals(b, rs, size, rs.integer(2, 5))
    targets.append([cx, cy, top])
    low = np.array([cx - hx - 0.2, cy - hy - 0.2, z_max + 0.08])
    high = np.array([cx + hx + 0.2, cy + hy + 0.2, max(top + 0.75, z_max + 0.25)])
    space = CameraSpace(low, high, clearance=0.06, scale=0.3, pitch=(-75.0, -20.0), targets=np.array(targets),
                        orbit_center=np.array([cx, cy, top + 0.03]), orbit_radius=(0.35, 0.9),
                        safe_point=np.array([cx, cy, (low[2] + high[2]) / 2]))  # fmt: skip
    return b.build(environment(rs, False, [cx, cy, size[2] - 0.3], rs.uniform(1.5, 4.0)), space)
