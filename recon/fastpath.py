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
"""

from __future__ import annotations

import torch
from torch import Tensor

from .device import autocast_for


class GraphedStep:
    def __init__(self, model: torch.nn.Module, precision: str = "bf16") -> None:
        self.model = model
        self.precision = precision
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
        with torch.cuda.graph(graph):
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
