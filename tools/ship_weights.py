"""Ship trained weights: float16 safetensors shards + `<name>.index.json`, written atomically.

    python tools/ship_weights.py runs/tiny/model.safetensors recon/weights --name tiny
    python tools/ship_weights.py runs/tiny-linear/model.safetensors recon/weights --name tiny-linear --base tiny

With --base, tensors bitwise equal (after the float16 cast) to those of the weights
`<base>` already shipped in OUT_DIR (same name) are not written again: the index refers to
the base's shard files and records their sha256, and loading merges them (and refuses a
base re-shipped since: re-ship the derived weights after re-shipping their base).
"""

from __future__ import annotations

import argparse
import sys

from recon.checkpoint import CheckpointError, ship_weights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="checkpoint to ship (.safetensors, .index.json, .pt) or a preset name")
    p.add_argument("out_dir", help="folder to write into (the package's weights: recon/weights)")
    p.add_argument("--name", required=True, help="name of the shipped weights (the preset they belong to)")
    p.add_argument("--base", default=None, help="shipped weights in OUT_DIR to share equal tensors with")
    p.add_argument("--max-shard-mb", type=float, default=15.0, help="largest shard, in MB (10^6 bytes)")
    p.add_argument("--preset", default=None, help="architecture of a SRC file without an embedded config")
    args = p.parse_args(argv)
    try:
        files = ship_weights(args.src, args.out_dir, args.name, args.base, args.max_shard_mb, args.preset)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for f in files:
        print(f"{f.stat().st_size:>12,d}  {f}")
    print(f"{sum(f.stat().st_size for f in files):>12,d}  bytes in {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
