"""`recon batch`: every video file and image folder inside INPUT_DIR, one output folder each.

Resumable: an input whose output folder holds `done.json` is skipped (use --force to redo).
Under torchrun the inputs are sharded across ranks (rank r takes inputs r, r+W, ...), each
rank on its own GPU; one model is loaded per process and reset between inputs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from recon.datasets.readers.folder import is_image_file, natural_key

from .atomic import write_text_atomic

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}


def list_inputs(input_dir: str | os.PathLike) -> list[Path]:
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder not found: {root}")
    inputs = []
    for p in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            inputs.append(p)
        elif p.is_dir() and any(is_image_file(c) for c in p.iterdir()):
            inputs.append(p)
    if not inputs:
        raise ValueError(f"no video files or image folders in {root}")
    return inputs


def run_batch(args) -> int:
    from recon.datasets.sources import SourceError, open_source

    from .cli import _reconstructor, _report
    from .export import Exporter, ExportError
    from .pipeline import run_stream

    if not args.out:
        raise ValueError("recon batch needs --out DIR")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and args.device == "auto":
        import torch

        if torch.cuda.is_available():
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
    inputs = list_inputs(args.input_dir)[rank::world]
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    rec = _reconstructor(args)
    rows = []
    for path in inputs:
        out = out_root / path.stem
        done = out / "done.json"
        if done.exists() and not args.force:
            rows.append({"input": path.name, "status": "skipped (done)", **json.loads(done.read_text())})
            continue
        rec.reset()
        t0 = time.time()
        try:
            exporter = Exporter(out, args.export, conf_threshold=args.conf_threshold)
            source = open_source(path, stride=args.stride, max_frames=args.max_frames)
        except (SourceError, ExportError, ValueError, OSError) as e:
            rows.append({"input": path.name, "status": f"failed: {' '.join(str(e).split())}"})
            continue
        summary = run_stream(source, rec, exporter=exporter, progress=not args.quiet)
        _report(summary, what=f"{path.name}: ")
        result = {"frames": summary.frames, "seconds": round(time.time() - t0, 2), "fps": round(summary.fps, 2),
                  "outputs": {k: str(v) for k, v in summary.outputs.items()}}  # fmt: skip
        if summary.interrupted:
            rows.append({"input": path.name, "status": "interrupted", **result})
            break
        write_text_atomic(done, json.dumps(result, indent=1))
        rows.append({"input": path.name, "status": "done", **result})
    _print_table(rows, rank, world)
    write_text_atomic(out_root / f"batch_summary_rank{rank}.json", json.dumps(rows, indent=1))
    failed = [r for r in rows if r["status"].startswith(("failed", "interrupted"))]
    return 1 if failed else 0


def _print_table(rows: list[dict], rank: int, world: int) -> None:
    header = f"{'input':32s} {'status':24s} {'frames':>7s} {'FPS':>7s} {'seconds':>8s}"
    print(f"\nbatch summary{f' (rank {rank} of {world})' if world > 1 else ''}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['input'][:32]:32s} {r['status'][:60]:24s} {r.get('frames', ''):>7} {r.get('fps', ''):>7} "
              f"{r.get('seconds', ''):>8}")
    sys.stdout.flush()
