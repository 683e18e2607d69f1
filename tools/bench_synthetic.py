"""Throughput of the synthetic scene renderer (`recon.datasets.synthetic`).

    python tools/bench_synthetic.py --device cuda --height 224 --width 224 --clips 8 --frames 8 [--workers 2]

Prints frames/s for the CPU part (scene layout + camera path per clip), for the device part
(packing, batched ray casting and shading) and for the whole. With --workers N, clip specs are
made by N processes while the device renders, as a training data loader would do it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor

import torch

from recon.datasets.synthetic import FAMILIES, TRAJECTORIES
from recon.datasets.synthetic.render import ClipSpec, make_clip_spec, render_specs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_specs(first_seed: int, clips: int, frames: int, family: str | None, trajectory: str | None) -> list[ClipSpec]:
    return [make_clip_spec(first_seed + b, frames, family, trajectory) for b in range(clips)]


def _serial(args, device: torch.device) -> None:
    cpu_s = device_s = 0.0
    frames = 0
    for it in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        specs = _make_specs(it * args.clips, args.clips, args.frames, args.family, args.trajectory)
        t1 = time.perf_counter()
        render_specs(specs, args.height, args.width, device)
        _sync(device)
        t2 = time.perf_counter()
        if it >= args.warmup:
            cpu_s, device_s, frames = cpu_s + t1 - t0, device_s + t2 - t1, frames + args.clips * args.frames
    print(f"scene + trajectory (cpu, 1 process): {frames / cpu_s:10.1f} frames/s")
    print(f"render ({device.type}):                    {frames / device_s:10.1f} frames/s")
    print(f"total, one after the other:          {frames / (cpu_s + device_s):10.1f} frames/s")


def _pipelined(args, device: torch.device, pool: ProcessPoolExecutor) -> None:
    total = args.warmup + args.iters
    jobs = (pool.submit(_make_specs, it * args.clips, args.clips, args.frames, args.family, args.trajectory)
            for it in range(total))  # fmt: skip
    pending = deque(next(jobs) for _ in range(min(total, 2 * args.workers)))
    start = None
    for it in range(total):
        if it == args.warmup:
            _sync(device)
            start = time.perf_counter()
        specs = pending.popleft().result()
        nxt = next(jobs, None)
        if nxt is not None:
            pending.append(nxt)
        render_specs(specs, args.height, args.width, device)
    _sync(device)
    frames = args.iters * args.clips * args.frames
    print(f"total, specs from {args.workers} worker processes: {frames / (time.perf_counter() - start):10.1f} frames/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--clips", type=int, default=8, help="clips per batch")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--iters", type=int, default=10, help="timed batches")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="processes making clip specs (0: none)")
    parser.add_argument("--family", choices=FAMILIES, default=None, help="default: drawn per seed")
    parser.add_argument("--trajectory", choices=TRAJECTORIES, default=None, help="default: drawn per seed")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    pool = None
    if args.workers > 0:  # started before CUDA is initialised; the workers never touch it
        pool = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, {args.height}x{args.width}, batch {args.clips} clips x {args.frames} frames, "
          f"{args.iters} batches")  # fmt: skip
    _serial(args, device)
    if pool is not None:
        with pool:
            _pipelined(args, device, pool)
    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
