"""The `recon` command line.

Every error a user can cause (bad paths, wrong checkpoints, unknown presets, missing
devices) is reported as one line on stderr with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .checkpoint import CheckpointError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run

    run(args)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .checkpoint import load_model

    model, weights = load_model(args.model, preset=args.preset)
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    print(f"model      {c.name}")
    print(f"weights    {weights if weights else 'random initialisation (no shipped weights for this preset)'}")
    print(f"parameters {n:,}")
    print(f"tensors    {len(model.state_dict())}")
    print(f"shape      embed {c.embed_dim}, depth {c.depth}, heads {c.num_heads}, patch {c.patch_size}, "
          f"default width {c.default_width}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .bench import add_arguments as bench_arguments

    parser = argparse.ArgumentParser(prog="recon", description="Streaming 3D reconstruction.")
    parser.add_argument("--version", action="version", version=f"streamrecon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser("bench", help="per-frame latency and memory against frame index")
    bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)

    info = sub.add_parser("info", help="load a model (preset or checkpoint) and describe it")
    info.add_argument("model", help="preset name (tiny, small, vggt-1b, streamvggt) or checkpoint path")
    info.add_argument("--preset", help="architecture for checkpoints without an embedded config")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CheckpointError, ValueError, FileNotFoundError, PermissionError, NotADirectoryError) as e:
        print(f"recon: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
