"""The `recon` command line.

    recon run SOURCE [--model tiny] [--memory full] [--viewer spawn|web|none] [--out DIR] ...
    recon demo                      # synthetic scene, shipped weights, recording + exports + metrics
    recon batch INPUT_DIR --out DIR # every video / image folder inside, resumable, torchrun-shardable
    recon eval DATASET --out DIR    # score against ground truth (TUM, 7-Scenes, COLMAP, NeRF, folder)
    recon train ... | recon bench ... | recon info MODEL

Every error a user can cause (bad paths, corrupt videos, wrong checkpoints, unknown presets,
missing cameras, unwritable outputs) is one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
MEMORY_CHOICES = ("full", "rolling", "linear", "window")


# -- shared pieces ---------------------------------------------------------------------------
def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="preset (tiny, small, vggt-1b, streamvggt) or checkpoint path "
                                                   "(default: tiny with its shipped weights)")
    p.add_argument("--preset", help="architecture of a checkpoint without embedded config (default vggt-1b)")
    p.add_argument("--memory", default=None, choices=MEMORY_CHOICES,
                   help="memory strategy (default: full, or linear for linear-attention models)")
    p.add_argument("--budget-mb", type=float, help="cache budget for --memory rolling, in MB")
    p.add_argument("--budget-frames", type=int, help="cache budget for --memory rolling, in frames' worth of "
                                                      "tokens (default: 16)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument("--precision", default="bf16", choices=("bf16", "mixed", "fp32"),
                   help="CUDA compute precision: bf16 trunk and depth head (default), mixed (fp32 heads), fp32")
    p.add_argument("--points-from", default="depth", choices=("depth", "head"),
                   help="world points: predicted depth unprojected with the predicted camera (default), or "
                        "the point-map head")
    p.add_argument("--width", type=int, help="model input width in pixels, multiple of 14 (default: the model's)")
    p.add_argument("--refine", action="store_true",
                   help="re-solve each camera against a SIFT landmark map by PnP and windowed bundle adjustment, "
                        "the model's depth as a prior (recon.refine; ~0.1 s a frame on the CPU)")
    p.add_argument("--final-frames", type=int, default=64,
                   help="with --refine: at the end of the stream, adjust the last N frames together and fit "
                        "their depth to the adjusted landmarks; the exports get the revised frames "
                        "(default: 64; 0: off)")


def _add_output_args(p: argparse.ArgumentParser, default_export: str = "ply,traj") -> None:
    p.add_argument("--out", help="output folder for exports")
    p.add_argument("--export", default=default_export,
                   help=f"comma list of ply,traj,colmap,depth,mesh (default: {default_export}; needs --out)")
    p.add_argument("--conf-threshold", type=float, default=None,
                   help="absolute minimum confidence of exported/viewed points (confidences are > 1); "
                        "default: none, keep the most confident half of each frame")


def _reconstructor(args):
    from .checkpoint import load_model
    from .device import resolve_device
    from .session import Reconstructor

    device = resolve_device(args.device)
    model, weights = load_model(args.model, preset=args.preset, device=device)
    if weights is None:
        print(f"recon: warning: no weights for {args.model!r}; using random initialisation", file=sys.stderr)
    options = {}
    if args.memory == "rolling":
        if args.budget_mb is not None and args.budget_frames is not None:
            raise ValueError("give at most one of --budget-mb and --budget-frames")
        if args.budget_mb is not None:
            options["budget_mb"] = args.budget_mb
        if args.budget_frames is not None:
            options["budget_frames"] = args.budget_frames
    return Reconstructor(model, memory=args.memory, device=device, width=args.width, precision=args.precision,
                         world_points=args.points_from, refine=_refine_config(args), **options)


def _refine_config(args):
    """False, or the refiner's settings from --refine / --final-frames."""
    if args.final_frames < 0:
        raise ValueError(f"--final-frames must be 0 or more, got {args.final_frames}")
    if not args.refine:
        return False
    from .refine import RefineConfig

    return RefineConfig(final_frames=args.final_frames)


def _exporter(args):
    if not args.out:
        return None
    from .export import Exporter

    return Exporter(args.out, args.export, conf_threshold=args.conf_threshold)


def _viewer(args, default_rrd: str | None = None):
    mode = getattr(args, "viewer", "none")
    rrd = getattr(args, "rrd", None) or default_rrd
    if mode == "none" and rrd is None:
        return None
    from recon.viewer.rerun_logger import RerunLogger

    logger = RerunLogger(spawn=mode == "spawn", web=mode == "web", rrd=rrd, conf_threshold=args.conf_threshold)
    if logger.url:
        print(f"web viewer: {logger.url}", flush=True)
    return logger


def _report(summary, what: str = "") -> None:
    line = f"{summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.1f} FPS)"
    if summary.dropped:
        line += f", {summary.dropped} dropped"
    if summary.disconnected:
        line += ", source disconnected"
    if summary.interrupted:
        line += ", interrupted"
    print(f"{what}{line}")
    for kind, path in summary.outputs.items():
        print(f"  {kind:10s} {path}")


# -- commands ------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from recon.datasets.sources import open_source

    from .pipeline import run_stream

    # Cheap checks first (output folder, source), so bad input fails before a model loads.
    exporter = _exporter(args)
    source = open_source(args.source, stride=args.stride, target_fps=args.fps, start=args.start,
                         max_frames=args.max_frames)  # fmt: skip
    try:
        rec = _reconstructor(args)
    except BaseException:
        source.close()
        raise
    viewer = _viewer(args)
    summary = run_stream(source, rec, viewer=viewer, exporter=exporter, progress=not args.quiet)
    _report(summary)
    return EXIT_INTERRUPTED if summary.interrupted else 0


def cmd_demo(args) -> int:
    from recon.datasets.synthetic import SyntheticSequence
    from recon.datasets.sources import SequenceSource

    from .evaluate import SequenceEvaluator, format_metrics
    from .pipeline import run_stream

    out = Path(args.out)
    args.export = args.export or "ply,traj"
    exporter = _exporter(args)
    rec = _reconstructor(args)
    sequence = SyntheticSequence(seed=args.seed, num_frames=args.frames, height=args.render_size, width=args.render_size)
    evaluator = SequenceEvaluator(f"synthetic-{args.seed}")
    viewer = _viewer(args, default_rrd=str(out / "recording.rrd"))
    summary = run_stream(SequenceSource(sequence), rec, viewer=viewer, exporter=exporter,
                         on_prediction=evaluator.add, on_revision=evaluator.revise, progress=not args.quiet)  # fmt: skip
    if viewer is not None and viewer.rrd is not None:
        summary.outputs["recording"] = viewer.rrd
    metrics = evaluator.compute()
    summary.outputs.update({f"report_{k}": v for k, v in evaluator.write(out, metrics).items()})
    _report(summary, what="demo: ")
    print(f"metrics against the scene's ground truth: {format_metrics(metrics)}")
    return EXIT_INTERRUPTED if summary.interrupted else 0


def cmd_eval(args) -> int:
    from recon.datasets.readers import open_sequence
    from recon.datasets.sources import SequenceSource

    from .evaluate import SequenceEvaluator, format_metrics
    from .pipeline import run_stream

    sequence = open_sequence(args.dataset)
    if not sequence.has_ground_truth():
        raise ValueError(f"{args.dataset}: no ground-truth poses to evaluate against")
    out = Path(args.out)
    exporter = _exporter(args)
    rec = _reconstructor(args)
    evaluator = SequenceEvaluator(Path(args.dataset).name)
    summary = run_stream(SequenceSource(sequence, max_frames=args.max_frames), rec, exporter=exporter,
                         on_prediction=evaluator.add, on_revision=evaluator.revise, progress=not args.quiet)  # fmt: skip
    metrics = evaluator.compute()
    summary.outputs.update(evaluator.write(out, metrics))
    _report(summary, what="eval: ")
    print(f"{evaluator.name}: {format_metrics(metrics)}")
    return EXIT_INTERRUPTED if summary.interrupted else 0


def cmd_batch(args) -> int:
    from .batch import run_batch

    return run_batch(args)


def cmd_bench(args) -> int:
    from .bench import run

    run(args)
    return 0


def cmd_info(args) -> int:
    from .checkpoint import load_model

    model, weights = load_model(args.model, preset=args.preset)
    c = model.config
    print(f"model      {c.name}")
    print(f"weights    {weights if weights else 'random initialisation (no shipped weights for this preset)'}")
    print(f"parameters {sum(p.numel() for p in model.parameters()):,}")
    print(f"tensors    {len(model.state_dict())}")
    print(f"shape      embed {c.embed_dim}, depth {c.depth}, heads {c.num_heads}, patch {c.patch_size}, "
          f"default width {c.default_width}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .bench import add_arguments as bench_arguments

    parser = argparse.ArgumentParser(prog="recon", description="Streaming 3D reconstruction.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--version", action="version", version=f"streamrecon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="reconstruct a webcam, stream, video file or image folder")
    run.add_argument("source", help="webcam index or /dev/videoN, rtsp/http URL, video file, image folder, "
                                    "or synthetic[:SEED]")
    _add_model_args(run)
    run.add_argument("--viewer", default="none", choices=("spawn", "web", "none"),
                     help="spawn the native Rerun viewer, serve the web viewer, or none (default)")
    run.add_argument("--rrd", help="also save a Rerun recording to this file")
    _add_output_args(run)
    run.add_argument("--stride", type=int, default=1, help="use every N-th frame")
    run.add_argument("--fps", type=float, help="target frame rate (subsample files, throttle cameras)")
    run.add_argument("--start", type=int, default=0, help="skip the first N frames")
    run.add_argument("--max-frames", type=int, help="stop after N frames")
    run.add_argument("--quiet", action="store_true", help="no progress bar / status line")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="reconstruct the built-in synthetic scene and score it")
    _add_model_args(demo)
    demo.add_argument("--viewer", default="none", choices=("spawn", "web", "none"))
    demo.add_argument("--rrd", help="recording path (default: OUT/recording.rrd)")
    _add_output_args(demo)
    demo.set_defaults(out="demo_out")
    demo.add_argument("--seed", type=int, default=7, help="synthetic scene seed (default: 7)")
    demo.add_argument("--frames", type=int, default=48, help="frames to render (default: 48)")
    demo.add_argument("--render-size", type=int, default=224, help="rendered image side in pixels (default: 224)")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)

    batch = sub.add_parser("batch", help="every video file / image folder in a folder, one output folder each")
    batch.add_argument("input_dir", help="folder holding videos and/or image folders")
    _add_model_args(batch)
    _add_output_args(batch)
    batch.add_argument("--stride", type=int, default=1)
    batch.add_argument("--max-frames", type=int)
    batch.add_argument("--force", action="store_true", help="redo inputs that already finished")
    batch.add_argument("--quiet", action="store_true")
    batch.set_defaults(func=cmd_batch)

    ev = sub.add_parser("eval", help="reconstruct a dataset sequence and score it against its ground truth")
    ev.add_argument("dataset", help="TUM / 7-Scenes / COLMAP / NeRF / image folder with a trajectory")
    _add_model_args(ev)
    _add_output_args(ev, default_export="traj")
    ev.set_defaults(out="eval_out")
    ev.add_argument("--max-frames", type=int)
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=cmd_eval)

    bench = sub.add_parser("bench", help="per-frame latency and memory against frame index")
    bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    # Listed for `recon --help`; main() hands their arguments to their own parsers.
    sub.add_parser("train", help="train a model (see `recon train --help`)", add_help=False)
    sub.add_parser("benchmark", help="the frozen held-out benchmark (see `recon benchmark --help`)", add_help=False)

    info = sub.add_parser("info", help="load a model (preset or checkpoint) and describe it")
    info.add_argument("model", help="preset name or checkpoint path")
    info.add_argument("--preset", help="architecture for checkpoints without an embedded config")
    info.set_defaults(func=cmd_info)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from recon.datasets.sources import SourceError

    from .checkpoint import CheckpointError
    from .export import ExportError

    return (CheckpointError, SourceError, ExportError, ValueError, OSError)


# Subcommands with their own parsers: everything after the name is theirs (argparse's
# REMAINDER would reject a first argument that looks like an option, e.g. `--model`).
_DELEGATED = {"train": "recon.train", "benchmark": "recon.benchmark"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _DELEGATED:
        module = _DELEGATED[argv[0]]
        run = lambda: __import__(module, fromlist=["main"]).main(argv[1:])  # noqa: E731
    else:
        args = build_parser().parse_args(argv)
        run = lambda: args.func(args)  # noqa: E731
    try:
        return run()
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _user_errors() as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"recon: error: {message}", file=sys.stderr)
        if os.environ.get("RECON_DEBUG"):
            raise
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
