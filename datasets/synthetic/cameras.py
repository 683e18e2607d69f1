"""Camera trajectories inside a scene's free space (numpy, float64).

Every trajectory is a smooth function of the frame index whose parameters do not depend on the
clip length, and is generated (and checked) for at least `PLANNED_FRAMES` frames: a clip of
S <= 48 frames is the prefix of the same clip rendered with more frames. Camera centres keep
`space.clearance` from every surface; a trajectory that would not is redrawn, and after
`_ATTEMPTS` failures the clip falls back to a slow pan at the scene's reserved safe point.
"""

from __future__ import annotations

import math

import numpy as np

from .random import RandomStream
from .scene import CameraSpace, Scene

TRAJECTORIES = ("handheld", "orbit", "forward", "rotation", "fast")
PLANNED_FRAMES = 48
_ATTEMPTS = 30
_MAX_PITCH = math.radians(80.0)


def _wave(rs: RandomStream, k: np.ndarray, amplitude: float, f_low: float, f_high: float, terms: int = 3):
    """A smooth random signal [n] of roughly `amplitude`, frequencies in rad/frame."""
    out = np.zeros(len(k))
    for _ in range(terms):
        out += rs.uniform(0.5, 1.0) * np.sin(rs.uniform(f_low, f_high) * k + rs.uniform(0, 2 * math.pi))
    return out * (amplitude / math.sqrt(terms / 2))


def _waves(rs, k, amplitude, f_low, f_high) -> np.ndarray:
    """Independent waves per axis, [n, 3]; `amplitude` is a scalar or [3]."""
    amplitude = np.broadcast_to(np.asarray(amplitude, dtype=np.float64), (3,))
    return np.stack([_wave(rs, k, a, f_low, f_high) for a in amplitude], axis=1)


def _reflect(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Fold values into [low, high] like a ball bouncing off the walls (keeps paths continuous)."""
    span = np.maximum(high - low, 1e-9)
    y = np.mod(x - low, 2 * span)
    return low + np.where(y > span, 2 * span - y, y)


def _angles_towards(origin: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(target) - origin
    return np.arctan2(d[..., 1], d[..., 0]), np.arctan2(d[..., 2], np.hypot(d[..., 0], d[..., 1]))


def _pitch_mid(space: CameraSpace, rs: RandomStream) -> float:
    return math.radians(rs.uniform(*space.pitch))


def _handheld(rs, space: CameraSpace, k, fast: bool = False):
    s, half = space.scale, (space.high - space.low) / 2
    if fast:
        pos = space.low + half + _waves(rs, k, np.minimum(0.6 * half, 1.2 * s), 0.25, 0.7)
        yaw = rs.uniform(0, 2 * math.pi) + rs.sign() * rs.uniform(0.03, 0.12) * k + _wave(rs, k, 0.5, 0.2, 0.6)
        pitch = _pitch_mid(space, rs) + _wave(rs, k, math.radians(space.pitch[1] - space.pitch[0]) / 3, 0.2, 0.6)
        return _reflect(pos, space.low, space.high), yaw, pitch, _wave(rs, k, 0.15, 0.3, 0.8)
    p0 = rs.point_in(space.low, space.high)
    heading = rs.uniform(0, 2 * math.pi)
    drift = rs.uniform(0.01, 0.04) * s * np.array([math.cos(heading), math.sin(heading), 0.0])
    pos = p0 + k[:, None] * drift + _waves(rs, k, [0.2 * s, 0.2 * s, 0.06 * s], 0.05, 0.2)
    pos += _waves(rs, k, 0.004 * s, 0.8, 2.0)
    yaw0, pitch0 = _angles_towards(p0, space.targets[rs.integer(0, len(space.targets) - 1)])
    yaw = yaw0 + _wave(rs, k, 0.3, 0.03, 0.15) + _wave(rs, k, 0.01, 0.8, 2.0)
    pitch = pitch0 + _wave(rs, k, 0.1, 0.03, 0.15) + _wave(rs, k, 0.01, 0.8, 2.0)
    roll = _wave(rs, k, 0.03, 0.02, 0.1) + _wave(rs, k, 0.005, 0.8, 2.0)
    return _reflect(pos, space.low, space.high), yaw, pitch, roll


def _orbit(rs, space: CameraSpace, k):
    s = space.scale
    center = space.orbit_center + np.array([rs.uniform(-0.1, 0.1) * s, rs.uniform(-0.1, 0.1) * s, 0.0])
    radius = rs.uniform(*space.orbit_radius) * (1.0 + _wave(rs, k, 0.05, 0.02, 0.1))
    theta = rs.uniform(0, 2 * math.pi) + rs.sign() * rs.uniform(0.015, 0.06) * k
    height = rs.uniform(space.low[2], space.high[2]) + _wave(rs, k, 0.05 * s, 0.02, 0.1)
    pos = np.stack((center[0] + radius * np.cos(theta), center[1] + radius * np.sin(theta), height), axis=1)
    yaw, pitch = _angles_towards(pos, center + _waves(rs, k, 0.05 * s, 0.02, 0.1))
    return pos, yaw, pitch, _wave(rs, k, 0.03, 0.02, 0.1)


def _forward(rs, space: CameraSpace, k):
    s, n = space.scale, len(k)
    axis = space.forward_axis
    if axis is None:
        heading = rs.uniform(0, 2 * math.pi)
        axis = np.array([math.cos(heading), math.sin(heading), 0.0])
    extent = float(np.abs(axis) @ (space.high - space.low))
    start = (space.low + space.high) / 2 - axis * extent / 2 + np.array([rs.uniform(-0.3, 0.3) * s for _ in range(3)])
    speed = min(rs.uniform(0.02, 0.12) * s, rs.uniform(0.5, 1.0) * extent / max(n - 1, 1))
    pos = start + k[:, None] * speed * axis + _waves(rs, k, [0.1 * s, 0.1 * s, 0.03 * s], 0.03, 0.15)
    yaw = math.atan2(axis[1], axis[0]) + _wave(rs, k, 0.12, 0.02, 0.1)
    pitch = _pitch_mid(space, rs) * 0.5 + _wave(rs, k, 0.05, 0.02, 0.1)
    return _reflect(pos, space.low, space.high), yaw, pitch, _wave(rs, k, 0.02, 0.02, 0.1)


def _rotation(rs, space: CameraSpace, k, origin: np.ndarray | None = None):
    s = space.scale
    p0 = rs.point_in(space.low, space.high) if origin is None else origin
    pos = p0 + _waves(rs, k, rs.uniform(0.02, 0.08) * s, 0.03, 0.2)
    yaw = rs.uniform(0, 2 * math.pi) + rs.sign() * rs.uniform(0.035, 0.1) * k + _wave(rs, k, 0.1, 0.05, 0.2)
    pitch_amp = math.radians(space.pitch[1] - space.pitch[0]) * 0.3
    pitch = math.radians(sum(space.pitch) / 2) + _wave(rs, k, pitch_amp, 0.03, 0.15)
    return pos, yaw, pitch, _wave(rs, k, 0.05, 0.03, 0.2)


_GENERATORS = {
    "handheld": _handheld,
    "orbit": _orbit,
    "forward": _forward,
    "rotation": _rotation,
    "fast": lambda rs, space, k: _handheld(rs, space, k, fast=True),
}


def look_rotation(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """World-from-camera rotations [n, 3, 3] (columns: OpenCV x right, y down, z forward) for a
    camera looking at heading `yaw` (about +z, from +x) and elevation `pitch`, rolled by `roll`."""
    forward = np.stack((np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)), axis=-1)
    right = np.stack((np.sin(yaw), -np.cos(yaw), np.zeros_like(yaw)), axis=-1)  # forward x up, normalised
    down = np.cross(forward, right)
    c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
    return np.stack((c * right + s * down, c * down - s * right, forward), axis=-1)


def make_trajectory(rs: RandomStream, scene: Scene, kind: str, num_frames: int) -> np.ndarray:
    """World-from-camera poses [num_frames, 4, 4] of trajectory `kind` in `scene`."""
    space = scene.space
    k = np.arange(max(num_frames, PLANNED_FRAMES), dtype=np.float64)
    pitch_range = (max(math.radians(space.pitch[0]), -_MAX_PITCH), min(math.radians(space.pitch[1]), _MAX_PITCH))
    for attempt in range(_ATTEMPTS + 1):
        if attempt < _ATTEMPTS:
            pos, yaw, pitch, roll = _GENERATORS[kind](rs, space, k)
        else:  # a slow pan that stays within the reserved free disc
            pos, yaw, pitch, roll = _rotation(rs, space, k, origin=space.safe_point)
            pos = space.safe_point + np.clip(pos - space.safe_point, -0.05 * space.scale, 0.05 * space.scale)
        if np.all(scene.distance(pos) >= space.clearance):
            break
    poses = np.tile(np.eye(4), (len(k), 1, 1))
    poses[:, :3, :3] = look_rotation(np.broadcast_to(yaw, k.shape), np.clip(pitch, *pitch_range),
                                     np.broadcast_to(roll, k.shape))  # fmt: skip
    poses[:, :3, 3] = pos
    return poses[:num_frames]
