"""Overlapping windows of an offline (bidirectional) model, aligned into one map.

Window k covers frames [k (W - O), k (W - O) + W): each window is one bidirectional forward,
and its first O frames were already seen (and emitted) by the previous window. `WindowAligner`
takes the windows in order and, for each, returns the aligned predictions of its new frames:

- the first window is moved rigidly so that its first camera is the world frame;
- later windows get the Sim(3) fitted on the shared frames (`recon.align.sim3`) against the
  map, then, optionally, per-layer depth corrections (`recon.align.layerwise`).

The aligner keeps only a map summary: the aligned cameras, depth, confidence and depth layers
of the last O emitted frames. Aligning against the aligned map is what chains the windows
into the first window's frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .layerwise import LayerConfig, apply_depth_scale, layerwise_corrections, segment_layers
from .prediction import WindowPrediction
from .sim3 import LOSSES, Sim3Fit, estimate_window_sim3
from .umeyama import Sim3


@dataclass(frozen=True)
class WindowConfig:
    size: int = 20  # W, frames per bidirectional forward
    overlap: int = 5  # O, frames shared by consecutive windows
    layerwise: bool = True  # per-layer depth corrections after the Sim(3)
    conf_quantile: float = 0.5  # Sim(3) scale uses pixels at or above this confidence quantile
    min_points: int = 16  # fewer confident overlap pixels: scale from camera baselines
    loss: str = "cauchy"  # IRLS weights: cauchy, or huber (not redescending: gross outliers still pull)
    layers: LayerConfig = field(default_factory=LayerConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.overlap < self.size:
            raise ValueError(f"window overlap must satisfy 1 <= overlap < size, got overlap={self.overlap} size={self.size}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown robust loss {self.loss!r}; use one of {', '.join(LOSSES)}")

    @property
    def stride(self) -> int:
        return self.size - self.overlap


def window_ranges(num_frames: int, size: int = 20, overlap: int = 5) -> list[tuple[int, int]]:
    """(start, stop) of the windows that cover `num_frames` frames; the last may be short,
    and no window consists of overlap only."""
    stride = WindowConfig(size, overlap).stride
    ranges = [(0, min(size, num_frames))] if num_frames > 0 else []
    while ranges and ranges[-1][1] < num_frames:
        start = ranges[-1][0] + stride
        ranges.append((start, min(start + size, num_frames)))
    return ranges


@dataclass
class AlignedWindow:
    indices: np.ndarray  # [N] stream indices of the newly emitted frames
    prediction: WindowPrediction  # [N, ...] their aligned geometry, in the first window's frame
    sim3: Sim3  # x_map = s R x_window + t, applied to the whole window
    fit: Sim3Fit | None  # None for the first window
    layer_scale: np.ndarray | None  # [N, H, W] per-pixel depth factors applied after the Sim(3)


@dataclass
class _MapSummary:
    indices: np.ndarray  # [M] stream indices
    frames: WindowPrediction  # [M, ...] aligned, without world points
    labels: np.ndarray | None  # [M, H, W] depth layers (None without layer-wise alignment)

    def nbytes(self) -> int:
        return self.indices.nbytes + self.frames.nbytes() + (0 if self.labels is None else self.labels.nbytes)


class WindowAligner:
    """Aligns the windows of one stream, in order, into the first window's frame."""

    def __init__(self, config: WindowConfig = WindowConfig()) -> None:
        self.config = config
        self._map: _MapSummary | None = None
        self.num_emitted = 0

    def reset(self) -> None:
        self._map = None
        self.num_emitted = 0

    def nbytes(self) -> int:
        return 0 if self._map is None else self._map.nbytes()

    def add(self, window: WindowPrediction, start: int) -> AlignedWindow:
        """Align `window` (frames start .. start + S - 1 of the stream) and return its new frames.

        `start` must lie within the frames emitted so far and at most O frames back (0 for
        the first window), and the window must reach past them.
        """
        first = self._map is None
        shared = self.num_emitted - start
        if first and start != 0:
            raise ValueError(f"the first window must start at frame 0, got start={start}")
        if not first and not 1 <= shared <= len(self._map.indices):
            raise ValueError(f"window starting at frame {start} must overlap the last "
                             f"{len(self._map.indices)} emitted frames (emitted so far: {self.num_emitted})")  # fmt: skip
        if len(window) <= shared:
            raise ValueError(f"window of {len(window)} frames from frame {start} brings no new frame")
        if first:
            # World = first camera, whatever the model's own normalisation did.
            E0 = window.extrinsic[0]
            sim3, fit = Sim3(1.0, E0[:, :3], E0[:, 3]), None
            aligned, scale = window.transformed(sim3), None
            labels = segment_layers(aligned.depth, self.config.layers) if self.config.layerwise else None
        else:
            map_part = self._map.frames.select(slice(-shared, None))
            fit = estimate_window_sim3(map_part, window.select(slice(0, shared)), self.config.conf_quantile,
                                       self.config.loss, self.config.min_points)  # fmt: skip
            sim3 = fit.sim3
            aligned, scale, labels = window.transformed(sim3), None, None
            if self.config.layerwise:
                map_labels = self._map.labels[-shared:]
                layers = layerwise_corrections(aligned, map_part, map_labels, self.config.layers)
                aligned, scale, labels = apply_depth_scale(aligned, layers.scale), layers.scale, layers.labels
        new = slice(shared, None)
        indices = np.arange(start + shared, start + len(window))
        self._remember(indices, aligned.select(new).without_points(), None if labels is None else labels[new])
        self.num_emitted = int(indices[-1]) + 1
        return AlignedWindow(indices, aligned.select(new), sim3, fit, None if scale is None else scale[new])

    def _remember(self, indices: np.ndarray, frames: WindowPrediction, labels: np.ndarray | None) -> None:
        O = self.config.overlap
        if len(indices) >= O:  # the new frames alone fill the summary: no concatenation
            self._map = _MapSummary(indices[-O:].copy(), frames.select(slice(-O, None)).copy(),
                                    None if labels is None else labels[-O:].copy())  # fmt: skip
            return
        if self._map is not None:
            indices = np.concatenate((self._map.indices, indices))
            frames = WindowPrediction.concat([self._map.frames, frames])
            if labels is not None:
                labels = np.concatenate((self._map.labels, labels))
        keep = slice(-self.config.overlap, None)
        self._map = _MapSummary(indices[keep].copy(), frames.select(keep).copy(),
                                None if labels is None else labels[keep].copy())  # fmt: skip


def align_windows(windows: list[WindowPrediction], starts: list[int], config: WindowConfig = WindowConfig()) -> list[AlignedWindow]:
    """Offline convenience: align a whole list of windows (window i starts at frame starts[i])."""
    if len(windows) != len(starts):
        raise ValueError(f"got {len(windows)} windows but {len(starts)} start frames")
    aligner = WindowAligner(config)
    return [aligner.add(w, s) for w, s in zip(windows, starts)]
