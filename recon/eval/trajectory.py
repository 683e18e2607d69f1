"""Trajectory metrics with the semantics of evo (github.com/MichaelGrupp/evo, checked against 1.38.1).

- `associate`: evo's timestamp matching. It walks over the *shorter* trajectory (the estimate
  when both have the same length) and pairs each stamp with the nearest stamp of the other one
  (the first such on ties), kept when |difference| <= max_diff. `offset` is added to the
  estimate's stamps. A reference pose may be matched twice, as in evo.
- `ape`: absolute position error ("APE w.r.t. translation part") after an optional SE(3) or
  Sim(3) Umeyama alignment of the matched positions (estimate onto reference).
- `rpe`: relative pose error on `inv(P_ref_i^-1 P_ref_j) (P_est_i^-1 P_est_j)` over index
  pairs `(i, j)` from `rpe_pairs`: translation norm (`trans_part`) and rotation angle in
  degrees (`angle_deg`). The estimate is aligned first as in `evo_rpe -a`: an SE(3) alignment
  leaves relative poses unchanged, a Sim(3) one scales their translations.

Poses are world-from-camera [N, 4, 4] (`recon.datasets.trajectory.Trajectory`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.align.rotation import rotation_angle_deg
from recon.align.umeyama import Sim3
from recon.datasets.trajectory import Trajectory

ALIGN_MODES = ("none", "se3", "sim3")


def error_stats(errors: np.ndarray) -> dict[str, float]:
    """rmse, mean, median, std (population, like evo), min, max, sse and n of errors [N]."""
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError("error_stats: no errors to summarise (empty array)")
    return {
        "rmse": float(np.sqrt(np.mean(e * e))),
        "mean": float(e.mean()),
        "median": float(np.median(e)),
        "std": float(e.std()),
        "min": float(e.min()),
        "max": float(e.max()),
        "sse": float(np.dot(e, e)),
        "n": int(e.size),
    }


def _nearest(query: np.ndarray, target: np.ndarray, max_diff: float) -> tuple[np.ndarray, np.ndarray]:
    """For each query stamp [Q], the index of the nearest target stamp [T] (lowest index on ties,
    like argmin over |target - q|); returns the (query, target) index pairs within max_diff."""
    order = np.argsort(target, kind="stable")
    t_sorted = target[order]
    right = np.minimum(np.searchsorted(t_sorted, query, side="left"), len(t_sorted) - 1)
    left = np.maximum(right - 1, 0)
    left = np.searchsorted(t_sorted, t_sorted[left], side="left")  # first of a run of equal stamps
    d_left, d_right = np.abs(t_sorted[left] - query), np.abs(t_sorted[right] - query)
    take_left = (d_left < d_right) | ((d_left == d_right) & (order[left] < order[right]))
    best = np.where(take_left, left, right)
    ok = np.minimum(d_left, d_right) <= max_diff
    return np.nonzero(ok)[0], order[best[ok]]


def associate(ref: Trajectory, est: Trajectory, max_diff: float = 0.01,
              offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Matched index arrays `(ref_idx [M], est_idx [M])`, evo's `associate_trajectories`.

    Raises ValueError when a stamp is not finite or nothing matches.
    """
    for name, traj in (("reference", ref), ("estimate", est)):
        if len(traj) == 0 or not np.isfinite(traj.timestamps).all():
            raise ValueError(f"associate: {name} trajectory is empty or has non-finite timestamps")
    if len(est) > len(ref):
        ref_idx, est_idx = _nearest(ref.timestamps, est.timestamps + offset, max_diff)
    else:
        est_idx, ref_idx = _nearest(est.timestamps, ref.timestamps - offset, max_diff)
    if len(ref_idx) == 0:
        raise ValueError(
            f"associate: no timestamps match within max_diff={max_diff} s (offset {offset} s); reference "
            f"spans [{ref.timestamps.min():.6f}, {ref.timestamps.max():.6f}], estimate "
            f"[{est.timestamps.min():.6f}, {est.timestamps.max():.6f}]"
        )
    return ref_idx, est_idx


def _matched(ref: Trajectory, est: Trajectory, match: bool, max_diff: float,
             offset: float) -> tuple[Trajectory, Trajectory, np.ndarray]:
    """Matched reference, matched estimate and the estimate's indices [M] of the matches."""
    if match:
        ref_idx, est_idx = associate(ref, est, max_diff, offset)
        return ref.subset(ref_idx), est.subset(est_idx), est_idx
    if len(ref) != len(est):
        raise ValueError(f"without association both trajectories need the same length, got "
                         f"{len(ref)} (reference) and {len(est)} (estimate)")
    return ref, est, np.arange(len(est))


def align_estimate(ref: Trajectory, est: Trajectory, align: str) -> tuple[Sim3, Trajectory]:
    """Umeyama-align the positions of matched `est` onto `ref` (`align` in none / se3 / sim3);
    returns the transform and the estimate with its poses moved into the reference frame."""
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {ALIGN_MODES}, got {align!r}")
    if align == "none":
        return Sim3(), est
    sim3 = Sim3.estimate(est.positions, ref.positions, with_scale=align == "sim3")
    return sim3, Trajectory(sim3.apply_to_poses(est.poses), est.timestamps)


@dataclass
class APEResult:
    errors: np.ndarray  # [M] position error per matched pose, metres (reference units)
    stats: dict[str, float]
    alignment: Sim3  # estimate -> reference; alignment.s is the Sim(3) scale
    ref: Trajectory  # matched reference poses [M]
    est_aligned: Trajectory  # matched estimate poses after alignment [M]
    est_index: np.ndarray  # [M] index of each matched pose in the input estimate
    n_ref: int  # poses before association
    n_est: int

    def summary(self) -> dict:
        return {"metric": "ape_trans", "matched": len(self.errors), "n_ref": self.n_ref, "n_est": self.n_est,
                "scale": self.alignment.s, **self.stats}


def ape(ref: Trajectory, est: Trajectory, align: str = "se3", match: bool = True,
        max_diff: float = 0.01, offset: float = 0.0) -> APEResult:
    """Absolute trajectory error of the positions (evo_ape, `-r trans_part`).

    `align`: "se3" (`-a`), "sim3" (`-as`) or "none". `match=False` pairs poses by index
    (KITTI); both trajectories must then have the same length.
    """
    ref_m, est_m, est_index = _matched(ref, est, match, max_diff, offset)
    sim3, est_a = align_estimate(ref_m, est_m, align)
    errors = np.linalg.norm(est_a.positions - ref_m.positions, axis=1)
    return APEResult(errors, error_stats(errors), sim3, ref_m, est_a, est_index, len(ref), len(est))


def rpe_pairs(positions: np.ndarray, delta: float, delta_unit: str = "f", all_pairs: bool = False) -> np.ndarray:
    """Index pairs [M, 2] (i, j) for the RPE over a trajectory with positions [N, 3], as evo.

    - "f", all_pairs=False: i = 0, delta, 2 delta, ... and j = the next one (no overlap).
    - "f", all_pairs=True: every (i, i + delta).
    - "m", all_pairs=False: consecutive segments from index 0; each ends at the first pose where
      the path travelled since the segment start reaches `delta` (no overlap).
    - "m", all_pairs=True: from every i, the later j whose travelled path is closest to `delta`,
      kept when within 10 % of delta (evo's default relative tolerance).
    """
    n = len(positions)
    if delta_unit == "f":
        step = int(delta)
        if step != delta or step < 1:
            raise ValueError(f"delta in frames must be a positive integer, got {delta}")
        starts = np.arange(0, n - step) if all_pairs else np.arange(0, n, step)[:-1]
        ends = starts + step
        ok = ends < n
        return np.stack((starts[ok], ends[ok]), axis=1).astype(np.int64)
    if delta_unit != "m":
        raise ValueError(f"delta_unit must be 'f' (frames) or 'm' (metres), got {delta_unit!r}")
    if not delta > 0:
        raise ValueError(f"delta in metres must be > 0, got {delta}")
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    if all_pairs:
        path = np.concatenate(([0.0], np.cumsum(steps)))
        i = np.arange(n - 1)
        target = path[i] + delta
        right = np.clip(np.searchsorted(path, target, side="left"), i + 1, n - 1)
        left = np.maximum(np.searchsorted(path, path[right - 1], side="left"), i + 1)
        take_left = np.abs(path[left] - target) <= np.abs(path[right] - target)
        j = np.where(take_left, left, right)
        ok = np.abs(path[j] - target) <= 0.1 * delta
        return np.stack((i[ok], j[ok]), axis=1).astype(np.int64)
    # Sequential accumulation (restarting at each segment end) reproduces evo to the last bit.
    ends, travelled = [0], 0.0
    for k, step_len in enumerate(steps.tolist(), start=1):
        travelled += step_len
        if travelled >= delta:
            ends.append(k)
            travelled = 0.0
    ends = np.asarray(ends, dtype=np.int64)
    return np.stack((ends[:-1], ends[1:]), axis=1)


def _inverse(poses: np.ndarray) -> np.ndarray:
    out = np.tile(np.eye(4), (len(poses), 1, 1))
    Rt = np.transpose(poses[:, :3, :3], (0, 2, 1))
    out[:, :3, :3] = Rt
    out[:, :3, 3] = -(Rt @ poses[:, :3, 3, None])[..., 0]
    return out


@dataclass
class RPEResult:
    pairs: np.ndarray  # [M, 2] indices into the matched trajectories
    trans_errors: np.ndarray  # [M] translation part of the relative error, metres
    rot_errors_deg: np.ndarray  # [M] rotation angle of the relative error, degrees
    trans_stats: dict[str, float]
    rot_stats: dict[str, float]
    alignment: Sim3

    def summary(self) -> dict:
        return {"metric": "rpe", "pairs": len(self.pairs), "scale": self.alignment.s,
                "trans_part": self.trans_stats, "angle_deg": self.rot_stats}


def rpe(ref: Trajectory, est: Trajectory, delta: float = 1, delta_unit: str = "f", all_pairs: bool = False,
        align: str = "se3", match: bool = True, max_diff: float = 0.01, offset: float = 0.0) -> RPEResult:
    """Relative pose error (evo_rpe). Pairs come from the aligned estimate's path (as evo)."""
    ref_m, est_m, _ = _matched(ref, est, match, max_diff, offset)
    sim3, est_a = align_estimate(ref_m, est_m, align)
    pairs = rpe_pairs(est_a.positions, delta, delta_unit, all_pairs)
    if len(pairs) == 0:
        raise ValueError(f"rpe: no pose pairs {delta} {delta_unit} apart in a trajectory of {len(est_a)} poses")
    i, j = pairs[:, 0], pairs[:, 1]
    rel_ref = _inverse(ref_m.poses[i]) @ ref_m.poses[j]
    rel_est = _inverse(est_a.poses[i]) @ est_a.poses[j]
    err = _inverse(rel_ref) @ rel_est
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    rot = rotation_angle_deg(err[:, :3, :3])
    return RPEResult(pairs, trans, rot, error_stats(trans), error_stats(rot), sim3)


def path_length(traj: Trajectory) -> float:
    """Length of the polyline through the trajectory's positions."""
    return float(np.linalg.norm(np.diff(traj.positions, axis=0), axis=1).sum())


def sim3_scores(ref: Trajectory, est: Trajectory, length: float | None = None) -> tuple[dict, APEResult, RPEResult]:
    """The project's trajectory numbers for poses paired by index (no timestamp matching): ATE
    after a Sim(3) alignment (RMSE, and as % of `length`, by default the reference's path length),
    the alignment's scale, and RPE over consecutive frames (translation and rotation RMSE).
    Returns (numbers, APE result, RPE result); raises ValueError as `ape` / `rpe` do."""
    a = ape(ref, est, align="sim3", match=False)
    r = rpe(ref, est, delta=1, delta_unit="f", align="sim3", match=False)
    length = path_length(ref) if length is None else length
    scores = {
        "ate_rmse": a.stats["rmse"], "ate_pct_of_path": 100 * a.stats["rmse"] / length if length > 0 else float("nan"),
        "path_length": length, "sim3_scale": a.alignment.s, "rpe_trans_rmse": r.trans_stats["rmse"],
        "rpe_rot_rmse_deg": r.rot_stats["rmse"],
    }  # fmt: skip
    return scores, a, r
