"""Where does a model's depth error come from? Per-sequence against per-frame scale, the first
frame against the last ones, held-out scenes against unseen seeds of the training families.

    python tools/diagnose_depth.py --model tiny [--figure docs/images/tiny_depth_examples.png]

For each scene (the 12 held-out benchmark scenes, then 6 unseen training-family seeds), 48
frames at 224 px through the block-causal batch forward (equal to streaming `full`):
  seq      AbsRel after one median scale per sequence (the benchmark's metric)
  frame    mean over frames of AbsRel after one median scale per frame (shape error alone)
  first    AbsRel of frame 0 (per-frame scale): the model has seen one image
  last8    mean AbsRel of the last 8 frames (per-frame scale)
  drift    std of the log per-frame scales: how far the stream's scale wanders
A large seq - frame gap is scale drift; frame >> 0 is per-frame shape error.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from recon.benchmark import BENCHMARK_SCENES, TRAIN_FAMILIES
from recon.checkpoint import load_model
from recon.datasets.synthetic import TRAJECTORIES, render_batch
from recon.train import TRAIN_SEED_BASE

COLUMNS = ("seq", "frame", "first", "last8", "drift")


def _abs_rel(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> float:
    return ((pred[valid] - gt[valid]).abs() / gt[valid]).mean().item()


def diagnose(model, seed: int, family: str, trajectory: str, frames: int = 48) -> tuple[dict, dict]:
    batch = render_batch([seed], frames, 224, 224, families=[family], trajectories=[trajectory])
    with torch.no_grad():
        depth = model(batch["images"], causal=True)["depth"][0]
    gt, valid = batch["depth"][0], batch["valid"][0] & (batch["depth"][0] > 0)
    scales = torch.stack([gt[i][valid[i]].median() / depth[i][valid[i]].median() for i in range(frames)])
    per_frame = [_abs_rel(depth[i] * scales[i], gt[i], valid[i]) for i in range(frames)]
    seq_scale = gt[valid].median() / depth[valid].median()
    row = {"seq": _abs_rel(depth * seq_scale, gt, valid), "frame": float(np.mean(per_frame)), "first": per_frame[0],
           "last8": float(np.mean(per_frame[-8:])), "drift": scales.log().std().item()}  # fmt: skip
    return row, {"images": batch["images"][0], "gt": gt, "pred": depth * seq_scale, "valid": valid}


def figure(examples: list[dict], path: str) -> None:
    """Rows: RGB | ground truth | prediction (sequence scale) | AbsRel (0 to 0.5)."""
    import cv2

    rows = []
    for ex in examples:
        for i in (0, len(ex["gt"]) - 1):
            img = (ex["images"][i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)[..., ::-1]
            gt, pred, valid = ex["gt"][i].numpy(), ex["pred"][i].numpy(), ex["valid"][i].numpy()
            hi = np.percentile(gt[valid], 98)

            def colour(x, vmax, cmap):
                c = cv2.applyColorMap(np.clip(x / vmax * 255, 0, 255).astype(np.uint8), cmap)
                return np.where(valid[..., None], c, 0)

            err = np.where(valid, np.abs(pred - gt) / np.maximum(gt, 1e-6), 0)
            rows.append(np.concatenate([img, colour(gt, hi, cv2.COLORMAP_TURBO), colour(pred, hi, cv2.COLORMAP_TURBO),
                                        colour(err, 0.5, cv2.COLORMAP_INFERNO)], 1))  # fmt: skip
    im = np.concatenate(rows, 0)
    im = cv2.resize(im, (im.shape[1] * 3 // 4, im.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(path, im):
        raise SystemExit(f"error: cannot write {path}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--figure", help="write a PNG of two scenes (first and last frame)")
    args = p.parse_args()
    model, _ = load_model(args.model)
    model.eval()
    held_out = list(BENCHMARK_SCENES)
    unseen = [(TRAIN_SEED_BASE + 1_000_000 + i, TRAIN_FAMILIES[i % 3], TRAJECTORIES[i % 5]) for i in range(6)]
    results, examples = {"held-out": [], "training families": []}, []
    for group, scenes in (("held-out", held_out), ("training families", unseen)):
        for seed, family, trajectory in scenes:
            row, ex = diagnose(model, seed, family, trajectory)
            results[group].append(row)
            if args.figure and (seed, family) in ((1000, "room"), (1007, "outdoor")):
                examples.append(ex)
            print(f"{family}-{trajectory}-{seed:<8d} " + "  ".join(f"{k} {row[k]:.3f}" for k in COLUMNS), flush=True)
    for group, rows in results.items():
        print(f"mean, {group:18s} " + "  ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in COLUMNS))
    if args.figure:
        figure(examples, args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
