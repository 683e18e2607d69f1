"""Scoring a stream against ground truth, the way the field does (see recon.eval).

`SequenceEvaluator` subscribes to (prediction, frame) pairs like any other consumer and, at
the end, reports ATE (Sim(3)-aligned, also as % of the ground-truth path length), RPE per
frame, and depth AbsRel / delta<1.25 after one median scale for the whole sequence.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recon.datasets.clips import depth_to_model
from recon.datasets.trajectory import Trajectory
from recon.datasets.types import Frame
from recon.eval import depth_metrics, sim3_scores, write_report

from .session import FramePrediction


class SequenceEvaluator:
    def __init__(self, name: str = "sequence", max_depth_frames: int = 2000) -> None:
        self.name = name
        self.max_depth_frames = max_depth_frames
        self._times: list[float] = []
        self._pred_extrinsics: list[np.ndarray] = []
        self._gt_extrinsics: list[np.ndarray] = []
        self._pred_depth: list[np.ndarray] = []
        self._gt_depth: list[np.ndarray] = []
        self._slot: dict[int, tuple[int | None, int | None]] = {}  # frame index -> (camera, depth) entry
        self.frames = 0

    def add(self, pred: FramePrediction, frame: Frame) -> None:
        self.frames += 1
        camera = depth = None
        if frame.extrinsic is not None:
            camera = len(self._pred_extrinsics)
            self._times.append(pred.timestamp)
            self._pred_extrinsics.append(np.asarray(pred.extrinsic, np.float64))
            self._gt_extrinsics.append(np.asarray(frame.extrinsic, np.float64))
        if frame.depth is not None and len(self._pred_depth) < self.max_depth_frames:
            depth = len(self._pred_depth)
            self._pred_depth.append(pred.depth.astype(np.float32))
            self._gt_depth.append(depth_to_model(frame.depth, pred.transform))
        self._slot[pred.index] = (camera, depth)

    def revise(self, pred: FramePrediction) -> None:
        """Score a revised prediction (recon.pipeline's on_revision) in place of the frame's
        earlier one; frames never added are ignored."""
        camera, depth = self._slot.get(pred.index, (None, None))
        if camera is not None:
            self._pred_extrinsics[camera] = np.asarray(pred.extrinsic, np.float64)
        if depth is not None:
            self._pred_depth[depth] = pred.depth.astype(np.float32)

    def compute(self) -> dict:
        """Metrics as plain numbers (and the raw result objects under "_results")."""
        out: dict = {"sequence": self.name, "frames": self.frames}
        results: dict = {}
        if len(self._gt_extrinsics) >= 3:
            times = np.asarray(self._times)
            ref = Trajectory.from_extrinsics(np.stack(self._gt_extrinsics), times)
            est = Trajectory.from_extrinsics(np.stack(self._pred_extrinsics), times)
            scores, a, r = sim3_scores(ref, est)
            out.update(scores)
            results.update(ape=a, rpe=r)
        if self._gt_depth:
            d = depth_metrics(np.stack(self._pred_depth), np.stack(self._gt_depth), scale_mode="median")
            out.update(depth_abs_rel=d.abs_rel, depth_delta1=d.delta1)
            results["depth"] = d
        out["_results"] = results
        return out

    def write(self, out_dir: str | os.PathLike, metrics: dict | None = None) -> dict[str, Path]:
        metrics = metrics or self.compute()
        res = metrics["_results"]
        if "ape" not in res:
            return {}
        extra = {k: v for k, v in res.items() if k not in ("ape", "rpe")}
        return write_report(out_dir, self.name, res["ape"], res.get("rpe"), extra=extra)


def format_metrics(m: dict) -> str:
    parts = []
    if "ate_rmse" in m:
        parts.append(f"ATE {m['ate_rmse']:.4f} ({m['ate_pct_of_path']:.2f}% of a {m['path_length']:.2f} path)")
        parts.append(f"RPE {m['rpe_trans_rmse']:.4f} / {m['rpe_rot_rmse_deg']:.2f} deg")
    if "depth_abs_rel" in m:
        parts.append(f"depth AbsRel {m['depth_abs_rel']:.4f}, delta<1.25 {m['depth_delta1']:.3f}")
    return "; ".join(parts) if parts else "no ground truth to score against"
