"""CUDA-graph fast path for the per-frame step.

At batch 1 a streaming step of a VGGT-style model is hundreds of small kernel launches:
the GPU waits on Python. Once a stream is *steady* (its caches are full, so every later
step has the same tensor shapes and the same control flow, see `StreamState.steady`), the
step is captured once as a CUDA graph and replayed for every later frame: one launch.

    step = GraphedStep(model, precision="bf16")
    out = step(images, state)   # eager until steady, then one eager warm-up step on a
                                # side stream, one capture, replays from then on

Rules the captured step follows, and that `StreamState`s must keep:
  * cache updates write into preallocated buffers in place (no reallocation once steady);
  * no host synchronisation inside the step (no `.item()`, no data-dependent shapes);
  * host bookkeeping a replay skips (frame count, eviction counters) is done by
    `state.count_replayed_step()` after each replay;
  * a model with a host-side tail exposes `graph_core(images, state)` (captured) and
    `graph_finish(core_out, state)` (run eagerly after each replay), as the horizon model
    does for its online pose fusion.
Outputs of a replay live in static buffers overwritten by the next replay: copy them out
(the session copies them to the host) before the next step.

Growing caches (`full`, a `rolling` cache before it fills) are never steady: their attention
sees a new key length every frame. Those steps run as *piecewise* graphs (`PiecewiseGraphs`):
everything between two cached attentions is a captured graph, and the cached attentions
themselves (cache update + SDPA, see recon.attention.graph_break) run eagerly in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from recon.attention import KVCache, StreamState
from recon.attention.cache import _LayerSlot
from recon.attention.graph_break import set_recorder

from .device import autocast_for


class GraphedStep:
    def __init__(self, model: torch.nn.Module, precision: str = "bf16") -> None:
        self.model = model
        self.precision = precision
        # Piecewise graphs rebind to each new stream's caches: kept across streams.
        self.piecewise = PiecewiseGraphs(model, precision)
        self.reset()

    def reset(self) -> None:
        """Forget the graph (the stream state it wrote into is gone)."""
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_images: Tensor | None = None
        self.static_out: dict | None = None
        self._state = None
        self._warmed = False
        self.replays = 0

    def _eager(self, images: Tensor, state) -> dict:
        with autocast_for(images.device, self.precision):
            return self.model(images, state=state)

    def __call__(self, images: Tensor, state) -> dict:
        if state is not self._state:  # a new stream: its buffers are not the captured ones
            self.reset()
            self._state = state
        if self.graph is None:
            if not (images.is_cuda and state.steady()):
                if images.is_cuda and self.piecewise.supports(state):
                    return self.piecewise(images, state)
                return self._eager(images, state)
            if not self._warmed:
                # One steady step on a side stream first: lazy library initialisation (cuBLAS
                # workspaces, attention backend choice) must not happen during capture.
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    out = self._eager(images, state)
                torch.cuda.current_stream().wait_stream(side)
                self._warmed = True
                return out
            self._capture(images, state)  # Python ran once (bookkeeping done); now compute
            self.graph.replay()
            self.replays += 1
            return self._finish(state)
        if images.shape != self.static_images.shape:
            raise ValueError(f"frame of shape {tuple(images.shape)} in a stream captured at {tuple(self.static_images.shape)}")
        self.static_images.copy_(images, non_blocking=True)
        self.graph.replay()
        state.count_replayed_step()
        self.replays += 1
        return self._finish(state)

    def _capture(self, images: Tensor, state) -> None:
        # Models with a host-side tail (the horizon model's online pose fusion) split their
        # step: `graph_core` is captured, `graph_finish` runs eagerly after every replay.
        core = getattr(self.model, "graph_core", None)
        self.static_images = images.clone()
        graph = torch.cuda.CUDAGraph()
        # thread_local: a prefetch thread pinning the next frame must not invalidate the capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            # Cached weight casts would be freed after capture: no autocast cache.
            with autocast_for(images.device, self.precision, cache_enabled=False):
                if core is not None:
                    self.static_out = core(self.static_images, state)
                else:
                    self.static_out = self.model(self.static_images, state=state)
        self.graph = graph

    def _finish(self, state) -> dict:
        finish = getattr(self.model, "graph_finish", None)
        if finish is None:
            return self.static_out
        with autocast_for(self.static_images.device, self.precision):
            return finish(self.static_out, state)


@dataclass
class _Piece:
    graph: torch.cuda.CUDAGraph
    op: object  # the eager op after the graph (None after the last graph)
    args: tuple = ()
    out: Tensor | None = None  # where the op's result lives for the next graph to read


@dataclass(frozen=True)
class _SlotRef:
    """A cache slot named by its StreamState field, resolved against each replay's state (a
    captured step must not keep the capture-time stream's caches alive)."""

    field: str
    index: int


@dataclass
class _PiecewiseStep:
    static_images: Tensor
    pieces: list[_Piece] = field(default_factory=list)
    static_out: dict | None = None


class PiecewiseGraphs:
    """Per-frame steps of a stream whose caches grow, as CUDA graphs split at the cached
    attentions (see the module docstring).

    One capture per (frame shape, first frame of a stream or not): the first frame uses its
    own camera/register tokens. A shape's first step runs eagerly (lazy library set-up must
    not happen inside a capture); its next step with an uncaptured key is captured (that
    pass computes the frame as well) and replayed from then on, for this stream and later
    ones: the eager ops look up the current stream's caches.
    """

    def __init__(self, model: torch.nn.Module, precision: str = "bf16") -> None:
        self.model = model
        self.precision = precision
        self.steps: dict[tuple, _PiecewiseStep] = {}
        self._warm: set[tuple] = set()
        self.replays = 0

    def supports(self, state) -> bool:
        # The VGGT-family step's only host state besides its caches (which update themselves
        # in the eager ops) is the frame count; the horizon model keeps more (pose fusion).
        return (type(state) is StreamState and getattr(self.model, "graph_core", None) is None
                and isinstance(state.temporal, KVCache) and isinstance(state.camera, KVCache))  # fmt: skip

    def __call__(self, images: Tensor, state) -> dict:
        shape = (tuple(images.shape), images.dtype, images.device)
        key = (*shape, state.num_frames == 0)
        step = self.steps.get(key)
        if step is not None:
            return self._replay(step, images, state)
        if shape not in self._warm:
            self._warm.add(shape)
            with autocast_for(images.device, self.precision):
                return self.model(images, state=state)
        step = self.steps[key] = self._capture(images, state)
        return step.static_out

    def _capture(self, images: Tensor, state) -> _PiecewiseStep:
        step = _PiecewiseStep(static_images=images.clone())
        fields = {id(state.temporal): "temporal", id(state.camera): "camera"}
        recorder = _Recorder(step, torch.cuda.graph_pool_handle(), fields)
        side = torch.cuda.Stream(images.device)
        side.wait_stream(torch.cuda.current_stream(images.device))
        previous = set_recorder(recorder)
        try:
            with torch.cuda.stream(side):
                recorder.begin()
                # Cached weight casts would be freed after capture: no autocast cache.
                with autocast_for(images.device, self.precision, cache_enabled=False):
                    step.static_out = self.model(step.static_images, state=state)
                recorder.finish()
        except BaseException:
            recorder.abort()
            raise
        finally:
            set_recorder(previous)
            torch.cuda.current_stream(images.device).wait_stream(side)
        return step

    def _replay(self, step: _PiecewiseStep, images: Tensor, state) -> dict:
        step.static_images.copy_(images, non_blocking=True)
        # No autocast around the eager ops: their inputs already have the dtypes the capture
        # pass gave them (bf16 in the trunk, fp32 in the camera head), as in an eager step.
        for piece in step.pieces:
            piece.graph.replay()
            if piece.op is not None:
                args = tuple(_LayerSlot(getattr(state, a.field), a.index) if isinstance(a, _SlotRef) else a
                             for a in piece.args)  # fmt: skip
                piece.out.copy_(piece.op(*args))
        # The caches did their own bookkeeping in the eager ops; the model's host side is this.
        state.num_frames += images.shape[1]
        self.replays += 1
        return step.static_out


class _Recorder:
    """Cuts a capture at each graph break: ends the graph, replays it (the capture pass also
    computes the frame, so the eager op sees real inputs), runs the op, starts the next."""

    def __init__(self, step: _PiecewiseStep, pool, cache_fields: dict[int, str]) -> None:
        self.step, self.pool = step, pool
        self.cache_fields = cache_fields  # id(cache of the capture-time state) -> its StreamState field
        self.graph: torch.cuda.CUDAGraph | None = None

    def begin(self) -> None:
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (frame prefetch pinning memory) may call CUDA meanwhile.
        self.graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")

    def _end(self) -> torch.cuda.CUDAGraph:
        graph, self.graph = self.graph, None
        graph.capture_end()
        graph.replay()
        return graph

    def split(self, fn, args: tuple) -> Tensor:
        graph = self._end()
        out = fn(*args)
        stored = tuple(_SlotRef(self.cache_fields[id(a.cache)], a.index) if isinstance(a, _LayerSlot) else a
                       for a in args)  # fmt: skip
        self.step.pieces.append(_Piece(graph, fn, stored, out))
        self.begin()
        return out

    def finish(self) -> None:
        self.step.pieces.append(_Piece(self._end(), None))

    def abort(self) -> None:
        if self.graph is not None:
            try:
                self.graph.capture_end()
            except RuntimeError:
                pass
            self.graph = None
