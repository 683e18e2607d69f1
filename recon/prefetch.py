"""Prepare upcoming items on a worker thread while the caller works on the current one.

    for frame, pre in prefetch(source, rec.preprocess):
        rec.push(pre)           # the GPU runs frame t while the thread decodes and
                                # preprocesses frame t+1 (OpenCV and torch release the GIL)

Order is kept; at most `depth` prepared items wait. An exception in the source or in
`prepare` is raised in the caller at the item where it happened. Closing the generator
early (break, Ctrl-C) stops the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")

_DONE = object()


def prefetch(items: Iterable[T], prepare: Callable[[T], U], depth: int = 2) -> Iterator[tuple[T, U]]:
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1, got {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, prepare(item), None)):
                    return
        except BaseException as exc:  # handed to the caller, raised there
            put((None, None, exc))
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="recon-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            entry = ready.get()
            if entry is _DONE:
                return
            item, prepared, exc = entry
            if exc is not None:
                raise exc
            yield item, prepared
    finally:
        stop.set()
        # The worker may be inside the source's next() (a read); let it finish before the
        # caller closes the source, which must not happen while a generator is running.
        thread.join(timeout=30)
