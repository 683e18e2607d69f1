"""recon.prefetch: order, errors raised at the right item, early exit stops the thread."""

import threading
import time

import pytest

from recon.prefetch import prefetch


def test_keeps_order_and_prepares_on_another_thread():
    caller = threading.get_ident()
    seen_threads = set()

    def prepare(x):
        seen_threads.add(threading.get_ident())
        time.sleep(0.001 * (x % 3))  # uneven work must not reorder
        return x * x

    out = list(prefetch(range(50), prepare, depth=3))
    assert out == [(x, x * x) for x in range(50)]
    assert seen_threads and caller not in seen_threads


def test_errors_surface_at_their_item():
    def items():
        yield 1
        yield 2
        raise OSError("camera unplugged")

    got = []
    with pytest.raises(OSError, match="unplugged"):
        for item, _ in prefetch(items(), lambda x: x):
            got.append(item)
    assert got == [1, 2]

    def bad(x):
        if x == 3:
            raise ValueError("corrupt frame 3")
        return x

    got = []
    with pytest.raises(ValueError, match="frame 3"):
        for item, _ in prefetch(range(10), bad):
            got.append(item)
    assert got == [0, 1, 2]


def test_early_exit_stops_the_worker():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    gen = prefetch(endless(), lambda x: x, depth=2)
    assert [next(gen)[0] for _ in range(5)] == [0, 1, 2, 3, 4]
    gen.close()
    time.sleep(0.3)
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count  # nothing produced after close
    assert not any(t.name == "recon-prefetch" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ValueError):
        list(prefetch([1], lambda x: x, depth=0))
