"""Procedural multi-view scenes rendered by ray casting analytic primitives (torch, CPU or GPU).

Training data the project renders itself: every clip is a function of an integer seed.

    from recon.datasets.synthetic import render_batch, render_clip, SyntheticSequence
    clip = render_clip(seed=7, num_frames=8, height=224, width=224, device="cuda")
    batch = render_batch(list(range(8)), 8, 224, 224, device="cuda")   # [B, S, ...]
    seq = SyntheticSequence(7, 24, height=294, width=518)              # Frames for `recon demo`

Outputs (`render_clip`; `render_batch` adds a leading clip dimension B):
- `images` [S, 3, H, W] float32 RGB in [0, 1];
- `depth` [S, H, W] float32 metric z-depth (along the optical axis), 0 where invalid;
- `valid` [S, H, W] bool: a surface was hit within the family's depth cap (sky and the far
  outdoor skyline beyond 120 m are invalid; indoor scenes are closed, so always valid);
- `intrinsic` [S, 3, 3] float32 pixels: fx = fy, principal point at the image centre, (0, 0) at
  the top-left corner of the top-left pixel; rays go through pixel centres (u + 0.5, v + 0.5);
- `extrinsic` [S, 3, 4] float32 camera-from-world, OpenCV axes (x right, y down, z forward).

World frame (not the project's "first camera" frame: re-express relative to frame 0 for
training): metres, right-handed, z up, floor / ground at z = 0.

Families (`FAMILIES`): `room` (6 walls + furniture-like boxes, cylinders, spheres, posters, rugs),
`corridor` (long narrow box, objects along the walls), `tabletop` (a table with many small
objects in a room, cameras close above it), `outdoor` (ground plane, buildings, trees, rocks,
props, far skyline, sky with clouds). Trajectories (`TRAJECTORIES`): `handheld`, `orbit`,
`forward`, `rotation`, `fast`. Horizontal field of view 40 to 100 degrees per clip. Camera
centres keep a family-dependent clearance (>= `MIN_CLEARANCE` m) from every surface.

Determinism: the same (seed, num_frames, family, trajectory, H, W) gives identical tensors on
the same device. Family / trajectory default to draws from the seed; the scene depends only on
(seed, family) and the camera path on (seed, family, trajectory), never on H or W; paths are
planned for at least 48 frames, so a clip of S <= 48 frames is the prefix of the same clip with
more frames. All randomness comes from `torch.Generator`s seeded per clip (`random.py`); the
global RNGs are never used.

Throughput: `make_clip_spec` (CPU, ~1.5 ms a clip, picklable result) can run in data-loader
workers while `render_specs` renders the previous batch on the GPU; see
`tools/bench_synthetic.py`.

Modules: random (seeded streams), materials (palettes, texture parameters), scene (primitive
tables, distances), indoor / outdoor / layout / families (scene families), cameras
(trajectories), culling (per-clip frustum culling), raycast (batched intersection), shading
(textures, lights, sky), render (packing, `render_clip`, `render_batch`), sequence.
"""

from .cameras import TRAJECTORIES
from .families import FAMILIES
from .render import ClipSpec, make_clip_spec, render_batch, render_clip, render_specs
from .sequence import SyntheticSequence

MIN_CLEARANCE = 0.06  # metres: the smallest camera-to-surface clearance of any family

__all__ = [
    "FAMILIES",
    "MIN_CLEARANCE",
    "TRAJECTORIES",
    "ClipSpec",
    "SyntheticSequence",
    "make_clip_spec",
    "render_batch",
    "render_clip",
    "render_specs",
]
