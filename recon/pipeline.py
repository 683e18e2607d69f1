"""The main loop: a frame source feeds the session; subscribers consume the predictions.

    source -> Reconstructor.step -> FramePrediction -> viewer / exporter / evaluator
    end of stream -> Reconstructor.finish -> revised FramePredictions -> the same subscribers

Subscribers never see the model. Ctrl-C or a camera that disconnects ends the loop, and
the exports are still written for the frames processed so far. A revision (the refiner's
final adjustment, recon.refine) replaces the predictions of frames already delivered, by index:
`exporter.revise(predictions)`, `viewer.revise(predictions)` where the viewer has it, and
`on_revision(prediction)` for each.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from recon.datasets.types import Frame

from .prefetch import prefetch
from .session import FramePrediction, Reconstructor

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    frames: int = 0
    seconds: float = 0.0
    dropped: int = 0
    disconnected: bool = False
    interrupted: bool = False
    revised: int = 0  # frames the end-of-stream adjustment revised
    outputs: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _Status:
    """A progress bar with FPS for files, a one-line live status for cameras."""

    def __init__(self, source, enabled: bool) -> None:
        self.live = getattr(source, "live", False)
        self.bar = None
        self.enabled = enabled
        if enabled and not self.live:
            from tqdm import tqdm

            total = len(source) if hasattr(source, "__len__") else None
            self.bar = tqdm(total=total, unit="frame", desc=getattr(source, "name", "frames"), dynamic_ncols=True)

    def update(self, stats: dict) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(fps=f"{stats['fps']:.1f}", mem=f"{stats['memory_mb']:.0f}MB", refresh=False)
        elif self.enabled:
            sys.stderr.write(f"\rframe {stats['frame']:6d}  {stats['fps']:5.1f} FPS  latency {stats['latency_ms']:6.1f} ms"
                             f"  memory {stats['memory_mb']:7.1f} MB  dropped {stats['dropped']:5d} ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")


def run_stream(
    source,
    reconstructor: Reconstructor,
    *,
    viewer=None,
    exporter=None,
    on_prediction: Callable[[FramePrediction, Frame], None] | None = None,
    on_revision: Callable[[FramePrediction], None] | None = None,
    progress: bool = True,
) -> RunSummary:
    summary = RunSummary()
    status = _Status(source, progress)
    start = last = time.perf_counter()
    fps = 0.0
    pending: deque[Frame] = deque()  # frames pushed but not yet predicted (window strategy)

    def deliver(pred: FramePrediction) -> None:
        nonlocal fps, last
        frame = pending.popleft()  # predictions come in frame order
        now = time.perf_counter()
        fps = 0.9 * fps + 0.1 / max(now - last, 1e-9) if summary.frames else 1.0 / max(now - last, 1e-9)
        last = now
        summary.frames += 1
        stats = {"frame": pred.index, "fps": fps, "latency_ms": pred.latency_s * 1e3,
                 "memory_mb": reconstructor.memory_bytes() / 2**20, "dropped": getattr(source, "dropped", 0)}  # fmt: skip
        if exporter is not None:
            exporter.add(pred, original_image=frame.image)
        if viewer is not None:
            viewer.log(pred, stats)
        if on_prediction is not None:
            on_prediction(pred, frame)
        status.update(stats)

    # Files and folders: decode + preprocess the next frame on a thread while this one runs.
    # Live cameras: no read-ahead (a prefetched frame would be older when its turn comes).
    frames = ((f, f.image) for f in source) if getattr(source, "live", False) else prefetch(
        source, lambda f: reconstructor.preprocess(f.image))  # fmt: skip

    def revise() -> None:
        start = time.perf_counter()
        revised = reconstructor.finish()
        if not revised:
            return
        summary.revised = len(revised)
        if progress:
            sys.stderr.write(f"final adjustment: {len(revised)} frames revised in {time.perf_counter() - start:.1f} s\n")
        if exporter is not None:
            exporter.revise(revised)
        if viewer is not None and hasattr(viewer, "revise"):
            viewer.revise(revised)
        if on_revision is not None:
            for pred in revised:
                on_revision(pred)

    ended = False  # the stream ended (or was stopped): the end-of-stream adjustment may run
    try:
        for frame, image in frames:
            pending.append(frame)
            for pred in reconstructor.push(image, timestamp=frame.timestamp):
                deliver(pred)
        for pred in reconstructor.flush():
            deliver(pred)
        ended = True
    except KeyboardInterrupt:
        summary.interrupted = ended = True
    finally:
        closer = getattr(frames, "close", None)
        if closer is not None:  # stop the prefetch thread before the source is closed under it
            closer()
        status.close()
        summary.seconds = time.perf_counter() - start
        summary.dropped = getattr(source, "dropped", 0)
        summary.disconnected = bool(getattr(source, "disconnected", False))
        close = getattr(source, "close", None)
        if close is not None:
            close()
        try:
            if ended:
                try:
                    revise()
                except KeyboardInterrupt:  # a second Ctrl-C: keep the streamed results
                    summary.interrupted = True
                except Exception as e:  # the exports of the streamed frames must still be written
                    log.warning("the end-of-stream adjustment failed (%s); the streamed results are kept", e)
            if exporter is not None:
                summary.outputs.update(exporter.finalize())
        finally:
            if viewer is not None:
                viewer.close()
    return summary
