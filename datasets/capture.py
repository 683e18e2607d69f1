"""OpenCV captures as frame sources: video files in file mode, webcams and streams in live mode.

`VideoSource` reads every frame (file mode, see `recon.datasets.sources` for the selection
options). `LiveSource` runs a reader thread that reads the device continuously and keeps only
the newest frame: when the consumer (inference) is slower than the camera, the frames it had no
time for are counted in `dropped` instead of queueing up, so latency stays one frame. The
consumer always gets the newest frame it has not seen yet, or waits for one. When reads fail
`disconnect_after` times in a row (camera unplugged, stream gone), or no frame arrives for
`stall_timeout_s`, iteration ends with `disconnected = True`; `close()` stops the thread.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .sources import FOLDER_FPS, FrameSource, SourceError, FrameSelector, to_rgb
from .types import Frame

OPEN_TIMEOUT_MS = 10_000  # network streams: give up opening / reading after this long


class Capture(Protocol):
    """What LiveSource needs from a capture (cv2.VideoCapture has it; tests inject fakes)."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...


def open_capture(target: str, *, network: bool = False) -> cv2.VideoCapture:
    """cv2.VideoCapture for a file or URL; SourceError if OpenCV cannot open it."""
    if network:  # time-outs, so an unreachable host fails instead of hanging
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
        cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    else:
        cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        cap.release()
        kind = "stream" if network else "video (unsupported or corrupt file)"
        raise SourceError(f"OpenCV cannot open {kind}: {target}")
    return cap


def open_camera(device: int | str) -> cv2.VideoCapture:
    """cv2.VideoCapture for a webcam index or device path; fails fast if there is none."""
    if isinstance(device, int) and sys.platform.startswith("linux") and not Path(f"/dev/video{device}").exists():
        raise SourceError(f"no webcam with index {device} (/dev/video{device} does not exist)")
    if isinstance(device, str) and not Path(device).exists():
        raise SourceError(f"no such camera device: {device}")
    cap = cv2.VideoCapture(device)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open webcam {device}")
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver from queueing stale frames
    return cap


class VideoSource(FrameSource):
    """File-mode source over a cv2.VideoCapture (a video file, or a camera/URL with live=False).

    Opening fails with SourceError when OpenCV cannot open the input or its first frame does
    not decode; a video that stops decoding part-way yields what decodes and warns.
    `wall_clock`: timestamp frames with time.time() instead of the container's time."""

    def __init__(self, open_fn: Callable[[], cv2.VideoCapture], *, name: str, stride: int = 1,
                 target_fps: float | None = None, start: int = 0, max_frames: int | None = None,
                 wall_clock: bool = False) -> None:  # fmt: skip
        cap = open_fn()
        fps = cap.get(cv2.CAP_PROP_FPS)
        super().__init__(name, fps if fps > 0 and math.isfinite(fps) else None)
        self._cap, self._wall_clock = cap, wall_clock
        self._frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._selector = FrameSelector(stride, target_fps, max_frames)
        self._read, self._last_time = 0, -math.inf
        for _ in range(start):
            if not cap.grab():
                self.close()
                raise SourceError(f"start={start} is past the end of video {name} ({self._read} frames)")
            self._read += 1
        # Decode the first frame now: a file that opens but does not decode fails here, not mid-run.
        self._first = self._next_kept()
        if self._first is None:
            self.close()
            raise SourceError(f"video {name} yields no frames (corrupt or truncated?)")

    def _grab(self) -> float | None:
        """Advance one frame; return its timestamp, or None at the end (or a decode failure)."""
        if not self._cap.grab():
            return None
        self._read += 1
        if self._wall_clock:
            return time.time()
        t = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if not (math.isfinite(t) and t > self._last_time):  # missing or broken container times
            t = max(self._last_time + 1.0 / (self.fps or FOLDER_FPS), 0.0)
        self._last_time = t
        return t

    def _next_kept(self) -> Frame | None:
        while not self._selector.done:
            t = self._grab()
            if t is None:
                if self._frame_count > 0 and self._read < self._frame_count - 1:
                    warnings.warn(f"video {self.name} stopped decoding at frame {self._read} of "
                                  f"{self._frame_count} (truncated or corrupt?)", stacklevel=4)  # fmt: skip
                return None
            if not self._selector.keep(t):
                continue
            ok, image = self._cap.retrieve()
            if not ok or image is None:
                warnings.warn(f"video {self.name}: frame {self._read - 1} does not decode; stopping", stacklevel=4)
                return None
            index = self._read - 1
            return Frame(image=to_rgb(image), timestamp=t, index=index, name=f"frame_{index:06d}")
        return None

    def _frames(self) -> Iterator[Frame]:
        frame, self._first = self._first, None
        while frame is not None:
            yield frame
            frame = self._next_kept()

    def _release(self) -> None:
        self._cap.release()


class LiveSource(FrameSource):
    """Live source: a reader thread keeps the newest frame; slow consumers drop, not queue.

    `capture_factory()` opens the device (SourceError, or a capture whose isOpened() is False,
    fails here, before any thread starts). `start` frames are discarded (camera warm-up) and
    `stride` keeps every k-th camera frame; neither counts as dropped. `target_fps` throttles
    the consumer to at most that rate (frames arriving meanwhile are dropped). `pace=True`
    reads no faster than the capture's own fps (a video file played as if it were a camera);
    then failing reads mean the end of the file, not a disconnect. Frame.index is the camera
    frame counter, Frame.timestamp the clock time (time.time()) when it was read.
    """

    live = True

    def __init__(self, capture_factory: Callable[[], Capture], *, name: str = "live", stride: int = 1,
                 target_fps: float | None = None, start: int = 0, max_frames: int | None = None,
                 pace: bool = False, disconnect_after: int = 5, retry_s: float = 0.05,
                 stall_timeout_s: float = 10.0) -> None:  # fmt: skip
        cap = capture_factory()
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {name}")
        pace_fps = cap.get(cv2.CAP_PROP_FPS) if pace else 0.0
        super().__init__(name, pace_fps if pace_fps > 0 else None)
        self.stride, self.start, self.max_frames = stride, start, max_frames
        self.period = None if target_fps is None else 1.0 / target_fps
        self.disconnect_after, self.retry_s, self.stall_timeout_s = disconnect_after, retry_s, stall_timeout_s
        self.produced = 0  # frames the camera delivered
        self.delivered = 0  # frames handed to the consumer
        self._cap, self._pace = cap, pace
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._latest: tuple[int, float, np.ndarray] | None = None  # (index, timestamp, BGR image)
        self._finished = False
        self._last_arrival = time.monotonic()
        self._last_yield: float | None = None
        self._thread = threading.Thread(target=self._read_loop, name=f"LiveSource({name})", daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        cap, failures, t0 = self._cap, 0, time.monotonic()
        try:
            while not self._stop.is_set():
                if self.fps and self._stop.wait(max(0.0, t0 + self.produced / self.fps - time.monotonic())):
                    break
                ok, image = cap.read()
                if not ok or image is None:
                    failures += 1
                    if failures >= self.disconnect_after:
                        self.disconnected = not self._pace
                        break
                    self._stop.wait(self.retry_s)
                    continue
                failures, stamp = 0, time.time()
                with self._cond:
                    index = self.produced
                    self.produced += 1
                    self._last_arrival = time.monotonic()
                    if index < self.start or (index - self.start) % self.stride:
                        continue
                    if self._latest is not None:
                        self.dropped += 1  # the consumer never saw it
                    self._latest = (index, stamp, image)
                    self._cond.notify_all()
        finally:
            cap.release()
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def __next__(self) -> Frame:
        if self._closed:
            raise StopIteration
        if self.period is not None and self._last_yield is not None:
            self._stop.wait(max(0.0, self._last_yield + self.period - time.monotonic()))
        stalled = False
        with self._cond:
            while self._latest is None and not self._finished and not self._stop.is_set():
                idle = time.monotonic() - self._last_arrival
                if idle >= self.stall_timeout_s:  # a read blocked inside the driver
                    self.disconnected = stalled = True
                    break
                self._cond.wait(min(0.1, self.stall_timeout_s - idle))
            item, self._latest = self._latest, None
        if item is None:
            self.close(timeout=0.0 if stalled else 2.0)  # a stuck read releases when it returns
            raise StopIteration
        self.delivered += 1
        self._last_yield = time.monotonic()
        if self.max_frames is not None and self.delivered >= self.max_frames:
            self.close()  # stop the camera now, not at the next call
        index, stamp, image = item
        return Frame(image=to_rgb(image), timestamp=stamp, index=index, name=f"frame_{index:06d}")

    def close(self, timeout: float = 2.0) -> None:
        """Stop the reader thread (waits up to `timeout` s for a read in progress) and release."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
