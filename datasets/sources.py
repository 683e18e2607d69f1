"""Frame sources: webcams, network streams, video files, image folders and synthetic scenes.

`open_source(spec)` returns a `FrameSource`: an iterator of `Frame`s (image [H, W, 3] RGB,
uint8 for 8-bit inputs) that is also a context manager (`close()` releases the device/file).

File mode (video files, image folders, synthetic scenes) yields every selected frame; nothing
is dropped. Selection is applied in this order:
  1. `start`: skip that many *frames* of the source (frames for videos too, not seconds);
  2. `target_fps`: keep a frame each time another 1/target_fps seconds of source time passed;
  3. `stride`: keep every k-th of the frames left;
  4. `max_frames`: stop after that many frames.
`Frame.index` is the frame's position in the source (video frame number, rank of the file
in the sorted folder, camera frame counter), so gaps show what was skipped or dropped.

Timestamps (seconds): the container's (CAP_PROP_POS_MSEC) for videos; the file names for
folders when every name is a number (TUM style `1341847980.722988.png`), else index / 30 fps;
the clock (time.time()) for webcams and streams.

Live mode (the default for webcams and URLs; `LiveSource` in `recon.datasets.capture`) drops
frames when the consumer is slower than the camera and counts them in `source.dropped`; there
`start` discards the first frames (camera warm-up) and `target_fps` throttles the consumer.
Every bad input raises `SourceError` (or ValueError for a bad option) with a one-line message
naming the input.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from .readers.common import load_rgb, timestamps_from_names
from .readers.folder import IMAGE_EXTENSIONS, list_images, natural_key
from .types import Frame, Sequence

FOLDER_FPS = 30.0  # assumed rate of a folder whose file names are not timestamps
SYNTHETIC_FRAMES = 120  # length of a synthetic scene when max_frames does not say
_TIME_TOLERANCE = 1e-4  # seconds; container timestamps are rounded to about a millisecond


class SourceError(Exception):
    """A frame source cannot be opened or read; the message names the input."""


def to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV image ([H, W] gray, [H, W, 1], [H, W, 3] BGR or [H, W, 4] BGRA) -> [H, W, 3] RGB.

    The one place where OpenCV's channel order is undone; the dtype is kept."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class FrameSource:
    """An iterator of `Frame`s with `close()` and context-manager support.

    `live`: frames may be dropped (`dropped` counts them); `disconnected`: a live source
    ended because the device stopped delivering frames; `fps`: nominal rate, if known.
    """

    live: bool = False

    def __init__(self, name: str, fps: float | None = None) -> None:
        self.name = name
        self.fps = fps
        self.dropped = 0
        self.disconnected = False
        self._closed = False
        self._gen: Iterator[Frame] | None = None

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        if self._closed:
            raise StopIteration
        if self._gen is None:
            self._gen = self._frames()
        try:
            return next(self._gen)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._gen is not None:
                self._gen.close()
            self._release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameSelector:
    """Applies target_fps, stride and max_frames, frame by frame, to the frames after `start`."""

    def __init__(self, stride: int, target_fps: float | None, max_frames: int | None) -> None:
        self.stride, self.max_frames = stride, max_frames
        self.period = None if target_fps is None else 1.0 / target_fps
        self._due: float | None = None  # source time at which the next frame is wanted
        self._candidates = 0
        self.kept = 0

    @property
    def done(self) -> bool:
        return self.max_frames is not None and self.kept >= self.max_frames

    def keep(self, timestamp: float | None) -> bool:
        if self.period is not None:
            if self._due is not None and timestamp < self._due - _TIME_TOLERANCE:
                return False
            # Next slot on the grid after this frame, so a gap in the source gives no burst.
            due = timestamp if self._due is None else self._due
            self._due = due + self.period * max(1, math.floor((timestamp + _TIME_TOLERANCE - due) / self.period) + 1)
        self._candidates += 1
        if (self._candidates - 1) % self.stride:
            return False
        self.kept += 1
        return True


# --- image folders ---------------------------------------------------------------------


class ImageFolder(Sequence):
    """The images of a folder (or one image file): natural order ("2.png" < "10.png"), or time
    order when every file name is a timestamp. Timestamps from the names, else index / fps."""

    def __init__(self, path: str | os.PathLike, fps: float = FOLDER_FPS) -> None:
        path = Path(path)
        self.name = path.name
        try:
            paths = list_images(path) if path.is_dir() else [path]
        except (OSError, ValueError) as exc:  # the shared helper's errors, as this module's
            raise SourceError(str(exc)) from None
        stamps = timestamps_from_names(paths)
        if stamps is None:
            self.paths, self.timestamps = paths, [i / fps for i in range(len(paths))]
        else:  # numeric names: time order, which natural order is not for "1.5" vs "1.25"
            order = sorted(range(len(paths)), key=lambda i: (stamps[i], natural_key(paths[i].name)))
            self.paths, self.timestamps = [paths[i] for i in order], [float(stamps[i]) for i in order]

    def __len__(self) -> int:
        return len(self.paths)

    def timestamp(self, i: int) -> float:
        return self.timestamps[i]

    def frame(self, i: int) -> Frame:
        path = self.paths[i]
        try:
            image = load_rgb(path)
        except (OSError, ValueError) as exc:
            raise SourceError(str(exc)) from None
        return Frame(image=image, timestamp=self.timestamps[i], index=i, name=path.name, extras={"path": str(path)})


class SequenceSource(FrameSource):
    """File-mode source over any `Sequence` (image folder, synthetic scene, dataset reader).

    A frame that fails to decode is skipped with a warning."""

    def __init__(self, sequence: Sequence, *, stride: int = 1, target_fps: float | None = None, start: int = 0,
                 max_frames: int | None = None, name: str | None = None) -> None:  # fmt: skip
        super().__init__(name or getattr(sequence, "name", "sequence"))
        if len(sequence) == 0:
            raise SourceError(f"{self.name}: the sequence has no frames")
        if start >= len(sequence):
            raise SourceError(f"start={start} is past the end of {self.name} ({len(sequence)} frames)")
        self.sequence, self.start = sequence, start
        self._selector = FrameSelector(stride, target_fps, max_frames)

    def _frames(self) -> Iterator[Frame]:
        for i in range(self.start, len(self.sequence)):
            if self._selector.done:
                return
            try:
                frame = self._frame_if_kept(i)
            except SourceError as exc:
                warnings.warn(f"skipping frame {i} of {self.name}: {exc}", stacklevel=3)
                continue
            if frame is not None:
                yield frame

    def _frame_if_kept(self, i: int) -> Frame | None:
        seq, sel = self.sequence, self._selector
        if sel.period is None:
            return seq.frame(i) if sel.keep(None) else None
        timestamp_of = getattr(seq, "timestamp", None)  # lets target_fps skip without decoding
        if timestamp_of is not None:
            return seq.frame(i) if sel.keep(timestamp_of(i)) else None
        frame = seq.frame(i)
        return frame if sel.keep(frame.timestamp) else None


# --- choosing a source from a string -----------------------------------------------------


def open_source(spec: str | os.PathLike, *, stride: int = 1, target_fps: float | None = None, start: int = 0,
                max_frames: int | None = None, live: bool | None = None) -> FrameSource:  # fmt: skip
    """Open a frame source from a string (see the module doc for the options).

    `spec`: a webcam index ("0") or device path ("/dev/video0"); a URL OpenCV can open
    (rtsp://, http(s)://, udp://, ...); a video file; an image folder or a single image;
    "synthetic" or "synthetic:SEED". `live`: None = live for webcams and URLs, file mode for
    the rest; True also plays a video file live at its own rate; False reads every frame of a
    camera or stream (no dropping, timestamps from the clock).
    """
    from . import capture  # imports this module, so not at the top

    _check_options(stride, target_fps, start, max_frames)
    options = dict(stride=stride, target_fps=target_fps, start=start, max_frames=max_frames)
    text = os.fspath(spec).strip()
    if text == "synthetic" or text.startswith("synthetic:"):
        _refuse_live(live, text)
        return SequenceSource(_synthetic_sequence(text, options), name=text, **options)
    camera = int(text) if text.isdigit() else text if text.startswith("/dev/") else None
    network = "://" in text
    if camera is not None or network:
        def opener():
            return capture.open_camera(camera) if camera is not None else capture.open_capture(text, network=True)
        name = f"webcam {text}" if camera is not None else text
        if live is False:
            return capture.VideoSource(opener, name=name, wall_clock=True, **options)
        return capture.LiveSource(opener, name=name, **options)
    path = Path(text).expanduser()
    if not path.exists():
        looks_like_path = os.sep in text or "/" in text or bool(Path(text).suffix)
        if looks_like_path:
            raise SourceError(f"no such file or folder: {text}")
        raise SourceError(f"unknown source {text!r}: not a webcam index, URL, existing file or folder, "
                          "or 'synthetic[:SEED]'")  # fmt: skip
    if path.is_dir() or path.suffix.lower() in IMAGE_EXTENSIONS:
        _refuse_live(live, text)
        return SequenceSource(ImageFolder(path), name=str(path), **options)
    if live:
        return capture.LiveSource(lambda: capture.open_capture(str(path)), name=str(path), pace=True, **options)
    return capture.VideoSource(lambda: capture.open_capture(str(path)), name=str(path), **options)


def _check_options(stride: int, target_fps: float | None, start: int, max_frames: int | None) -> None:
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if target_fps is not None and not (isinstance(target_fps, (int, float)) and target_fps > 0):
        raise ValueError(f"target_fps must be > 0, got {target_fps!r}")
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an integer >= 0 (frames), got {start!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be an integer >= 1, got {max_frames!r}")


def _refuse_live(live: bool | None, text: str) -> None:
    if live:
        raise SourceError(f"live mode needs a webcam, stream or video file, not {text}")


def _synthetic_sequence(text: str, options: dict) -> Sequence:
    seed = text.partition(":")[2] or "0"
    if not seed.isdigit():
        raise SourceError(f"bad synthetic seed in {text!r}: expected synthetic:INTEGER")
    try:  # written separately; imported here so the other sources work without it
        from .synthetic import SyntheticSequence
    except ImportError as exc:
        raise SourceError(f"synthetic scenes are not available: {exc}") from None
    start, stride, max_frames = options["start"], options["stride"], options["max_frames"]
    fixed_length = max_frames is not None and options["target_fps"] is None
    num_frames = start + stride * max_frames if fixed_length else max(SYNTHETIC_FRAMES, start + 1)
    return SyntheticSequence(seed=int(seed), num_frames=num_frames)


def __getattr__(name: str):
    # The cv2 capture sources live in .capture (which imports this module); re-exported lazily.
    if name in ("VideoSource", "LiveSource", "open_capture", "open_camera"):
        from . import capture

        return getattr(capture, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
