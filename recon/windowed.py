"""The `window` memory strategy: an offline (bidirectional) model made streaming.

Frames are buffered until a window of W frames is full; the window goes through one
bidirectional forward, is aligned to the map so far (`recon.align.windows`: Sim(3) on the O
shared frames, then layer-wise depth scale corrections), and its new frames come out as
`FramePrediction`s. The last O frames stay buffered as the next window's overlap.

Memory is bounded: at most W preprocessed frames plus the map summary of O aligned frames.
Use through the session (`Reconstructor(model, memory="window", size=20, overlap=5)`, then
`push(frame)` / `flush()`), which hands frames to `WindowedStream.push`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from recon.align.prediction import WindowPrediction, world_points_from_depth
from recon.align.windows import AlignedWindow, WindowAligner, WindowConfig

from .device import autocast_for
from .session import FramePrediction


@dataclass
class _Pending:
    pre: object  # recon.preprocess output (image [3, H, W] tensor + transform)
    timestamp: float
    arrived: float  # perf_counter() when pushed, for end-to-end latency


class WindowedStream:
    """Stream state of the `window` strategy; `push` returns the predictions that became ready."""

    emits_per_window = True  # the session checks this to route frames here

    def __init__(self, model: torch.nn.Module, config: WindowConfig = WindowConfig()) -> None:
        self.model = model
        self.config = config
        self.aligner = WindowAligner(config)
        self._pending: list[_Pending] = []
        self._start = 0  # stream index of _pending[0]
        self.num_frames = 0
        self.last_window: AlignedWindow | None = None  # for inspection: fit, Sim(3), layer factors
        self.timings: dict[str, float] = {}  # seconds spent per stage (forward, align, emit) so far

    def reset(self) -> None:
        self.aligner.reset()
        self._pending, self._start, self.num_frames, self.last_window = [], 0, 0, None
        self.timings = {}

    def nbytes(self) -> int:
        """Bytes of the buffered frames and the aligned map summary."""
        images = sum(p.pre.image.numel() * p.pre.image.element_size() for p in self._pending)
        return images + self.aligner.nbytes()

    def push(self, pre, timestamp: float) -> list[FramePrediction]:
        """Buffer one preprocessed frame; run and align the window when it is full."""
        self._pending.append(_Pending(pre, float(timestamp), time.perf_counter()))
        self.num_frames += 1
        return self._run_window() if len(self._pending) == self.config.size else []

    def flush(self) -> list[FramePrediction]:
        """Run the buffered frames as a (short) window now, if any of them is not emitted yet."""
        if len(self._pending) > self.aligner.num_emitted - self._start:
            return self._run_window()
        return []

    @torch.inference_mode()
    def _run_window(self) -> list[FramePrediction]:
        device = next(self.model.parameters()).device
        images = torch.stack([p.pre.image for p in self._pending])[None].to(device)
        t0 = time.perf_counter()
        with autocast_for(device, getattr(self.model, "precision", "bf16")):
            out = self.model(images, causal=False)
        if getattr(self.model, "world_points_from", "head") == "depth":
            # Points are unprojected depth: align depth and cameras only, unproject at emission
            # (no transfer, Sim(3) transform or ray scaling of 20 full-resolution point maps).
            out = {k: v for k, v in out.items() if k not in ("world_points", "world_points_conf")}
        window = WindowPrediction.from_model_output(out)  # waits for the GPU
        t1 = time.perf_counter()
        result = self.aligner.add(window, self._start)
        t2 = time.perf_counter()
        self.last_window = result
        first_new = int(result.indices[0]) - self._start
        window = result.prediction
        if window.world_points is None:  # aligned depth + cameras -> points, the whole window at once
            window = dataclasses.replace(window, points_conf=window.depth_conf, world_points=world_points_from_depth(
                window.depth, window.extrinsic, window.intrinsic))  # fmt: skip
        preds = [_prediction(window, i, int(index), self._pending[first_new + i])
                 for i, index in enumerate(result.indices.tolist())]  # fmt: skip
        for name, dt in (("forward", t1 - t0), ("align", t2 - t1), ("emit", time.perf_counter() - t2)):
            self.timings[name] = self.timings.get(name, 0.0) + dt
        keep = min(self.config.overlap, len(self._pending))
        self._start += len(self._pending) - keep
        self._pending = self._pending[len(self._pending) - keep :]
        return preds


def _prediction(window: WindowPrediction, i: int, index: int, pending: _Pending) -> FramePrediction:
    def f32(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a[i], dtype=np.float32)

    pre = pending.pre
    intrinsic = f32(window.intrinsic)
    return FramePrediction(
        index=index,
        timestamp=pending.timestamp,
        extrinsic=f32(window.extrinsic),
        intrinsic=intrinsic,
        intrinsic_original=np.asarray(pre.transform.intrinsics_to_original(intrinsic), dtype=np.float32),
        depth=f32(window.depth),
        depth_conf=f32(window.depth_conf),
        world_points=f32(window.world_points),
        points_conf=f32(window.points_conf),
        image=pre.image.permute(1, 2, 0).numpy(),
        transform=pre.transform,
        # Arrival to emission: a frame waits for its window, which is the honest latency here.
        latency_s=time.perf_counter() - pending.arrived,
    )


def make_windowed_stream(model: torch.nn.Module, size: int = 20, overlap: int = 5, **options) -> WindowedStream:
    """Build the `window` strategy's state; options are `WindowConfig`'s (layerwise,
    conf_quantile, min_points, loss, layers=LayerConfig(...))."""
    return WindowedStream(model, WindowConfig(size, overlap, **options))
