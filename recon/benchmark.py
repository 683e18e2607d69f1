"""The frozen held-out benchmark: fixed synthetic scenes the training never sees, plus the
real TUM RGB-D frames in ../shared/data/tum_fr3_office_17kf.

    recon benchmark --model tiny --memory full --out bench_out/      # one command

Synthetic: seeds below recon.train.TRAIN_SEED_BASE (training never draws them), every
family including HELD_OUT_FAMILIES (never used in training), every trajectory kind.
Do not change BENCHMARK_SCENES: published numbers (docs/MODEL_CARD.md) refer to it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

HELD_OUT_FAMILIES = ("corridor",)
TRAIN_FAMILIES = ("room", "tabletop", "outdoor")
_TRAJECTORIES = ("handheld", "orbit", "forward", "rotation", "fast")
# (seed, family, trajectory): 12 scenes, 3 per family.
BENCHMARK_SCENES: tuple[tuple[int, str, str], ...] = tuple(
    (1000 + i, ("room", "corridor", "tabletop", "outdoor")[i % 4], _TRAJECTORIES[i % 5]) for i in range(12)
)
TUM_FRAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "tum_fr3_office_17kf"


def _run_sequence(rec, sequence, name: str, progress: bool) -> dict:
    from recon.datasets.sources import SequenceSource

    from .evaluate import SequenceEvaluator
    from .pipeline import run_stream

    rec.reset()
    evaluator = SequenceEvaluator(name)
    summary = run_stream(SequenceSource(sequence), rec, on_prediction=evaluator.add,
                         on_revision=evaluator.revise, progress=progress)  # fmt: skip
    metrics = evaluator.compute()
    metrics.pop("_results")
    metrics["fps"] = summary.fps
    return metrics


def _scene_row(rec, scene: tuple[int, str, str], frames: int, size: int, progress: bool) -> dict:
    from recon.datasets.synthetic import SyntheticSequence

    seed, family, trajectory = scene
    seq = SyntheticSequence(seed, frames, height=size, width=size, family=family, trajectory=trajectory)
    return {"family": family, "trajectory": trajectory,
            **_run_sequence(rec, seq, f"{family}-{trajectory}-{seed}", progress)}  # fmt: skip


def make_reconstructor(spec: dict):
    """The benchmark's Reconstructor from plain options (model, preset, memory, device, size,
    refine, final_frames), so that worker processes can build their own."""
    from .checkpoint import load_model
    from .session import Reconstructor

    model, _ = load_model(spec["model"], preset=spec.get("preset"), device=spec["device"])
    refine = False
    if spec.get("refine", False):
        from .refine import RefineConfig

        refine = RefineConfig(final_frames=spec.get("final_frames", RefineConfig.final_frames))
    return Reconstructor(model, memory=spec["memory"], device=spec["device"], width=spec["size"], refine=refine)


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _worker_rows(spec: dict, scenes: list, frames: int, threads: int) -> list[dict]:
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    rec = make_reconstructor(spec)
    rows = []
    for scene in scenes:
        start = time.perf_counter()
        rows.append(_scene_row(rec, scene, frames, spec["size"], False))
        print(f"{rows[-1]['sequence']}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def _parallel_rows(spec: dict, frames: int, jobs: int, scenes: tuple = BENCHMARK_SCENES) -> list[dict]:
    """The synthetic scenes spread over `jobs` processes (scene i to process i % jobs), each
    with its own model and a share of the CPU threads. The refiner and the renderer are
    CPU-bound and serial per stream, so this is what keeps a GPU busy with --refine."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    jobs = min(jobs, len(scenes))
    threads = max(1, torch.get_num_threads() // jobs)
    shares = [list(scenes[j::jobs]) for j in range(jobs)]
    # Each worker's BLAS/OpenMP pools must be sized before it imports numpy, i.e. through the
    # environment it is spawned with; otherwise every worker starts a pool as wide as the machine.
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update({k: str(threads) for k in _THREAD_VARIABLES})
    try:  # spawn: CUDA cannot be used in a forked child
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_worker_rows, [spec] * jobs, shares, [frames] * jobs, [threads] * jobs))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    rows: list[dict] = [{}] * len(scenes)
    for j, share_rows in enumerate(results):
        rows[j::jobs] = share_rows
    return rows


def run_benchmark(rec, frames: int = 48, size: int = 224, tum: str | os.PathLike | None = TUM_FRAMES,
                  colmap: bool = False, progress: bool = False, jobs: int = 1,
                  spec: dict | None = None, seeds: list[int] | None = None) -> dict:  # fmt: skip
    """Run every benchmark scene (or those of `seeds`, a part to merge later: merge_results)
    through `rec` (or, with jobs > 1, through reconstructors that worker processes build from
    `spec`, see make_reconstructor) and the TUM frames through `rec`."""
    scenes = BENCHMARK_SCENES if seeds is None else tuple(s for s in BENCHMARK_SCENES if s[0] in set(seeds))
    if seeds is not None and len(scenes) != len(set(seeds)):
        raise ValueError(f"run_benchmark: seeds must be among {[s[0] for s in BENCHMARK_SCENES]}, got {seeds}")
    if jobs > 1:
        if spec is None:
            raise ValueError("run_benchmark: jobs > 1 needs the reconstructor's spec")
        rows = _parallel_rows({**spec, "size": size}, frames, jobs, scenes)
    else:
        rows = [_scene_row(rec, scene, frames, size, progress) for scene in scenes]
    result = {"frames": frames, "size": size, "synthetic_mean": _mean(rows), "synthetic": rows,
              "seeds": [s[0] for s in scenes]}  # fmt: skip
    if tum is not None and Path(tum).exists():
        from recon.datasets.readers import open_sequence

        sequence = open_sequence(tum)
        result["tum"] = _run_sequence(rec, sequence, "tum_fr3_office_17kf", progress)
        if colmap:
            from recon.eval.colmap_baseline import KnownCamera, run_colmap_sfm, score_against_ground_truth

            frames_ = list(sequence)
            cam = KnownCamera(frames_[0].intrinsic, frames_[0].image.shape[1], frames_[0].image.shape[0])
            sfm = run_colmap_sfm([f.image for f in frames_], camera=cam, max_image_size=320)
            scored = score_against_ground_truth(sfm, np.stack([f.extrinsic for f in frames_]),
                                                np.array([f.timestamp for f in frames_]), "tum_colmap")  # fmt: skip
            scored.pop("_results", None)
            result["tum_colmap"] = scored
    return result


def _mean(rows: list[dict]) -> dict:
    return {k: float(np.nanmean([r[k] for r in rows])) for k in ("ate_pct_of_path", "depth_abs_rel",
                                                                  "depth_delta1", "rpe_rot_rmse_deg")}  # fmt: skip


_RUN_KEYS = ("frames", "size", "model", "memory", "refine", "final_frames")


def merge_results(parts: list[dict]) -> dict:
    """One result from runs over disjoint parts of the synthetic scenes (`--seeds`) that together
    cover them all, with the same settings; TUM rows come from the part that has them."""
    settings = {tuple(p.get(k) for k in _RUN_KEYS) for p in parts}
    if len(settings) != 1:
        raise ValueError(f"merge: the parts were run with different settings {sorted(map(str, settings))}")
    by_seed = {}
    for part in parts:
        for seed, row in zip(part.get("seeds", [s[0] for s in BENCHMARK_SCENES]), part["synthetic"]):
            if seed in by_seed:
                raise ValueError(f"merge: scene {seed} is in two parts")
            by_seed[seed] = row
    missing = [s[0] for s in BENCHMARK_SCENES if s[0] not in by_seed]
    if missing:
        raise ValueError(f"merge: scenes {missing} are in no part")
    rows = [by_seed[s[0]] for s in BENCHMARK_SCENES]
    merged = {**{k: parts[0].get(k) for k in _RUN_KEYS}, "synthetic_mean": _mean(rows), "synthetic": rows,
              "seeds": [s[0] for s in BENCHMARK_SCENES], "merged_from": len(parts)}  # fmt: skip
    for part in parts:
        merged.update({k: part[k] for k in ("tum", "tum_colmap") if k in part})
    return merged


def format_table(result: dict) -> str:
    lines = ["| sequence | ATE % of path | RPE rot [deg] | depth AbsRel | delta<1.25 |", "|---|---|---|---|---|"]

    def cell(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    for r in result["synthetic"]:
        lines.append(f"| {r['sequence']} | {cell(r.get('ate_pct_of_path'))} | {cell(r.get('rpe_rot_rmse_deg'))} | "
                     f"{cell(r.get('depth_abs_rel'))} | {cell(r.get('depth_delta1'))} |")
    m = result["synthetic_mean"]
    lines.append(f"| **synthetic mean** | {cell(m['ate_pct_of_path'])} | {cell(m['rpe_rot_rmse_deg'])} | "
                 f"{cell(m['depth_abs_rel'])} | {cell(m['depth_delta1'])} |")
    for key in ("tum", "tum_colmap"):
        if key in result:
            r = result[key]
            lines.append(f"| {key} (ATE {cell(r.get('ate_rmse'))} m) | {cell(r.get('ate_pct_of_path'))} | "
                         f"{cell(r.get('rpe_rot_rmse_deg'))} | n/a | n/a |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="recon benchmark", description="The frozen held-out benchmark.")
    p.add_argument("--model", default="tiny")
    p.add_argument("--preset")
    p.add_argument("--memory", default="full")
    p.add_argument("--device", default="auto")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--colmap", action="store_true", help="also run the pycolmap SfM baseline on the TUM frames")
    p.add_argument("--refine", action="store_true", help="refine the cameras (recon.refine); the files get a _refine suffix")
    p.add_argument("--final-frames", type=int, default=64,
                   help="with --refine: frames of the end-of-stream adjustment (default 64; 0: off, the "
                        "streamed results are scored, files get a _streamed suffix)")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes for the synthetic scenes (each loads the model; default 1)")
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")],
                   help="only these scenes (comma-separated seeds), e.g. to split the benchmark over "
                        "machines; the files get a _part-<seeds> suffix (see --merge)")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="combine the result files of runs over parts (--seeds) into one, and exit")
    p.add_argument("--out", default="benchmark_out")
    args = p.parse_args(argv)
    if args.merge:
        parts = []
        for path in args.merge:
            try:
                parts.append(json.loads(Path(path).read_text()))
            except (OSError, ValueError) as e:
                raise SystemExit(f"recon benchmark: cannot read {path}: {e}")
        try:
            result = merge_results(parts)
        except ValueError as e:
            raise SystemExit(f"recon benchmark: {e}")
        name = Path(args.merge[0]).stem.split("_part-")[0]
    else:
        spec = {"model": args.model, "preset": args.preset, "memory": args.memory, "device": args.device,
                "size": args.size, "refine": args.refine, "final_frames": args.final_frames}  # fmt: skip
        rec = make_reconstructor(spec)
        result = run_benchmark(rec, args.frames, args.size, colmap=args.colmap, jobs=args.jobs, spec=spec,
                               seeds=args.seeds)  # fmt: skip
        result.update(model=args.model, memory=args.memory, refine=args.refine)
        name = f"benchmark_{args.memory}"
        if args.refine:
            result["final_frames"] = args.final_frames
            name += "_refine" if args.final_frames > 0 else "_refine_streamed"
        if args.seeds:
            name += "_part-" + "-".join(map(str, result["seeds"]))
    from recon.eval import write_json

    from .atomic import write_text_atomic

    out = Path(args.out)
    write_json(out / f"{name}.json", result)
    table = format_table(result)
    write_text_atomic(out / f"{name}.md", table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
