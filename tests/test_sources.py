"""Frame sources: video files, image folders, live cameras (with a fake capture), bad input."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from recon.datasets.capture import LiveSource
from recon.datasets.sources import FOLDER_FPS, SourceError, open_source

TUM_RGB = Path(__file__).resolve().parents[2] / "shared/data/tum_fr3_office_17kf/rgb"
SIZE = (160, 120)  # (width, height) of the test videos
FPS = 10.0


def _tum_images() -> list[Path]:
    if not TUM_RGB.is_dir():
        pytest.skip(f"test data missing: {TUM_RGB}")
    return sorted(TUM_RGB.glob("*.png"))


def _encode(path: Path, images_bgr: list[np.ndarray], fourcc: str) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, SIZE)
    assert writer.isOpened(), f"cannot encode {fourcc} on this OpenCV build"
    for image in images_bgr:
        writer.write(image)
    writer.release()
    return path


@pytest.fixture(scope="module")
def tum_bgr() -> list[np.ndarray]:
    return [cv2.resize(cv2.imread(str(p)), SIZE, interpolation=cv2.INTER_AREA) for p in _tum_images()]


@pytest.fixture(scope="module")
def mp4(tmp_path_factory, tum_bgr) -> Path:
    return _encode(tmp_path_factory.mktemp("video") / "tum.mp4", tum_bgr, "mp4v")


def _indices(spec, **options) -> list[int]:
    with open_source(spec, **options) as source:
        return [frame.index for frame in source]


# --- video files --------------------------------------------------------------------------


def test_video_yields_every_frame_in_rgb_with_container_timestamps(mp4, tum_bgr):
    with open_source(mp4) as source:
        frames = list(source)
    assert not source.live and source.dropped == 0
    assert len(frames) == len(tum_bgr)
    for frame, bgr in zip(frames, tum_bgr, strict=True):
        assert frame.image.shape == (SIZE[1], SIZE[0], 3) and frame.image.dtype == np.uint8
        rgb = bgr[:, :, ::-1].astype(np.float64)
        np.testing.assert_allclose(frame.image.reshape(-1, 3).mean(0), rgb.reshape(-1, 3).mean(0), atol=5)
        # Channel means can be alike; pixel by pixel the swapped order is far off.
        decoded = frame.image.astype(np.float64)
        assert np.abs(decoded - rgb).mean() < 0.5 * np.abs(decoded - bgr).mean()
    stamps = np.array([f.timestamp for f in frames])
    assert np.all(np.diff(stamps) > 0)
    np.testing.assert_allclose(stamps, np.arange(len(frames)) / FPS, atol=2e-3)
    assert [f.index for f in frames] == list(range(len(frames)))


def test_video_selection_options(mp4, tum_bgr):
    n = len(tum_bgr)
    assert _indices(mp4, stride=3) == list(range(0, n, 3))
    assert _indices(mp4, start=5) == list(range(5, n))
    assert _indices(mp4, max_frames=4) == list(range(4))
    assert _indices(mp4, start=1, stride=2, max_frames=3) == [1, 3, 5]
    # target_fps subsamples by container time: half the rate keeps every other frame.
    assert _indices(mp4, target_fps=FPS / 2) == list(range(0, n, 2))
    assert _indices(mp4, target_fps=FPS / 2, stride=2) == list(range(0, n, 4))
    assert _indices(mp4, target_fps=4 * FPS) == list(range(n))  # faster than the video: all frames
    with pytest.raises(SourceError, match="start=99"):
        open_source(mp4, start=99)
    with pytest.raises(ValueError, match="stride"):
        open_source(mp4, stride=0)


def test_video_played_live_keeps_rgb_and_paces(mp4, tum_bgr):
    with open_source(mp4, live=True, max_frames=3) as source:
        frames = list(source)
    assert source.live and [f.index for f in frames] == [0, 1, 2]
    expected = tum_bgr[0][:, :, ::-1].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(frames[0].image.reshape(-1, 3).mean(0), expected, atol=5)
    assert frames[2].timestamp - frames[0].timestamp > 1.5 / FPS  # read at the file's rate


def test_corrupt_and_truncated_videos(tmp_path, mp4, tum_bgr):
    corrupt = tmp_path / "random.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(20_000))
    with pytest.raises(SourceError, match="random.mp4"):
        open_source(corrupt)
    # An mp4 cut in half loses its index at the end: nothing decodes, or fewer frames do.
    half = tmp_path / "half.mp4"
    half.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    try:
        assert len(_indices(half)) < len(tum_bgr)
    except SourceError as exc:
        assert "half.mp4" in str(exc)
    # An AVI cut in half still opens: the frames that decode come out, then a warning.
    avi = _encode(tmp_path / "full.avi", tum_bgr, "MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    with pytest.warns(UserWarning, match="cut.avi stopped decoding"):
        indices = _indices(cut)
    assert 0 < len(indices) < len(tum_bgr) and indices == list(range(len(indices)))


# --- image folders ------------------------------------------------------------------------


def test_folder_natural_order_colours_and_one_warning_for_other_files(tmp_path):
    red_bgr = np.zeros((6, 8, 3), np.uint8)
    red_bgr[..., 2] = 255
    for name in ("frame10.png", "frame2.png", "frame1.png"):
        cv2.imwrite(str(tmp_path / name), red_bgr)
    cv2.imwrite(str(tmp_path / "frame3.png"), np.full((6, 8), 90, np.uint8))  # grayscale
    cv2.imwrite(str(tmp_path / "frame4.png"), np.dstack([red_bgr, np.full((6, 8), 255, np.uint8)]))  # BGRA
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "meta.json").write_text("{}")
    with pytest.warns(UserWarning) as record:
        frames = list(open_source(tmp_path))
    messages = [str(w.message) for w in record if "non-image" in str(w.message)]
    assert len(messages) == 1 and "notes.txt" in messages[0] and "meta.json" in messages[0]
    assert [f.name for f in frames] == ["frame1.png", "frame2.png", "frame3.png", "frame4.png", "frame10.png"]
    assert [f.index for f in frames] == list(range(5))
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(5) / FOLDER_FPS)
    for frame in frames:
        assert frame.image.shape == (6, 8, 3)
    assert frames[0].image[0, 0].tolist() == [255, 0, 0]  # RGB
    assert frames[2].image[0, 0].tolist() == [90, 90, 90]
    assert frames[3].image[0, 0].tolist() == [255, 0, 0]


def test_folder_timestamps_from_numeric_names_and_selection(tmp_path):
    images = _tum_images()
    with open_source(TUM_RGB, max_frames=3) as source:
        frames = list(source)
    assert [f.timestamp for f in frames] == [float(p.stem) for p in images[:3]]
    assert _indices(TUM_RGB, start=1, stride=2) == list(range(1, len(images), 2))
    # Numeric names at 20 Hz ("0.00.png", "0.05.png", ...) subsampled to 10 Hz: every other one.
    pixel = np.zeros((2, 2, 3), np.uint8)
    for i in range(10):
        cv2.imwrite(str(tmp_path / f"{i * 0.05:.2f}.png"), pixel)
    assert _indices(tmp_path, target_fps=10) == list(range(0, 10, 2))


def test_missing_empty_and_unknown_inputs(tmp_path):
    with pytest.raises(SourceError, match="nowhere/video.mp4"):
        open_source(tmp_path / "nowhere/video.mp4")
    with pytest.raises(SourceError, match="not-a-source"):
        open_source("not-a-source")
    with pytest.raises(SourceError, match=str(tmp_path)):
        open_source(tmp_path)  # empty folder
    (tmp_path / "readme.md").write_text("no images here")
    with pytest.warns(UserWarning, match="readme.md"), pytest.raises(SourceError, match="no images"):
        open_source(tmp_path)
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SourceError, match="live"):
        open_source(folder, live=True)


def test_synthetic_source():
    with pytest.raises(SourceError, match="synthetic:abc"):
        open_source("synthetic:abc")
    try:
        from recon.datasets.synthetic import SyntheticSequence  # noqa: F401
    except ImportError:
        pytest.skip("recon.datasets.synthetic is not written yet")
    with open_source("synthetic:3", max_frames=4, stride=2) as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 2, 4, 6]
    assert all(f.image.ndim == 3 and f.image.shape[2] == 3 and f.extrinsic is not None for f in frames)


# --- live sources (fake camera) -----------------------------------------------------------


class FakeCamera:
    """`n` frames at `fps` (frame k: blue = k % 256, red = 7, in BGR), then every read fails."""

    def __init__(self, n: int, fps: float = 200.0, opened: bool = True, block: threading.Event | None = None):
        self.n, self.fps, self.opened, self.block = n, fps, opened, block
        self.produced, self.released, self._t0 = 0, False, None

    def isOpened(self) -> bool:
        return self.opened

    def read(self):
        if self.block is not None:
            self.block.wait()
        if self.produced >= self.n:
            return False, None
        self._t0 = self._t0 or time.monotonic()
        time.sleep(max(0.0, self._t0 + (self.produced + 1) / self.fps - time.monotonic()))
        image = np.zeros((4, 6, 3), np.uint8)
        image[..., 0], image[..., 2] = self.produced % 256, 7
        self.produced += 1
        return True, image

    def release(self) -> None:
        self.released = True


def test_live_keeps_newest_frame_counts_drops_and_ends_on_disconnect():
    camera = FakeCamera(n=60)
    received = []
    with LiveSource(lambda: camera, name="fake", disconnect_after=3, retry_s=0.01) as source:
        for frame in source:
            received.append(frame.index)
            assert frame.image[0, 0].tolist() == [7, 0, frame.index % 256]  # RGB
            time.sleep(0.02)  # inference slower than the camera
    assert source.disconnected and camera.released
    assert all(b > a for a, b in zip(received, received[1:], strict=False))
    assert received[-1] == camera.produced - 1  # the last frame still reaches the consumer
    assert source.dropped > 0 and max(np.diff(received)) > 1
    assert len(received) + source.dropped == received[-1] + 1


def test_live_throttle_max_frames_and_close():
    camera = FakeCamera(n=10**6)
    source = LiveSource(lambda: camera, target_fps=25, max_frames=5)
    times = []
    for _ in source:
        times.append(time.monotonic())
    assert len(times) == 5 and min(np.diff(times)) > 0.035 and source.dropped > 0
    assert camera.released and not source.disconnected  # max_frames closed it
    camera = FakeCamera(n=10**6)
    with LiveSource(lambda: camera) as source:
        next(source), next(source)
    assert camera.released
    with pytest.raises(StopIteration):
        next(source)


def test_live_stall_and_unopened_camera_fail_cleanly():
    block = threading.Event()
    camera = FakeCamera(n=0, block=block)
    start = time.monotonic()
    with LiveSource(lambda: camera, stall_timeout_s=0.3) as source:
        assert list(source) == []
    assert source.disconnected and time.monotonic() - start < 3
    block.set()
    closed = FakeCamera(n=5, opened=False)
    with pytest.raises(SourceError, match="fake cam"):
        LiveSource(lambda: closed, name="fake cam")
    assert closed.released


def test_missing_webcam_fails_fast():
    outcome = []

    def attempt():
        try:
            open_source("97").close()
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "opening a missing webcam hung"
    assert isinstance(outcome[0], SourceError) and "97" in str(outcome[0])
