"""COLMAP incremental SfM on a dataset, scored like our model (recon.eval.colmap_baseline).

    python tools/colmap_baseline.py DATASET --out DIR [--matcher sequential] [--max-image-size 640]

Writes DIR/<name>_colmap_metrics.json (metrics, per-frame registration, camera, timings),
DIR/<name>_colmap_metrics.md (one table row with the keys of SequenceEvaluator.compute) and
DIR/<name>_colmap_trajectory.txt (registered poses, TUM format, COLMAP's scale). Known
intrinsics from the dataset are used, fixed, unless --estimate-intrinsics.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="dataset folder (anything recon.datasets.readers.open_sequence reads)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", help="name in the report (default: the dataset's)")
    p.add_argument("--matcher", choices=("exhaustive", "sequential"), default="exhaustive")
    p.add_argument("--max-image-size", type=int, help="SIFT image size limit in pixels (COLMAP default 3200)")
    p.add_argument("--max-features", type=int, help="SIFT features per image (COLMAP default 8192)")
    p.add_argument("--estimate-intrinsics", action="store_true", help="let COLMAP estimate a SIMPLE_RADIAL camera")
    p.add_argument("--stride", type=int, default=1, help="use every n-th frame")
    p.add_argument("--max-frames", type=int, help="use at most this many frames (after --stride)")
    p.add_argument("--threads", type=int, default=-1, help="CPU threads for COLMAP (-1: all)")
    p.add_argument("--keep", action="store_true", help="keep COLMAP's working folder (database, model) under --out")
    return p


def run(args: argparse.Namespace) -> dict:
    from recon.datasets.readers import open_sequence
    from recon.datasets.trajectory import Trajectory, write_tum
    from recon.eval.colmap_baseline import KnownCamera, run_colmap_sfm, score_against_ground_truth
    from recon.eval.report import write_json, write_markdown_table

    if args.stride < 1 or (args.max_frames is not None and args.max_frames < 3):
        raise ValueError(f"--stride must be >= 1 and --max-frames >= 3, got {args.stride} and {args.max_frames}")
    seq = open_sequence(args.dataset)
    indices = list(range(0, len(seq), args.stride))[: args.max_frames]
    name = args.name or seq.name
    first = seq[indices[0]]
    camera = None
    if not args.estimate_intrinsics:
        if first.intrinsic is None:
            raise ValueError(f"{args.dataset}: the dataset has no intrinsics; pass --estimate-intrinsics")
        camera = KnownCamera(first.intrinsic, first.image.shape[1], first.image.shape[0])
    stamps, gt = [], []

    def images():  # decodes each frame once, collecting its ground truth on the way
        for i in indices:
            frame = seq[i]
            stamps.append(frame.timestamp)
            gt.append(np.full((3, 4), np.nan) if frame.extrinsic is None else frame.extrinsic)
            yield frame.image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run_colmap_sfm(images(), workdir=out if args.keep else None, camera=camera, matcher=args.matcher,
                            max_image_size=args.max_image_size, max_num_features=args.max_features,
                            num_threads=args.threads, keep=args.keep)  # fmt: skip
    metrics = score_against_ground_truth(result, np.stack(gt), np.asarray(stamps), name=name)
    row = {k: v for k, v in metrics.items() if not k.startswith("_")}
    config = dict(vars(args))
    details = {
        "frame_index": indices, "timestamps": stamps, "registered": result.registered,
        "camera_model": result.camera_model, "camera_params": result.camera_params, "intrinsic": result.intrinsic,
        "num_models": result.num_models, "mean_reprojection_error_px": result.mean_reprojection_error,
        "timings_s": result.timings, "workdir": str(result.workdir) if result.workdir else None,
    }  # fmt: skip
    stem = out / f"{name}_colmap"
    write_json(f"{stem}_metrics.json", {"metrics": row, "config": config, "colmap": details,
                                        **metrics["_results"]})  # fmt: skip
    write_markdown_table(f"{stem}_metrics.md", [row], title=f"COLMAP baseline: {name}")
    if result.num_registered:
        reg = result.registered
        write_tum(f"{stem}_trajectory.txt", Trajectory.from_extrinsics(result.extrinsics[reg], np.asarray(stamps)[reg]))
    return row


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        row = run(args)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"colmap_baseline: error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        if os.environ.get("RECON_DEBUG"):
            raise
        return 2
    print(f"{row['sequence']}: {row['registered']}/{row['frames']} registered, ATE {row['ate_rmse']:.4f} "
          f"({row['ate_pct_of_path']:.2f}% of {row['path_length']:.2f}), RPE {row['rpe_trans_rmse']:.4f} / "
          f"{row['rpe_rot_rmse_deg']:.2f} deg, {row['num_points3D']} points, {row['runtime_s']:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
