"""Screenshot of the live Rerun web viewer showing a reconstruction, taken headless (no GPU, no display).

    .venv/bin/python tools/screenshot_viewer.py                     # writes docs/images/viewer.png
    .venv/bin/python tools/screenshot_viewer.py --source synthetic:7 --model tiny --frames 24 \
        --out docs/images/viewer.png --size 1600x1000

1. Runs the model over the first --frames frames of --source as `recon run SOURCE --viewer web`
   does (recon.pipeline.run_stream into a RerunLogger with web=True), but keeps the web viewer
   open when the source is exhausted.
2. Opens the viewer page in headless Chromium (WebGL on SwiftShader, its software renderer),
   driven over the DevTools protocol on a pipe (--remote-debugging-pipe: no port, no websocket).
3. Waits until the viewer app has started, shows this run's recording, and neither its state nor
   the pixels changed for 3 polls in a row (a transient "failed to load examples" notice, as the
   page gets no internet, goes away meanwhile); writes the PNG atomically; closes both.
The blueprint and selection panels are collapsed and the time panel reduced to its play bar, so
the 3D view gets the room; --full-ui keeps the viewer's default layout.

Default source: the synthetic scene `synthetic:7`, or, while recon.datasets.synthetic cannot be
imported, the 17 TUM fr3/office frames in shared/data next to the repo. Without shipped weights
for --model the model is randomly initialised and the picture shows noise.

Needs the Debian package `chromium` (apt-get install -y chromium); the rerun viewer comes with the
venv's rerun-sdk. Takes 20-60 s on 2 shared CPU cores: the tiny model's 24 frames, then 15-40 s
for Chromium to load and render the viewer.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = "synthetic:7"
FALLBACK_FRAMES = REPO.parent / "shared/data/tum_fr3_office_17kf/rgb"
CHROMIUM = "chromium"
POLL_S = 1.0
SETTLED_POLLS = 3  # identical viewer state and pixels this many polls in a row

# Runs in the page. The viewer's index.html sets window._handle once the wasm app has started;
# viewer_state() is the app state as protobuf bytes, which names the active recording.
PAGE_STATE_JS = """(() => {
  const h = window._handle, center = document.getElementById("center_text");
  if (!h) return {phase: "loading", text: center ? center.innerText.trim() : ""};
  if (h.has_panicked()) return {phase: "panic", text: h.panic_message()};
  let text = "";
  for (const b of h.viewer_state()) text += String.fromCharCode(b);
  return {phase: "started", text, shows: text.includes(%s)};
})()"""


class ScreenshotError(Exception):
    """Something the screenshot needs is missing or failed; the message is one line."""


# -- the reconstruction, logged to a web viewer that stays open ------------------------------------
class _KeepOpen:
    """Passes predictions to the logger but ignores run_stream's close(): the viewer must outlive it."""

    def __init__(self, logger) -> None:
        self.logger = logger

    def log(self, pred, stats=None) -> None:
        self.logger.log(pred, stats)

    def close(self) -> None:
        pass


def open_frames(spec: str | None, frames: int):
    """The source `spec` (default synthetic:7, or the TUM frames while synthetic scenes are missing)."""
    from recon.datasets.sources import SourceError, open_source

    if spec is not None:
        return open_source(spec, max_frames=frames), spec
    try:
        return open_source(DEFAULT_SOURCE, max_frames=frames), DEFAULT_SOURCE
    except SourceError as error:
        print(f"screenshot_viewer: {error}; using {FALLBACK_FRAMES}", file=sys.stderr)
        return open_source(FALLBACK_FRAMES, max_frames=frames), str(FALLBACK_FRAMES)


def screen_blueprint(full_ui: bool):
    """The logger's layout, with the side panels collapsed unless `full_ui`."""
    import rerun.blueprint as rrb

    from recon.viewer.rerun_logger import default_blueprint

    layout = default_blueprint()
    if full_ui:
        return layout
    return rrb.Blueprint(
        layout.root_container,
        rrb.BlueprintPanel(state="collapsed"),
        rrb.SelectionPanel(state="collapsed"),
        rrb.TimePanel(state="collapsed"),
    )


def reconstruct_into_viewer(args):
    """Run the stream into a web-viewer RerunLogger; return (logger, summary, source name, weights)."""
    import rerun as rr

    from recon.checkpoint import load_model
    from recon.device import resolve_device
    from recon.pipeline import run_stream
    from recon.session import Reconstructor
    from recon.viewer.rerun_logger import RerunLogger

    source, name = open_frames(args.source, args.frames)
    try:
        device = resolve_device(args.device)
        model, weights = load_model(args.model, device=device)
        rec = Reconstructor(model, device=device)
        # map_every=1: the point map is otherwise only refreshed every 10 frames and on close().
        logger = RerunLogger(web=True, web_port=0, conf_threshold=args.conf_threshold, map_every=1)
    except BaseException:
        source.close()
        raise
    try:
        rr.send_blueprint(screen_blueprint(args.full_ui), make_active=True, recording=logger.recording)
        summary = run_stream(source, rec, viewer=_KeepOpen(logger), progress=False)
        if summary.interrupted:  # run_stream stops quietly on Ctrl-C; here it ends the tool
            raise KeyboardInterrupt
        if summary.frames == 0:
            raise ScreenshotError(f"source {name} gave no frames")
        logger.recording.flush(timeout_sec=30.0)
    except BaseException:
        logger.close()
        raise
    return logger, summary, name, weights


# -- headless Chromium over the DevTools protocol ----------------------------------------------------
def find_chromium() -> str:
    """Path of the chromium executable; a one-line error naming the Debian package when absent."""
    executable = shutil.which(CHROMIUM)
    if executable is None:
        raise ScreenshotError("chromium not found on PATH: install the Debian package chromium "
                              "(apt-get install -y chromium)")  # fmt: skip
    return executable


class Chromium:
    """Headless Chromium speaking the DevTools protocol over fds 3 (commands in) and 4 (replies out):
    NUL-terminated JSON messages, as --remote-debugging-pipe defines them."""

    def __init__(self, width: int, height: int) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="screenshot-viewer-")
        command = [
            find_chromium(), "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", "--disable-breakpad", "--disable-crash-reporter",
            # Only 127.0.0.1 resolves: the page's web-font and example-list requests fail at once
            # instead of hanging behind a firewall, and the picture is the same with or without internet.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={self._profile.name}",
            f"--window-size={width},{height}", "--remote-debugging-pipe", "about:blank",
        ]  # fmt: skip
        commands_r, self._commands = os.pipe()
        self._replies, replies_w = os.pipe()
        # Above 4, so that moving them onto 3 and 4 in the child cannot overwrite one with the other.
        child_r, child_w = fcntl.fcntl(commands_r, fcntl.F_DUPFD, 10), fcntl.fcntl(replies_w, fcntl.F_DUPFD, 10)
        os.close(commands_r), os.close(replies_w)
        self._log = tempfile.TemporaryFile()
        # The crash handler keeps its database under $XDG_CONFIG_HOME even with --disable-breakpad.
        env = {**os.environ, "XDG_CONFIG_HOME": self._profile.name, "XDG_CACHE_HOME": self._profile.name}
        try:
            # Its own session: close() can kill the whole browser (zygote, GPU, renderers) at once.
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, close_fds=False, env=env,
                preexec_fn=lambda: (os.dup2(child_r, 3), os.dup2(child_w, 4)), start_new_session=True,
            )  # fmt: skip
        except BaseException:
            os.close(self._commands), os.close(self._replies)
            self._log.close()
            self._profile.cleanup()
            raise
        finally:
            os.close(child_r), os.close(child_w)
        self._buffer, self._next_id = b"", 0

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout_s: float = 60.0):
        """Send one command and return its result (events in between are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                    raise ScreenshotError(f"chromium did not answer {method} within {timeout_s:g} s")
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise ScreenshotError(f"chromium exited during {method}: {self._last_log_line()}")
                self._buffer += chunk
            raw, _, self._buffer = self._buffer.partition(b"\0")
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ScreenshotError(f"chromium {method} failed: {reply['error'].get('message')}")
                return reply["result"]

    def open_page(self, url: str, width: int, height: int) -> str:
        """Open `url` in a new tab of the given viewport size; return its DevTools session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        viewport = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", viewport, session)
        self.call("Page.navigate", {"url": url}, session)
        return session

    def _last_log_line(self) -> str:
        self._log.seek(0)
        lines = [line for line in self._log.read().decode(errors="replace").splitlines() if "dbus" not in line]
        return lines[-1].strip() if lines else "(no output)"

    def close(self) -> None:
        """Ask the browser to quit, then kill whatever is left of its process group (ours)."""
        if self.process.poll() is None:
            try:
                self.call("Browser.close", timeout_s=5.0)
                self.process.wait(timeout=10)
            except (ScreenshotError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # helpers that outlived the browser
            os.killpg(self.process.pid, signal.SIGKILL)
        os.close(self._commands), os.close(self._replies)
        self._log.close()
        self._profile.cleanup()


def capture_when_settled(browser: Chromium, session: str, recording_id: str, timeout_s: float) -> bytes:
    """PNG bytes of the page once the viewer shows `recording_id` and has stopped changing."""
    expression = PAGE_STATE_JS % json.dumps(recording_id)
    deadline = time.monotonic() + timeout_s
    previous, same = None, 0
    phase = "loading"
    while time.monotonic() < deadline:
        state = browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        value = state["result"].get("value") or {"phase": "loading", "text": ""}
        phase = value["phase"]
        if phase == "panic":
            raise ScreenshotError(f"the web viewer crashed: {value['text'].splitlines()[0]}")
        if phase == "loading" and "error" in value["text"].lower():
            raise ScreenshotError(f"the web viewer failed to start: {' '.join(value['text'].split())}")
        if phase == "started" and value["shows"]:
            png = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"}, session)["data"])
            key = hashlib.sha256(value["text"].encode("latin-1") + png).digest()
            same = same + 1 if key == previous else 1
            previous = key
            if same >= SETTLED_POLLS:
                return png
        time.sleep(POLL_S)
    what = "did not settle" if phase == "started" else f"was still {phase}"
    raise ScreenshotError(f"the web viewer {what} after {timeout_s:g} s")


def check_png(png: bytes, width: int, height: int) -> None:
    """Refuse a screenshot of the wrong size or a nearly uniform one (a blank or loading page)."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None or image.shape != (height, width):
        raise ScreenshotError(f"screenshot is {None if image is None else image.shape[::-1]}, expected {width}x{height}")
    if float(image.std()) < 5.0:
        raise ScreenshotError("screenshot is blank (nearly uniform)")


# -- command line ----------------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and 320 <= int(width) <= 8192 and 240 <= int(height) <= 8192):
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT within 320x240..8192x8192, got {text!r}")
    return int(width), int(height)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", help=f"anything `recon run` accepts (default: {DEFAULT_SOURCE})")
    p.add_argument("--model", default="tiny", help="preset or checkpoint, as for `recon run` (default: tiny)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument("--frames", type=int, default=24, help="frames to reconstruct (default: 24)")
    p.add_argument("--conf-threshold", type=float, default=None, help="as for `recon run` (default: none)")
    p.add_argument("--out", default=str(REPO / "docs/images/viewer.png"), help="PNG path (default: docs/images/viewer.png)")
    p.add_argument("--size", type=parse_size, default=(1600, 1000), help="WIDTHxHEIGHT in pixels (default: 1600x1000)")
    p.add_argument("--full-ui", action="store_true", help="keep the viewer's side panels open")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the viewer (default: 180)")
    return p


def run(args) -> None:
    width, height = args.size
    out = Path(args.out)
    if out.suffix.lower() != ".png" or out.is_dir():
        raise ScreenshotError(f"--out must be a .png file path, got {out}")
    if args.frames < 1:
        raise ScreenshotError(f"--frames must be >= 1, got {args.frames}")
    find_chromium()  # before the reconstruction, not after
    from recon.atomic import write_bytes_atomic

    start = time.perf_counter()
    logger, summary, name, weights = reconstruct_into_viewer(args)
    try:
        reconstructed = time.perf_counter()
        print(f"{summary.frames} frames of {name} reconstructed in {reconstructed - start:.0f} s "
              f"(model {args.model}, {'weights ' + str(weights) if weights else 'random weights'}); "
              f"web viewer: {logger.url}", flush=True)  # fmt: skip
        browser = Chromium(width, height)
        try:
            session = browser.open_page(logger.url, width, height)
            png = capture_when_settled(browser, session, logger.recording.get_recording_id(), args.timeout)
        finally:
            browser.close()
        check_png(png, width, height)
        write_bytes_atomic(out, png)
    finally:
        logger.close()
    print(f"wrote {out} ({width}x{height}) in {time.perf_counter() - start:.0f} s "
          f"(viewer page: {time.perf_counter() - reconstructed:.0f} s)")  # fmt: skip


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that the viewer and Chromium child processes are stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    from recon.checkpoint import CheckpointError
    from recon.datasets.sources import SourceError

    try:
        run(args)
    except KeyboardInterrupt:
        print("screenshot_viewer: interrupted", file=sys.stderr)
        return 130
    except (ScreenshotError, CheckpointError, SourceError, OSError, ValueError) as error:
        print(f"screenshot_viewer: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
