"""Where the log goes: a spawned native viewer, a local web viewer, an .rrd file (any combination).

The web viewer runs as a child process (`rerun --serve-web`) bound to 127.0.0.1 only, so that
`close()` really stops it and frees its ports; the SDK's in-process web server would listen on
every interface for the rest of the process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

import rerun as rr

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """An ephemeral TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def rerun_executable() -> str:
    """The `rerun` binary shipped with rerun-sdk (or $RERUN_CLI_PATH, as rerun's own launcher).

    Started directly rather than through `python -m rerun_cli`, whose wrapper process would leave
    the real server running when it is terminated.
    """
    import rerun_cli

    path = os.environ.get("RERUN_CLI_PATH") or os.path.join(os.path.dirname(rerun_cli.__file__), "rerun")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"rerun viewer executable not found: {path}")
    return path


def _check_port(port: int, what: str) -> int:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{what} must be an integer in [0, 65535], got {port!r}")
    return port or free_port()


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((LOCALHOST, port)) == 0


def spawn_native_viewer(recording: rr.RecordingStream, port: int = 9876, memory_limit: str = "75%") -> rr.GrpcSink:
    """Start the native viewer (or reuse one already listening on `port`); return a sink to it."""
    port = _check_port(port, "spawn port")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # Without this the viewer dies at once and the run goes on logging into a void.
        raise RuntimeError(
            "the native viewer needs a display (DISPLAY and WAYLAND_DISPLAY are unset); use the web viewer or an .rrd"
        )
    rr.spawn(
        port=port, connect=False, memory_limit=memory_limit, hide_welcome_screen=True, recording=recording,
        executable_path=rerun_executable(),  # the venv's bin/ need not be on PATH
    )  # fmt: skip
    return rr.GrpcSink(f"rerun+http://{LOCALHOST}:{port}/proxy")


class WebViewer:
    """A web viewer on http://127.0.0.1:`web_port` fed by a gRPC proxy on 127.0.0.1:`grpc_port`.

    Port 0 picks a free ephemeral port. The proxy keeps up to `memory_limit` of log data for
    browsers that connect late (oldest dropped first).
    """

    def __init__(
        self, web_port: int = 9090, grpc_port: int = 0, memory_limit: str = "1GiB", timeout_s: float = 30.0
    ) -> None:
        self.web_port = _check_port(web_port, "web port")
        self.grpc_port = _check_port(grpc_port, "web viewer gRPC port")
        for port in (self.web_port, self.grpc_port):
            if _accepts(port):
                raise OSError(f"port {port} on {LOCALHOST} is already in use; pick another web port")
        command = [
            rerun_executable(), "--serve-web", "--bind", LOCALHOST,
            "--port", str(self.grpc_port), "--web-viewer-port", str(self.web_port),
            "--server-memory-limit", memory_limit,
        ]  # fmt: skip
        self._log = tempfile.TemporaryFile()
        # RERUN_APP_ONLY: what rerun's own spawn sets for a child viewer (no analytics opt-in notice).
        env = {**os.environ, "RERUN_APP_ONLY": "true"}
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self._wait_until_ready(timeout_s)

    @property
    def grpc_url(self) -> str:
        return f"rerun+http://{LOCALHOST}:{self.grpc_port}/proxy"

    @property
    def url(self) -> str:
        """What to open in a browser: the viewer page, told which proxy to connect to."""
        return f"http://{LOCALHOST}:{self.web_port}/?url={quote(self.grpc_url, safe='')}"

    def sink(self) -> rr.GrpcSink:
        return rr.GrpcSink(self.grpc_url)

    def _wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not (_accepts(self.grpc_port) and _accepts(self.web_port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                reason = "exited" if self.process.poll() is not None else f"did not start within {timeout_s:g} s"
                output = self._output()
                self.close()
                raise RuntimeError(f"rerun web viewer on port {self.web_port} {reason}: {output}")
            time.sleep(0.05)

    def _output(self) -> str:
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def close(self) -> None:
        """Stop the server (ours: we started it) and wait for it to exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
