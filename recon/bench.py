"""Per-frame latency and memory of a streaming session, against frame index.

    recon bench --preset tiny --device cpu --height 224 --width 224 --frames 100
    python tools/bench.py --preset vggt-1b --device cuda --height 392 --width 518

Random weights are used unless --weights is given (speed does not depend on them).
Each frame goes through `Reconstructor.step` (preprocess, model, copy of the outputs to
the host), i.e. what a user of the session gets. Writes a JSON with every frame.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from .config import get_preset
from .device import resolve_device
from .session import Reconstructor


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


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    model = _build_model(args.preset, args.weights, device)
    rec = Reconstructor(model, memory=args.memory, device=device, width=args.width)
    args.memory = rec.memory
    frames = _frames(8, args.height, args.width)
    cuda = device.type == "cuda"

    for i in range(args.warmup):  # warm-up stream, then a fresh one is measured
        rec.push(frames[i % len(frames)])
    rec.flush()
    rec.reset()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    records = []
    for i in range(args.frames):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        # Copies outputs to the host, so it syncs. With `window`, most pushes return at once
        # and the window's last frame pays for the whole window: read throughput there.
        rec.push(frames[i % len(frames)])
        if i == args.frames - 1:
            rec.flush()
        latency = time.perf_counter() - t0
        rec_i = {"frame": i, "latency_ms": latency * 1e3, "cache_bytes": rec.memory_bytes()}
        if cuda:
            rec_i["allocated_bytes"] = torch.cuda.memory_allocated()
            rec_i["peak_bytes"] = torch.cuda.max_memory_allocated()
        else:
            rec_i["rss_bytes"] = _rss_bytes()
        records.append(rec_i)
        if args.print_every and (i % args.print_every == 0 or i == args.frames - 1):
            mem = rec_i.get("peak_bytes", rec_i.get("rss_bytes"))
            print(f"frame {i:6d}  {rec_i['latency_ms']:9.2f} ms  cache {rec_i['cache_bytes'] / 2**20:9.1f} MiB  "
                  f"{'peak' if cuda else 'rss'} {mem / 2**30:7.2f} GiB", flush=True)

    lat = [r["latency_ms"] for r in records]
    steady = lat[len(lat) // 2 :]
    peak_key = "peak_bytes" if cuda else "rss_bytes"
    summary = {
        "throughput_fps": 1e3 * len(lat) / sum(lat),
        "latency_ms_median": statistics.median(lat),
        "latency_ms_p90": _percentile(lat, 90),
        "latency_ms_p99": _percentile(lat, 99),
        "steady_fps": 1e3 / statistics.median(steady),
        "peak_memory_bytes": max(r[peak_key] for r in records),
        "final_cache_bytes": records[-1]["cache_bytes"],
    }
    result = {
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "commit": _git_commit(),
        "summary": summary,
        "frames": records,
    }
    print(f"{args.preset} {args.memory} {args.height}x{args.width} on {result['device']}: "
          f"median {summary['latency_ms_median']:.1f} ms, p90 {summary['latency_ms_p90']:.1f} ms, "
          f"p99 {summary['latency_ms_p99']:.1f} ms, steady {summary['steady_fps']:.2f} FPS, "
          f"throughput {summary['throughput_fps']:.2f} FPS, "
          f"peak {summary['peak_memory_bytes'] / 2**30:.2f} GiB ({'GPU allocated' if cuda else 'process RSS'})")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)
        print(f"wrote {path}")
    return result


def _git_commit() -> str | None:
    if os.environ.get("RECON_COMMIT"):  # copies of the tree without .git (e.g. a GPU box)
        return os.environ["RECON_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    p.add_argument("--weights", help="checkpoint to load instead of random weights")
    p.add_argument("--memory", default=None, help="memory strategy (default: full, or linear for linear models)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument("--height", type=int, default=224, help="frame height in pixels, multiple of 14")
    p.add_argument("--width", type=int, default=224, help="frame width in pixels, multiple of 14")
    p.add_argument("--frames", type=int, default=50, help="frames to measure (default: 50)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured warm-up frames (default: 3)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    p.add_argument("--print-every", type=int, default=10, help="print every N frames (0: only the summary)")
    p.add_argument("--json", help="write per-frame results to this JSON file")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recon bench", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
