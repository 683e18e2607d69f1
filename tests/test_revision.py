"""End-of-stream revisions (the refiner's final adjustment, recon.refine): frames already
delivered are replaced, by index, in the exports, the evaluation and the run loop."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from recon.datasets.trajectory import read_tum
from recon.datasets.types import Frame
from recon.evaluate import SequenceEvaluator
from recon.export import Exporter, ExportError
from recon.pipeline import run_stream

from .test_export import make_prediction, plane_residual


def scaled(pred, factor: float = 2.0):
    """The same frame in a world scaled by `factor` about its origin: the camera's translation,
    the depth and the world points scale, the rotation does not."""
    extrinsic = pred.extrinsic.copy()
    extrinsic[:, 3] *= factor
    return dataclasses.replace(pred, extrinsic=extrinsic, depth=pred.depth * factor,
                               world_points=pred.world_points * factor)  # fmt: skip


def _ply_points(path) -> np.ndarray:
    import open3d as o3d

    return np.asarray(o3d.io.read_point_cloud(str(path)).points)


def test_revising_every_frame_replaces_cameras_depth_and_the_fused_cloud(tmp_path):
    preds = [make_prediction(i) for i in range(3)]
    revised = [scaled(p) for p in preds]
    with Exporter(tmp_path, formats="ply,traj,depth", depth_format="npz", conf_threshold=1.5,
                  conf_percentile=None) as exporter:  # fmt: skip
        for pred in preds:
            exporter.add(pred)
        exporter.revise(revised)
    traj = read_tum(tmp_path / "trajectory_tum.txt")
    np.testing.assert_allclose(traj.positions, [-p.extrinsic[:, :3].T @ p.extrinsic[:, 3] for p in revised], atol=1e-5)
    for pred in revised:
        np.testing.assert_array_equal(np.load(tmp_path / f"depth/{pred.index:06d}.npz")["depth"], pred.depth)
    points = _ply_points(tmp_path / "points.ply")
    assert len(points) > 100
    assert plane_residual(points / 2.0) < 1e-3  # the cloud is fused from the revised frames only


def test_revising_some_frames_keeps_the_streamed_cloud_and_warns(tmp_path, caplog):
    preds = [make_prediction(i) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="recon.export.exporter"):
        with Exporter(tmp_path, formats="ply,traj", conf_threshold=1.5, conf_percentile=None) as exporter:
            for pred in preds:
                exporter.add(pred)
            exporter.revise([scaled(preds[2])])
    assert "covers 1 of 3 frames" in caplog.text
    assert plane_residual(_ply_points(tmp_path / "points.ply")) < 1e-3  # streamed geometry
    traj = read_tum(tmp_path / "trajectory_tum.txt")
    np.testing.assert_allclose(traj.positions[2], -preds[2].extrinsic[:, :3].T @ preds[2].extrinsic[:, 3] * 2, atol=1e-5)
    np.testing.assert_allclose(traj.positions[1], -preds[1].extrinsic[:, :3].T @ preds[1].extrinsic[:, 3], atol=1e-6)


def test_revision_of_an_unknown_frame_or_after_finalize_is_refused(tmp_path):
    exporter = Exporter(tmp_path, formats="traj")
    exporter.add(make_prediction(0))
    with pytest.raises(ExportError, match="frame 5 is revised but was never added"):
        exporter.revise([make_prediction(5)])
    exporter.finalize()
    with pytest.raises(ExportError, match="finalized"):
        exporter.revise([make_prediction(0)])


def _frame(pred) -> Frame:
    depth = pred.depth * 1.1  # ground truth that the revision matches and the stream does not
    return Frame(image=np.zeros((28, 42, 3), np.uint8), timestamp=pred.timestamp, index=pred.index,
                 depth=depth.astype(np.float32), extrinsic=pred.extrinsic.astype(np.float64))  # fmt: skip


def _on_a_circle(pred, wobble: float = 0.0):
    """The prediction with its camera centre moved onto a circle (make_prediction's are collinear,
    which a Sim(3) alignment cannot score)."""
    angle = 0.7 * pred.index
    centre = np.array([np.cos(angle), np.sin(angle), 0.1 * pred.index + wobble * (pred.index % 2)])
    R = pred.extrinsic[:, :3].astype(np.float64)
    return dataclasses.replace(pred, extrinsic=np.concatenate((R, (-R @ centre)[:, None]), 1).astype(np.float32))


def test_evaluator_scores_the_revision_in_place_of_the_streamed_frame():
    from recon.preprocess import preprocess_frame

    same_size = preprocess_frame(np.zeros((28, 42, 3), np.uint8), target_width=42).transform  # GT at model size
    preds = [dataclasses.replace(_on_a_circle(make_prediction(i)), transform=same_size) for i in range(4)]
    frames = [_frame(p) for p in preds]
    evaluator = SequenceEvaluator()
    for pred, frame in zip(preds, frames):
        wrong = dataclasses.replace(pred, depth=pred.depth * np.linspace(0.5, 1.5, pred.depth.shape[1], dtype=np.float32),
                                    extrinsic=_on_a_circle(pred, wobble=0.5).extrinsic)  # fmt: skip
        evaluator.add(wrong, frame)
    assert evaluator.compute()["ate_rmse"] > 0.05
    before = evaluator.compute()["depth_abs_rel"]
    for pred in preds:
        evaluator.revise(pred)
    evaluator.revise(make_prediction(9))  # never added: ignored
    after = evaluator.compute()
    assert before > 0.1 and after["depth_abs_rel"] < 1e-5 and after["ate_rmse"] < 1e-5
    assert after["frames"] == 4


class _Reconstructor:
    """Streams fixed predictions and revises them all at the end, as the refiner does."""

    def __init__(self, preds, revised):
        self.preds, self.revised, self.finished = list(preds), revised, 0

    def push(self, image, timestamp=None):
        return [self.preds.pop(0)]

    def flush(self):
        return []

    def finish(self):
        self.finished += 1
        return self.revised

    def memory_bytes(self) -> int:
        return 0


class _Source:
    live = True  # no prefetch: the frames go straight to push()

    def __init__(self, frames, stop_after: int | None = None):
        self.frames, self.stop_after = frames, stop_after

    def __iter__(self):
        for i, frame in enumerate(self.frames):
            if i == self.stop_after:
                raise KeyboardInterrupt
            yield frame


class _Viewer:
    def __init__(self):
        self.logged, self.revised, self.closed = [], [], False

    def log(self, pred, stats):
        self.logged.append(pred.index)

    def revise(self, preds):
        self.revised.append([p.index for p in preds])

    def close(self):
        self.closed = True


@pytest.mark.parametrize("stop_after", [None, 2])
def test_run_stream_hands_the_revision_to_every_subscriber(tmp_path, stop_after):
    """Also after Ctrl-C: a live stream is stopped that way, and its exports should still get
    the final adjustment."""
    n = 3 if stop_after is None else stop_after
    preds = [make_prediction(i) for i in range(3)]
    revised = [scaled(p) for p in preds[:n]]
    rec, viewer, seen = _Reconstructor(preds, revised), _Viewer(), []
    exporter = Exporter(tmp_path, formats="traj")
    summary = run_stream(_Source([_frame(p) for p in preds], stop_after), rec, viewer=viewer, exporter=exporter,
                         on_revision=lambda p: seen.append(p.index), progress=False)  # fmt: skip
    assert summary.interrupted == (stop_after is not None)
    assert rec.finished == 1 and summary.revised == n
    assert viewer.logged == list(range(n)) and viewer.revised == [list(range(n))] and viewer.closed
    assert seen == list(range(n))
    traj = read_tum(summary.outputs["traj_tum"])
    np.testing.assert_allclose(traj.positions, [-p.extrinsic[:, :3].T @ p.extrinsic[:, 3] for p in revised], atol=1e-5)


def test_a_failing_final_adjustment_keeps_the_streamed_exports(tmp_path, caplog):
    preds = [make_prediction(i) for i in range(3)]

    class Failing(_Reconstructor):
        def finish(self):
            raise RuntimeError("singular system")

    exporter = Exporter(tmp_path, formats="traj")
    with caplog.at_level(logging.WARNING, logger="recon.pipeline"):
        summary = run_stream(_Source([_frame(p) for p in preds]), Failing(preds, []), exporter=exporter,
                             progress=False)  # fmt: skip
    assert "end-of-stream adjustment failed (singular system)" in caplog.text
    assert summary.revised == 0
    traj = read_tum(summary.outputs["traj_tum"])
    np.testing.assert_allclose(traj.positions, [-p.extrinsic[:, :3].T @ p.extrinsic[:, 3] for p in preds], atol=1e-5)
