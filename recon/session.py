"""Streaming session: frames in, one `FramePrediction` per frame out.

    model, _ = load_model("tiny")
    rec = Reconstructor(model, memory="full")
    for image in frames:              # HxWx3 RGB uint8 (or see recon.preprocess)
        pred = rec.step(image)        # pose, intrinsics, depth, point map, confidences

All arrays in a FramePrediction are numpy on the CPU, at model resolution unless named
otherwise; conventions are those of recon.align.pose_encoding (OpenCV camera-from-world,
world = first camera).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import memory as memory_strategies
from .device import autocast_for, prepare_model, resolve_device
from .fastpath import GraphedStep
from .preprocess import ImageTransform, PreprocessedFrame, preprocess_frame

if TYPE_CHECKING:
    from .refine import RefineConfig


@dataclass
class FramePrediction:
    index: int
    timestamp: float
    extrinsic: np.ndarray  # [3, 4] camera-from-world
    intrinsic: np.ndarray  # [3, 3] pixels of the model input
    intrinsic_original: np.ndarray  # [3, 3] pixels of the original image
    depth: np.ndarray  # [H, W]
    depth_conf: np.ndarray  # [H, W]
    world_points: np.ndarray  # [H, W, 3]
    points_conf: np.ndarray  # [H, W]
    image: np.ndarray  # [H, W, 3] float32 RGB in [0, 1], the model input
    transform: ImageTransform  # model <-> original pixel mapping
    latency_s: float = 0.0

    @property
    def camera_center(self) -> np.ndarray:
        R, t = self.extrinsic[:, :3], self.extrinsic[:, 3]
        return -R.T @ t


class Reconstructor:
    """Runs a causal geometry transformer over a stream, one frame per `step`."""

    def __init__(
        self,
        model: torch.nn.Module,
        memory: str | None = None,
        device: str | torch.device = "auto",
        width: int | None = None,
        mode: str = "crop",
        precision: str = "bf16",
        fast: bool | None = None,
        world_points: str = "depth",
        refine: bool | RefineConfig = False,
        **memory_options,
    ) -> None:
        """precision: "bf16", "mixed" or "fp32" on CUDA; world_points: "depth" (unprojected
        depth) or "head" (the point-map head) -- see recon.device.prepare_model (the CPU always
        computes in fp32). fast: replay steady per-frame steps as a CUDA graph
        (recon.fastpath; default on for CUDA, where it applies to bounded strategies).
        refine: re-solve each camera against a feature map with bundle adjustment, the model's
        depth as a prior (recon.refine; True or a RefineConfig). Subscribers then see the
        refined cameras, intrinsics and world points (from the source `world_points` names)."""
        self.device = resolve_device(device)
        self.model = prepare_model(model, self.device, precision, world_points)
        self.precision = self.model.precision
        use_graphs = self.device.type == "cuda" if fast is None else fast
        self._graphed = GraphedStep(self.model, self.precision) if use_graphs and self.device.type == "cuda" else None
        # Linear-attention models stream with their recurrent state; VGGT-style ones keep a cache.
        self.memory = memory or ("linear" if model.config.architecture == "horizon" else "full")
        self.memory_options = memory_options
        self.width = width or model.config.default_width
        self.mode = mode
        self.state = memory_strategies.make_state(self.memory, self.model, **memory_options)
        self._model_hw: tuple[int, int] | None = None
        self.refiner = None
        if refine:
            from .refine import PoseRefiner, RefineConfig

            config = refine if isinstance(refine, RefineConfig) else None
            self.refiner = PoseRefiner(config, world_points=world_points, device=self.device)

    def _refined(self, predictions: list[FramePrediction]) -> list[FramePrediction]:
        if self.refiner is None:
            return predictions
        out = []
        for pred in predictions:
            start = time.perf_counter()
            pred = self.refiner.refine(pred)
            pred.latency_s += time.perf_counter() - start
            out.append(pred)
        return out

    def reset(self) -> None:
        """Forget the stream; the next frame starts a new world frame. The state is reset in
        place: caches with reserved room (`full` with `reserve_frames`) keep their buffers."""
        self.state.reset()
        self._model_hw = None
        if self.refiner is not None:
            self.refiner.reset()
        if self._graphed is not None:
            self._graphed.reset()

    @property
    def num_frames(self) -> int:
        return self.state.num_frames

    def memory_bytes(self) -> int:
        """Bytes held by the stream's caches and states."""
        return self.state.nbytes()

    def preprocess(self, frame, bgr: bool = False) -> PreprocessedFrame:
        """The model input of a frame (see recon.preprocess). `push`/`step` call it, or take
        its result directly: a prefetch thread may preprocess the next frame meanwhile
        (recon.prefetch). On CUDA a pinned copy of the image is made for an async upload."""
        if isinstance(frame, PreprocessedFrame):
            if self._model_hw is None:
                self._model_hw = tuple(frame.image.shape[-2:])
            return frame
        # Every frame of a stream shares the first frame's model resolution.
        if self._model_hw is None:
            pre = preprocess_frame(frame, mode=self.mode, target_width=self.width, bgr=bgr)
            self._model_hw = tuple(pre.image.shape[-2:])
        else:
            pre = preprocess_frame(frame, mode=self.mode, size=self._model_hw, bgr=bgr)
        if self.device.type == "cuda":
            pre = dataclasses.replace(pre, pinned=pre.image.pin_memory())
        return pre

    @property
    def windowed(self) -> bool:
        """True when predictions come per window (the `window` strategy), not per frame."""
        return getattr(self.state, "emits_per_window", False)

    def push(self, frame, timestamp: float | None = None, bgr: bool = False) -> list[FramePrediction]:
        """Consume one frame; return the predictions that became available, in frame order.

        Per-frame strategies return exactly this frame's prediction; `window` returns [] until
        a window is complete, then that window's new frames. Call `flush()` at the end.
        """
        if not self.windowed:
            return [self.step(frame, timestamp, bgr)]
        pre = self.preprocess(frame, bgr=bgr)
        return self._refined(self.state.push(pre, time.time() if timestamp is None else timestamp))

    def flush(self) -> list[FramePrediction]:
        """End of stream: the predictions still held back (the last, short window)."""
        return self._refined(self.state.flush()) if self.windowed else []

    def finish(self) -> list[FramePrediction]:
        """After `flush()`: with `refine`, the refiner's end-of-stream adjustment revises the last
        frames (cameras, intrinsics, depth, world points; recon.refine.PoseRefiner.finish) and
        its map starts over; [] without. Frames keep their index: a revision replaces the frame's
        earlier prediction (recon.pipeline.run_stream hands them to the subscribers)."""
        return self.refiner.finish() if self.refiner is not None else []

    @torch.inference_mode()
    def step(self, frame, timestamp: float | None = None, bgr: bool = False) -> FramePrediction:
        """Consume one frame (HxW[xC] array, see recon.preprocess) and predict its geometry."""
        if self.windowed:
            raise ValueError(f"memory strategy {self.memory!r} predicts per window: use push() and flush(), not step()")
        start = time.perf_counter()
        pre = self.preprocess(frame, bgr=bgr)
        index = self.state.num_frames
        images = (pre.image if pre.pinned is None else pre.pinned).to(self.device, non_blocking=True)[None, None]
        if self._graphed is not None:
            out = self._graphed(images, self.state)
        else:
            with autocast_for(self.device, self.precision):
                out = self.model(images, state=self.state)
        pred = _to_prediction(out, pre, index, time.time() if timestamp is None else timestamp)
        pred.latency_s = time.perf_counter() - start
        return self._refined([pred])[0]

    @torch.inference_mode()
    def forward_batch(self, images: torch.Tensor, causal: bool = True) -> dict:
        """Offline forward over [S, 3, H, W] or [B, S, 3, H, W] model-ready images
        (block-causal by default, bidirectional with causal=False); no stream state."""
        with autocast_for(self.device, self.precision):
            return self.model(images.to(self.device), causal=causal)


_OUTPUTS = ("extrinsic", "intrinsic", "depth", "depth_conf", "world_points", "world_points_conf")


def _to_prediction(out: dict, pre, index: int, timestamp: float) -> FramePrediction:
    # All copies queued at once (into pinned memory on CUDA), then a single wait.
    host = {name: out[name][0, 0].float().to("cpu", non_blocking=True) for name in _OUTPUTS}
    if out["depth"].is_cuda:
        torch.cuda.current_stream(out["depth"].device).synchronize()

    def np0(name: str) -> np.ndarray:
        return host[name].numpy()

    intrinsic = np0("intrinsic")
    return FramePrediction(
        index=index,
        timestamp=float(timestamp),
        extrinsic=np0("extrinsic"),
        intrinsic=intrinsic,
        intrinsic_original=np.asarray(pre.transform.intrinsics_to_original(intrinsic), dtype=np.float32),
        depth=np0("depth"),
        depth_conf=np0("depth_conf"),
        world_points=np0("world_points"),
        points_conf=np0("world_points_conf"),
        image=pre.image.permute(1, 2, 0).numpy(),
        transform=pre.transform,
    )
