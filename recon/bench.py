"""Per-frame latency and memory of a streaming session, against frame index.

    recon bench --preset tiny --device cpu --height 224 --width 224 --frames 100
    python tools/bench.py --preset vggt-1b --device cuda --height 392 --width 518

Random weights are used unless --weights is given (speed does not depend on them).
Each frame goes through `Reconstructor.step` (preprocess, model, copy of the outputs to
the host), i.e. what a user of the session gets. Writes a JSON with every frame.

With --reference NAME the same frames then go through a public reference implementation
(recon/bench_reference.py; its code is imported from a folder named by an environment
variable), in the same process, timed by the same loop: after our run, once our model is
freed, so that each model has the device to itself and each peak memory is its own (run
side by side, two 1B models with 300-frame caches would not fit on one GPU). The JSON gets
"reference": {name: {summary, ratios, frames}}; the ratios at matching frame indices are printed.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from . import bench_reference
from .config import get_preset
from .device import resolve_device
from .prefetch import prefetch
from .session import Reconstructor


WARMUP_STREAMS = 2


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _build_model(preset: str, weights: str | None, device: torch.device):
    from .checkpoint import load_model
    from .model import build_model

    if weights:
        model, _ = load_model(weights, preset=preset, device=device)
        return model
    with torch.device(device):  # built in place: a 1B model is not first made on the CPU
        return build_model(get_preset(preset)).eval()


def _frames(n_distinct: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    # Shifted copies: consecutive frames differ like a slowly moving camera.
    return [np.roll(base, shift=4 * i, axis=1) for i in range(n_distinct)]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _measure(push, flush, cache_bytes, n: int, cuda: bool, print_every: int, label: str = "") -> list[dict]:
    """Time `push(i)` for frames 0..n-1 of one stream (`flush()` ends it, inside the last frame's time)."""
    records = []
    for i in range(n):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        # Copies outputs to the host, so it syncs. With `window`, most pushes return at once
        # and the window's last frame pays for the whole window: read throughput there.
        push(i)
        if i == n - 1:
            flush()
        latency = time.perf_counter() - t0
        rec_i = {"frame": i, "latency_ms": latency * 1e3, "cache_bytes": cache_bytes()}
        if cuda:
            rec_i["allocated_bytes"] = torch.cuda.memory_allocated()
            rec_i["peak_bytes"] = torch.cuda.max_memory_allocated()
        else:
            rec_i["rss_bytes"] = _rss_bytes()
        records.append(rec_i)
        if print_every and (i % print_every == 0 or i == n - 1):
            mem = rec_i.get("peak_bytes", rec_i.get("rss_bytes"))
            print(f"{label}frame {i:6d}  {rec_i['latency_ms']:9.2f} ms  cache {rec_i['cache_bytes'] / 2**20:9.1f} MiB  "
                  f"{'peak' if cuda else 'rss'} {mem / 2**30:7.2f} GiB", flush=True)
    return records


def _summary(records: list[dict], cuda: bool) -> dict:
    lat = [r["latency_ms"] for r in records]
    steady = lat[len(lat) // 2 :]
    peak_key = "peak_bytes" if cuda else "rss_bytes"
    return {
        "throughput_fps": 1e3 * len(lat) / sum(lat),
        "latency_ms_median": statistics.median(lat),
        "latency_ms_p90": _percentile(lat, 90),
        "latency_ms_p99": _percentile(lat, 99),
        "steady_fps": 1e3 / statistics.median(steady),
        "peak_memory_bytes": max(r[peak_key] for r in records),
        "final_cache_bytes": records[-1]["cache_bytes"],
    }


def _describe(summary: dict, cuda: bool) -> str:
    return (f"median {summary['latency_ms_median']:.1f} ms, p90 {summary['latency_ms_p90']:.1f} ms, "
            f"p99 {summary['latency_ms_p99']:.1f} ms, steady {summary['steady_fps']:.2f} FPS, "
            f"throughput {summary['throughput_fps']:.2f} FPS, "
            f"peak {summary['peak_memory_bytes'] / 2**30:.2f} GiB ({'GPU allocated' if cuda else 'process RSS'})")


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    references = bench_reference.parse_names(getattr(args, "reference", None))
    for name in references:  # a missing / broken reference fails now, not after our run
        bench_reference.check(name, device)
    model = _build_model(args.preset, args.weights, device)
    options = _memory_options(args.option)
    if args.memory == "full":  # the stream's length is known: one cache allocation, no growth
        options.setdefault("reserve_frames", args.frames)
    args.memory_options = options  # recorded in the JSON's config
    rec = Reconstructor(model, memory=args.memory, device=device, width=args.width, **options)
    args.memory = rec.memory
    frames = _frames(8, args.height, args.width)
    cuda = device.type == "cuda"

    # Warm-up streams through the same pipeline, then a fresh one is measured. Two, so that
    # every kind of step, a stream's first frame included, has run eagerly once and been
    # captured once (recon.fastpath) before the clock starts.
    for _ in range(WARMUP_STREAMS):
        for _, pre in prefetch((frames[i % len(frames)] for i in range(args.warmup)), rec.preprocess):
            rec.push(pre)
        rec.flush()
        rec.reset()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    # As `recon run` does: the next frame is preprocessed on a thread while this one runs; a
    # push waits for it only if preprocessing is the slower of the two (that wait is timed).
    prepared = prefetch((frames[i % len(frames)] for i in range(args.frames)), rec.preprocess)
    # Frame 0's preprocessing happens before the clock starts, as the references get their
    # inputs preprocessed; from frame 1 on it overlaps the previous frame's GPU work.
    stream = itertools.chain([next(prepared)], prepared)
    records = _measure(lambda i: rec.push(next(stream)[1]), rec.flush, rec.memory_bytes, args.frames, cuda,
                       args.print_every)
    prepared.close()
    summary = _summary(records, cuda)
    if getattr(rec.state, "timings", None):  # the window strategy: where a window's time goes
        summary["stage_seconds"] = dict(rec.state.timings)
    result = {
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "commit": _git_commit(),
        "params": sum(p.numel() for p in model.parameters()),
        "summary": summary,
        "frames": records,
    }
    print(f"{args.preset} {args.memory} {args.height}x{args.width} on {result['device']}: {_describe(summary, cuda)}")
    if references:
        # The same frames, as the model input our session made of them ([3, H, W] in [0, 1]).
        inputs = [rec.preprocess(frame).image for frame in frames]
        del rec, model  # each model runs alone on the device: peak memory is its own
        result["reference"] = _run_references(references, inputs, device, args, records, summary)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)
        print(f"wrote {path}")
    return result


def _run_references(names, inputs, device, args, ours: list[dict], ours_summary: dict) -> dict:
    """Stream the same frames through each reference after our run, measured by the same loop."""
    cuda = device.type == "cuda"
    results = {}
    for name in names:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        # what is still allocated before the reference is built (~0: ours and earlier references are freed)
        leftover = torch.cuda.memory_allocated() if cuda else 0
        runner = bench_reference.build(name, device)
        upload = lambda i: inputs[i % len(inputs)].to(device, non_blocking=True)  # noqa: E731 -- timed, as ours
        warmup = max(args.warmup, runner.warmup_frames)
        for _ in range(WARMUP_STREAMS):  # warmed up as ours is
            for i in range(warmup):
                runner.step(upload(i))
            runner.flush()
            runner.reset()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        records = _measure(lambda i: runner.step(upload(i)), runner.flush, runner.cache_bytes, args.frames, cuda,
                           args.print_every, label=f"{name}  ")
        summary = _summary(records, cuda)
        info = runner.info()
        ratios = bench_reference.compare(ours, records, ours_summary, summary)
        results[name] = {**info, "warmup": warmup, "allocated_before_build_bytes": leftover, "summary": summary,
                         "ratios": ratios, "frames": records}
        params = f"{info['params'] / 1e9:.2f}B" if info["params"] >= 1e8 else f"{info['params'] / 1e6:.1f}M"
        print(f"reference {name} ({params} params, {info['precision']}): {_describe(summary, cuda)}")
        print(bench_reference.describe_comparison(name, ratios))
        del runner
    return results


def _git_commit() -> str | None:
    if os.environ.get("RECON_COMMIT"):  # copies of the tree without .git (e.g. a GPU box)
        return os.environ["RECON_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _memory_options(pairs: list[str] | None) -> dict:
    """["budget_frames=16", ...] -> {"budget_frames": 16, ...} (ints, floats, else strings)."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"memory option {pair!r} is not key=value")
        for cast in (int, float, str):
            try:
                options[key] = cast(value)
                break
            except ValueError:
                continue
    return options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    p.add_argument("--weights", help="checkpoint to load instead of random weights")
    p.add_argument("--memory", default=None, help="memory strategy (default: full, or linear for linear models)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument("--height", type=int, default=224, help="frame height in pixels, multiple of 14")
    p.add_argument("--width", type=int, default=224, help="frame width in pixels, multiple of 14")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="memory strategy option, repeatable (e.g. budget_frames=32, size=20, overlap=5)")
    p.add_argument("--frames", type=int, default=50, help="frames to measure (default: 50)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured frames per warm-up stream; two warm-up streams precede the "
                        "measured one (default: 3)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    p.add_argument("--print-every", type=int, default=10, help="print every N frames (0: only the summary)")
    p.add_argument("--json", help="write per-frame results to this JSON file")
    p.add_argument("--reference", action="append", default=[], metavar="NAME",
                   help="after our run, time a public reference implementation on the same frames in the same "
                        "process: streamvggt, horizonstream, horizonstream-chunked (repeat or comma list); its "
                        "code is imported from $STREAMRECON_REF_STREAMVGGT / $STREAMRECON_REF_HORIZONSTREAM")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recon bench", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
