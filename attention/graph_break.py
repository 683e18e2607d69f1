"""Graph breaks: the ops of a streaming step that a CUDA graph cannot replay.

Attention over a growing cache reads a key length that changes every frame and updates the
cache's host-side bookkeeping, so a step with a growing cache cannot be one CUDA graph.
Everything around those ops has fixed shapes. Layers route such an op through `graph_break`:

    out = graph_break(attend_over_cache, q, k, v, kv_slot)

Normally that is just `attend_over_cache(q, k, v, kv_slot)`. While a piecewise capture
(recon.fastpath.PiecewiseGraphs) is recording, it ends the CUDA graph being captured, runs
the op eagerly, and starts the next graph; a replay then runs graph, op, graph, ... with the
op called again on the same (static) input tensors. Rules for such an op: it returns one
tensor, reads its tensor inputs only through its arguments, and any cache slot it takes as
an argument belongs to the stream state the step was called with (a replay rebinds it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import Tensor


class BreakRecorder(Protocol):
    def split(self, fn: Callable[..., Tensor], args: tuple[Any, ...]) -> Tensor: ...


_recorder: BreakRecorder | None = None


def graph_break(fn: Callable[..., Tensor], *args: Any) -> Tensor:
    """Run `fn(*args)`; under a piecewise capture, as an eager op between two graphs."""
    if _recorder is None:
        return fn(*args)
    return _recorder.split(fn, args)


def set_recorder(recorder: BreakRecorder | None) -> BreakRecorder | None:
    """Install the recorder that sees every graph break (None: none); returns the previous one."""
    global _recorder
    previous, _recorder = _recorder, recorder
    return previous
