"""Procedural textures, lighting and sky (torch, any device).

Textures are solid (3D) patterns of the hit point: fBm over a periodic, smooth random lattice
sampled with trilinear `grid_sample`, stripes, 3D checkers and blobs, mixed per material
(materials.py). Every pattern fades to its mean once it would alias at the pixel's footprint.
Shading is Lambertian (two directional lights, ambient, a point lamp with distance falloff),
outdoor hits get distance fog, misses get a sky with clouds. Per-pixel tensors are [B, S, H, W].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import materials as M
from . import scene as E

Vec = tuple[Tensor, Tensor, Tensor]
LATTICE = 64  # noise period in lattice units
CHANNELS = 4
OCTAVES = 5  # octave 0 (half frequency): colour variation and blobs; 1..4: fBm; 4 also detail
_NOISE_CYCLES = 0.25  # dominant cycles per lattice unit of the smoothed noise
_cache: dict[str, tuple[Tensor, Tensor]] = {}


def noise_tables(device: torch.device) -> tuple[Tensor, Tensor]:
    """The noise volume [1, C, L+1, L+1, L+1] (periodic, unit variance, last slice repeats the
    first for wrap-around interpolation) and octave transforms [OCTAVES, 3, 3] (a fixed rotation
    times 2^(k-1), breaking the lattice's axis alignment). Same values on every device."""
    key = str(device)
    if key not in _cache:
        g = torch.Generator().manual_seed(0x5EED)
        white = torch.randn(CHANNELS, LATTICE, LATTICE, LATTICE, generator=g, dtype=torch.float64)
        f = torch.fft.fftfreq(LATTICE, dtype=torch.float64)
        f2 = f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2
        smooth = torch.fft.ifftn(torch.fft.fftn(white, dim=(1, 2, 3)) * torch.exp(-2 * math.pi**2 * 1.3**2 * f2),
                                 dim=(1, 2, 3)).real  # fmt: skip
        smooth = (smooth - smooth.mean(dim=(1, 2, 3), keepdim=True)) / smooth.std(dim=(1, 2, 3), keepdim=True)
        smooth = torch.cat((smooth, smooth[:, :1]), 1)
        smooth = torch.cat((smooth, smooth[:, :, :1]), 2)
        smooth = torch.cat((smooth, smooth[:, :, :, :1]), 3)
        q, _ = torch.linalg.qr(torch.randn(OCTAVES, 3, 3, generator=g, dtype=torch.float64))
        scale = 2.0 ** (torch.arange(OCTAVES, dtype=torch.float64) - 1)
        _cache[key] = (smooth[None].float().to(device), (q * scale[:, None, None]).float().to(device))
    return _cache[key]


def sample_noise(volume: Tensor, x: Tensor) -> Tensor:
    """Trilinear samples [C, *x.shape[:-1]] of the periodic volume at lattice coordinates x [..., 3]."""
    g = torch.remainder(x, float(LATTICE)).mul_(2.0 / LATTICE).sub_(1.0)
    out = F.grid_sample(volume, g.reshape(1, 1, 1, -1, 3), mode="bilinear", padding_mode="border",
                        align_corners=True)  # fmt: skip
    return out.reshape((volume.shape[1],) + x.shape[:-1])


def _fade(cycles_per_pixel: Tensor) -> Tensor:
    """1 for patterns well resolved by the pixel grid, 0 from the Nyquist limit on."""
    return ((0.5 - cycles_per_pixel) / 0.3).clamp(0.0, 1.0)


def albedo(x: Vec, n: Vec, mat: Tensor, footprint: Tensor, device: torch.device) -> Tensor:
    """Surface colour [3, B, S, H, W] at hit points x with normals n; mat [NUM_COLUMNS, B, S, H, W];
    footprint [B, S, H, W] = metres covered by one pixel on the surface."""
    volume, octaves = noise_tables(device)
    p = tuple(x[i] - 1e-3 * n[i] for i in range(3))  # just inside the surface: no flicker on lattice planes
    freq = mat[M.FREQUENCY]
    q = tuple(p[i] * freq + mat[M.OFFSET][i] for i in range(3))
    coords = sum(q[i][..., None, None] * octaves[:, i, :] for i in range(3))  # [B, S, H, W, K, 3]
    noise = sample_noise(volume, coords)  # [C, B, S, H, W, K]
    cycles = _NOISE_CYCLES * freq * footprint
    fade = [_fade(cycles * 2.0 ** (k - 1)) for k in range(OCTAVES)]
    fbm = sum(0.5**k * fade[k] * noise[0, ..., k] for k in range(1, OCTAVES)) / sum(0.5**k for k in range(1, OCTAVES))
    fbm = 0.5 + 0.5 * torch.tanh(2.0 * fbm)
    blobs = 0.4 + fade[0] * (torch.sigmoid(6.0 * (noise[2, ..., 0] - 0.3)) - 0.4)
    stripe_vec = mat[M.STRIPES]
    phase = sum(p[i] * stripe_vec[i] for i in range(3)) + 0.4 * noise[1, ..., 1]
    stripe_fade = _fade(stripe_vec.norm(dim=0) * footprint)
    stripes = 0.5 + 0.5 * stripe_fade * torch.tanh(3.0 * torch.sin(2 * math.pi * phase))
    cf = mat[M.CHECKER_FREQUENCY]
    cells = sum(torch.floor(p[i] * cf + mat[M.OFFSET][i]) for i in range(3))
    checker = 0.5 + _fade(cf * footprint) * (torch.remainder(cells, 2.0) - 0.5)
    mix = mat[M.W_FBM] * fbm + mat[M.W_STRIPES] * stripes + mat[M.W_CHECKER] * checker + mat[M.W_BLOBS] * blobs
    a, b = mat[M.COLOR_A], mat[M.COLOR_B]
    colour = a + (b - a) * mix
    # low-frequency variation: mostly brightness, a little hue, as in photographs of real surfaces
    n1, n2, n3 = noise[1, ..., 0], noise[2, ..., 0], noise[3, ..., 0]
    tint = torch.stack((n1 + 0.2 * n2, n1 + 0.2 * n3, n1 - 0.2 * (n2 + n3)))
    variation = 1.0 + mat[M.COLOR_VARIATION] * fade[0] * tint
    detail = 1.0 + mat[M.DETAIL] * fade[OCTAVES - 1] * noise[3, ..., OCTAVES - 1]
    return colour * variation * detail


def _env(env: Tensor, index) -> Tensor:
    """Environment column(s) of [B, NUM_ENV] broadcastable to [(3,) B, 1, 1, 1]."""
    v = env[:, index]
    return v[:, None, None, None] if v.dim() == 1 else v.T[:, :, None, None, None]


def light(colour: Tensor, x: Vec, n: Vec, ray_length: Tensor, env: Tensor) -> Tensor:
    """Lambertian shading of colour [3, B, S, H, W] plus outdoor fog; returns [3, B, S, H, W]."""
    shade = _env(env, E.AMBIENT)
    for sun in (E.SUN_1, E.SUN_2):
        s = _env(env, sun)
        shade = shade + (n[0] * s[0] + n[1] * s[1] + n[2] * s[2]).clamp_min(0)
    lamp = _env(env, E.LAMP)
    to_lamp = tuple(lamp[i] - x[i] for i in range(3))
    d2 = sum(v * v for v in to_lamp).clamp_min(1e-8)
    cosine = (sum(n[i] * to_lamp[i] for i in range(3)) / d2.sqrt()).clamp_min(0)
    shade = shade + _env(env, E.LAMP_POWER) * cosine / (1.0 + d2 / _env(env, E.LAMP_RANGE) ** 2)
    fog = 1.0 - torch.exp(-ray_length * _env(env, E.INV_FOG))
    return colour * shade * (1.0 - fog) + _env(env, E.HORIZON) * fog


def sky(direction: Vec, env: Tensor, device: torch.device) -> Tensor:
    """Sky colour [3, B, S, H, W] for ray directions: horizon-to-zenith gradient plus clouds."""
    volume, _ = noise_tables(device)
    length = _dot(direction, direction).sqrt()
    up = (direction[2] / length).clamp(0.0, 1.0)
    horizon, zenith = _env(env, E.HORIZON), _env(env, E.ZENITH)
    colour = horizon + (zenith - horizon) * up.sqrt()
    height = up + 0.05  # clouds on a plane above the camera
    uv = torch.stack((direction[0] / length / height, direction[1] / length / height, up * 0.0), dim=-1)
    cloud = torch.sigmoid(4.0 * (sample_noise(volume, 4.0 * uv)[0] - 0.3)) * _env(env, E.CLOUDS)
    cloud = cloud * (up * 5.0).clamp(0.0, 1.0)
    return colour + (0.95 - colour) * cloud


def _dot(a: Vec, b: Vec) -> Tensor:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
