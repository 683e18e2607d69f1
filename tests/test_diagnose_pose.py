"""tools/diagnose_pose.py: rotation errors against the turn from the first camera."""

import importlib.util
import math
from pathlib import Path

import torch

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "diagnose_pose.py"
_spec = importlib.util.spec_from_file_location("diagnose_pose", _TOOL)
diagnose_pose = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diagnose_pose)


def _about_z(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def test_rotation_errors_of_a_camera_that_stops_turning():
    gt = torch.stack([_about_z(11.0 * i) for i in range(10)])  # 0 .. 99 degrees, 11 a frame (no bin edge)
    r = diagnose_pose.rotation_errors(gt, gt)
    assert r["step_err"] < 1e-3 and max(r["by_turn"][:3]) < 1e-2 and math.isclose(r["step_gt"], 11.0, rel_tol=1e-4)
    # Another world frame for the prediction changes nothing: rotations are taken relative to frame 0.
    world = _about_z(33.0) @ torch.tensor([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    assert diagnose_pose.rotation_errors(gt @ world, gt)["step_err"] < 1e-3
    # A prediction stuck at the first camera: its error is the turn itself, binned by the turn.
    still = gt[:1].expand(10, 3, 3)
    r = diagnose_pose.rotation_errors(still, gt)
    assert math.isclose(r["step_pred"], 0.0, abs_tol=1e-3) and math.isclose(r["step_err"], 11.0, rel_tol=1e-3)
    by_turn = r["by_turn"]
    assert math.isclose(by_turn[0], 11.0, rel_tol=1e-3)  # turns 0, 11, 22
    assert math.isclose(by_turn[1], 44.0, rel_tol=1e-3)  # 33, 44, 55
    assert math.isclose(by_turn[2], 77.0, rel_tol=1e-3)  # 66, 77, 88
    assert math.isclose(by_turn[3], 99.0, rel_tol=1e-3)  # 99
