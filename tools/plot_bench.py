"""Plot benchmark JSONs (from `recon bench --json`): latency and memory against frame index.

    python tools/plot_bench.py docs/bench/vggt1b_full_518_300f.json docs/bench/vggt1b_rolling_518_2000f.json \\
        --out docs/bench/vggt1b_518.png --title "vggt-1b, 518x392, H200"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recon.atomic import atomic_path


def plot(paths: list[Path], out: Path, title: str) -> None:
    fig = Figure(figsize=(11, 4), dpi=110)
    FigureCanvasAgg(fig)
    lat_ax, mem_ax = fig.subplots(1, 2)
    for path in paths:
        data = json.loads(path.read_text())
        frames = data["frames"]
        x = np.array([r["frame"] for r in frames])
        mem_key = "peak_bytes" if "peak_bytes" in frames[0] else "rss_bytes"
        label = f"{data['config']['preset']} {data['config']['memory']}"
        lat_ax.plot(x, [r["latency_ms"] for r in frames], lw=0.8, label=label)
        mem_ax.plot(x, np.array([r[mem_key] for r in frames]) / 2**30, lw=1.2, label=f"{label} ({mem_key})")
    lat_ax.set(xlabel="frame", ylabel="latency per frame [ms]", title="latency")
    mem_ax.set(xlabel="frame", ylabel="GiB", title="memory")
    for ax in (lat_ax, mem_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    missing = [str(j) for j in args.json if not j.is_file()]
    if missing:
        print(f"plot_bench: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    plot(args.json, args.out, args.title)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
