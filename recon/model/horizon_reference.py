"""HorizonStream's chunked inference schedule, run on our horizon model (checkpoint interop).

The public inference (infer.py) processes the first `window` frames together (a joint
window: each frame's pose row sees only frames up to itself, but pooled gates, the KDA
sequence and the metric scale cover the whole chunk, and the first frames' poses all come
from the chunk's last row), then chunks of `sliding` frames (the README's fully streaming
setting is sliding = 1), with the RoPE time start (chunk_index * chunk_frames) % period and
one metric scale per chunk. Our own streaming (the `linear` memory strategy) is causal
from the first frame instead; after the first window both agree frame by frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .horizon_poses import median_window_fov


def chunk_schedule(num_frames: int, window: int, sliding: int) -> list[tuple[int, int]]:
    """[(start, end)]: the first `window` frames, then `sliding` frames per chunk."""
    if sliding < 1:
        raise ValueError(f"sliding must be at least 1, got {sliding}")
    if num_frames <= window:
        return [(0, num_frames)]
    chunks = [(0, window)]
    while chunks[-1][1] < num_frames:
        start = chunks[-1][1]
        chunks.append((start, min(start + sliding, num_frames)))
    return chunks


@torch.no_grad()
def run_chunked(model, images: Tensor, sliding: int = 1) -> dict[str, Tensor]:
    """images [1, S, 3, H, W] -> per-frame outputs concatenated over chunks, plus
    `window_rows` [S, Wmax, 9] (every frame's window poses, metric) and `median_fov` [1, S, 2]."""
    window = model.config.window_frames + 1
    period = model.config.rope_time_period
    state = model.init_state()
    outs = []
    for c, (a, b) in enumerate(chunk_schedule(images.shape[1], window, sliding)):
        start = 0 if c == 0 else (c * (b - a)) % period if period > 0 else c * (b - a)
        outs.append(model(images[:, a:b], state=state, joint_window=c == 0, time_start=start, pool_scale=True))
    keys = ("pose_enc", "extrinsic", "intrinsic", "depth", "depth_conf", "world_points", "metric_scale")
    result = {k: torch.cat([o[k] for o in outs], dim=1) for k in keys}
    rows = [row for o in outs for row in o["window_pose_enc"][0]]  # one [Wmax, 9] per frame
    result["window_rows"] = torch.stack(rows)
    # The offline FoV median takes the first chunk's last row, then one row per later frame.
    fov_rows = [rows[window - 1][None, :, 7:]] + [r[None, :, 7:] for r in rows[window:]]
    result["median_fov"] = median_window_fov(fov_rows, window) if len(rows) >= window else rows[-1][None, :, 7:]
    return result
