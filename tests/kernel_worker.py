"""Run Triton kernel checks where the kernels can run: on the GPU, or on the CPU under the
Triton interpreter in a worker process.

TRITON_INTERPRET=1 must be set before triton is first imported in a process (triton.language's
own helpers are decorated at import), and a pytest process cannot know whether something
imported triton before. So on a machine without CUDA the checks run in one worker process
started with the variable set; with CUDA they run in the test process on the GPU.

    kernel_check = kernel_worker_fixture("tests.test_qknorm_rope_kernel")
    def test_x(kernel_check): kernel_check("_check_something", arg1, arg2)

A check is a module-level function of the named test module; it raises on failure.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

_WORKER = r"""
import importlib, os, pickle, sys, traceback
assert os.environ.get("TRITON_INTERPRET") == "1"
requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)  # the pipe carries replies only: anything printed goes to stderr
checks = importlib.import_module(sys.argv[1])
while True:
    try:
        name, args = pickle.load(requests)
    except EOFError:
        break
    try:
        getattr(checks, name)(*args)
        reply = None
    except BaseException:
        reply = traceback.format_exc()
    pickle.dump(reply, replies)
    replies.flush()
"""


def kernel_worker_fixture(module: str):
    """A module-scoped pytest fixture: `kernel_check(name, *args)` runs `module.name(*args)`."""

    @pytest.fixture(scope="module")
    def kernel_check():
        if importlib.util.find_spec("triton") is None:  # find_spec: do not import it here
            pytest.skip("triton is not installed")
        if DEVICE == "cuda":
            checks = importlib.import_module(module)
            yield lambda name, *args: getattr(checks, name)(*args)
            return
        env = dict(os.environ, TRITON_INTERPRET="1", PYTHONDONTWRITEBYTECODE="1")
        with tempfile.TemporaryFile() as log:
            worker = subprocess.Popen([sys.executable, "-c", _WORKER, module], cwd=ROOT, env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)  # fmt: skip

            def call(name, *args):
                try:
                    pickle.dump((name, args), worker.stdin)
                    worker.stdin.flush()
                    reply = pickle.load(worker.stdout)
                except (EOFError, BrokenPipeError):
                    log.seek(0)
                    pytest.fail("interpreter worker died:\n" + log.read().decode(errors="replace")[-4000:])
                if reply is not None:
                    pytest.fail(f"{name}{args} failed in the interpreter worker:\n{reply}", pytrace=False)

            try:
                yield call
            finally:
                worker.stdin.close()
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()

    return kernel_check
