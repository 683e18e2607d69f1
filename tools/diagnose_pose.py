"""Where does a model's camera error come from? Rotation error against how far the camera has
turned from the first frame, and frame-to-frame rotation against the ground truth's.

    python tools/diagnose_pose.py --model tiny

For each of the 12 held-out benchmark scenes, 48 frames at 224 px through the block-causal
batch forward (equal to streaming `full`). Rotations are compared in the first camera's frame
(the model's world), so no alignment is needed:
  step gt / pred   mean rotation between consecutive frames, ground truth / predicted (deg)
  step err         median error of the frame-to-frame rotation (deg; RPE's rotation, robust)
  err by turn      mean error of the rotation to the first camera, by how far the ground-truth
                   camera has turned from it (deg; bins of ANGLE_BINS): error that grows with
                   the turn means the model loses the camera once the first view is out of sight.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from recon.eval.trajectory import rotation_angle_deg

ANGLE_BINS = (0.0, 30.0, 60.0, 90.0, 180.01)


def rotation_errors(R_pred: np.ndarray, R_gt: np.ndarray, bins: tuple[float, ...] = ANGLE_BINS) -> dict:
    """R_pred, R_gt [S, 3, 3] camera-from-world rotations. Both are re-expressed relative to
    their first camera. Returns step_gt, step_pred, step_err (degrees, over consecutive frames)
    and by_turn: one mean error per bin of the ground-truth angle to the first camera (NaN for
    an empty bin)."""
    R_pred, R_gt = np.asarray(R_pred, np.float64), np.asarray(R_gt, np.float64)
    R_pred, R_gt = R_pred @ R_pred[:1].swapaxes(-1, -2), R_gt @ R_gt[:1].swapaxes(-1, -2)
    step_gt = R_gt[1:] @ R_gt[:-1].swapaxes(-1, -2)
    step_pred = R_pred[1:] @ R_pred[:-1].swapaxes(-1, -2)
    turn = rotation_angle_deg(R_gt)
    err = rotation_angle_deg(R_pred @ R_gt.swapaxes(-1, -2))
    by_turn = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        inside = (turn >= lo) & (turn < hi)
        by_turn.append(float(err[inside].mean()) if inside.any() else float("nan"))
    return {
        "step_gt": float(rotation_angle_deg(step_gt).mean()),
        "step_pred": float(rotation_angle_deg(step_pred).mean()),
        "step_err": float(np.median(rotation_angle_deg(step_pred @ step_gt.swapaxes(-1, -2)))),
        "by_turn": by_turn,
    }


def main() -> int:
    from recon.benchmark import BENCHMARK_SCENES
    from recon.checkpoint import load_model
    from recon.datasets.synthetic import render_batch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    args = p.parse_args()
    model, _ = load_model(args.model)
    model.eval()
    names = [f"{lo:.0f}-{hi:.0f}" for lo, hi in zip(ANGLE_BINS[:-1], ANGLE_BINS[1:])]
    print(f"{'scene':28s} step gt   pred    err   error by turn from frame 0: " + " ".join(f"{n:>7s}" for n in names))
    rows = []
    for seed, family, trajectory in BENCHMARK_SCENES:
        batch = render_batch([seed], 48, 224, 224, families=[family], trajectories=[trajectory])
        with torch.no_grad():
            extrinsic = model(batch["images"], causal=True)["extrinsic"][0]
        r = rotation_errors(extrinsic[:, :3, :3].numpy(), batch["extrinsic"][0, :, :3, :3].numpy())
        rows.append(r)
        name = f"{family}-{trajectory}-{seed}"
        print(f"{name:28s} {r['step_gt']:7.2f} {r['step_pred']:6.2f} {r['step_err']:6.2f}" + " " * 28
              + " ".join(f"{v:7.1f}" for v in r["by_turn"]), flush=True)  # fmt: skip
    by_turn = np.nanmean(np.array([r["by_turn"] for r in rows]), axis=0)
    means = [np.mean([r[k] for r in rows]) for k in ("step_gt", "step_pred", "step_err")]
    print(f"{'mean':28s} {means[0]:7.2f} {means[1]:6.2f} {means[2]:6.2f}" + " " * 28
          + " ".join(f"{v:7.1f}" for v in by_turn))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
