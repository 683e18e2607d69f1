"""Where does a streaming step spend its time? Per-module GPU time and the top kernels.

    python tools/profile_step.py --preset vggt-1b --memory rolling --height 392 --width 518 --fill 70
    python tools/profile_step.py --preset tiny --memory rolling --device cuda --fast

Streams `--fill` frames first (so bounded caches are full and the step is in its steady
state), then times `--frames` steps with CUDA events around each top-level module (sum over
the frame/temporal blocks), and profiles `--kernels` steps with torch.profiler to list the
kernels that cost the most and how many kernels one step launches. On the CPU the module
times are host times. Random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from recon.bench import _build_model, _frames, _memory_options
from recon.device import resolve_device
from recon.session import Reconstructor

SECTIONS = {
    "backbone": ["aggregator.patch_embed"],
    "frame blocks": ["aggregator.frame_blocks"],
    "temporal blocks": ["aggregator.global_blocks"],
    "aggregator (all)": ["aggregator"],
    "camera head": ["camera_head"],
    "depth head": ["depth_head"],
    "point head": ["point_head"],
    "metric head": ["metric_head"],
}


class ModuleTimer:
    """Events (or host clocks) around modules; `take()` returns ms per section since the last take."""

    def __init__(self, model: torch.nn.Module, cuda: bool) -> None:
        self.cuda = cuda
        self.open: dict[int, object] = {}
        self.pairs: dict[str, list] = defaultdict(list)
        modules = dict(model.named_modules())
        for label, names in SECTIONS.items():
            for name in names:
                m = modules.get(name)
                if m is None:
                    continue
                targets = list(m) if isinstance(m, torch.nn.ModuleList) else [m]
                for t in targets:
                    t.register_forward_pre_hook(self._pre)
                    t.register_forward_hook(self._post(label))

    def _stamp(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def _pre(self, module, args):
        self.open[id(module)] = self._stamp()

    def _post(self, label):
        def hook(module, args, out):
            self.pairs[label].append((self.open.pop(id(module)), self._stamp()))

        return hook

    def take(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        out = {}
        for label, pairs in self.pairs.items():
            out[label] = sum(a.elapsed_time(b) if self.cuda else (b - a) * 1e3 for a, b in pairs)
        self.pairs.clear()
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--memory", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--height", type=int, default=224)
    p.add_argument("--width", type=int, default=224)
    p.add_argument("--fill", type=int, default=20, help="frames streamed before measuring")
    p.add_argument("--frames", type=int, default=10, help="frames timed per module")
    p.add_argument("--kernels", type=int, default=3, help="frames under torch.profiler (0: skip)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--option", action="append", default=[], help="memory option key=value, repeatable (as recon bench --option)")
    p.add_argument("--precision", default=None, help="inference precision (see recon.device.prepare_model)")
    p.add_argument("--fast", action="store_true", help="CUDA-graph fast path")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    options = _memory_options(args.option)
    extra = {}
    if args.precision:
        extra["precision"] = args.precision
    if args.fast:
        extra["fast"] = True
    model = _build_model(args.preset, None, device)
    rec = Reconstructor(model, memory=args.memory, device=device, width=args.width, **extra, **options)
    frames = _frames(8, args.height, args.width)
    for i in range(args.fill):
        rec.push(frames[i % 8])
    if cuda:
        torch.cuda.synchronize()

    timer = ModuleTimer(rec.model, cuda)
    walls, sections = [], defaultdict(list)
    for i in range(args.frames):
        t0 = time.perf_counter()
        rec.push(frames[i % 8])
        walls.append((time.perf_counter() - t0) * 1e3)
        for k, v in timer.take().items():
            sections[k].append(v)
    wall = statistics.median(walls)
    print(f"\n{args.preset} {rec.memory} {args.height}x{args.width} on {device} "
          f"(after {args.fill} frames, cache {rec.memory_bytes() / 2**20:.0f} MiB): wall {wall:.2f} ms/frame")
    for label, values in sections.items():
        ms = statistics.median(values)
        print(f"  {label:18s} {ms:8.2f} ms  ({100 * ms / wall:5.1f}% of wall)")

    if args.kernels:
        acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=acts) as prof:
            for i in range(args.kernels):
                rec.push(frames[i % 8])
            if cuda:
                torch.cuda.synchronize()
        events = prof.key_averages()
        key = "device_time_total" if cuda else "self_cpu_time_total"
        rows = sorted(events, key=lambda e: getattr(e, key, 0), reverse=True)
        if cuda:
            kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
            launches = sum(e.count for e in kernels) / args.kernels
            busy = sum(e.device_time_total for e in kernels) / args.kernels / 1e3
            print(f"  kernels per step: {launches:.0f}; GPU busy {busy:.2f} ms/step")
            rows = sorted(kernels, key=lambda e: e.device_time_total, reverse=True)
        print(f"  top {args.top} by {'GPU' if cuda else 'CPU'} time (ms per step, calls per step):")
        for e in rows[: args.top]:
            t = getattr(e, key) / 1e3 / args.kernels
            print(f"    {t:8.3f}  {e.count / args.kernels:6.1f}  {e.key[:110]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
