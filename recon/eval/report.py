"""Evaluation reports: metrics as JSON and a markdown table, trajectory and error plots as PNG.

Every file is written atomically. Plots use matplotlib's Agg canvas directly (no pyplot, no
global backend state), imported lazily so `recon.eval` does not need matplotlib to compute.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from recon.align.umeyama import Sim3
from recon.atomic import atomic_path, write_text_atomic


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN / inf
    if hasattr(value, "summary"):
        return _jsonable(value.summary())
    if isinstance(value, Sim3):
        return {"s": value.s, "R": value.R.tolist(), "t": value.t.tolist()}
    return value


def write_json(path: str | os.PathLike, data: Mapping) -> None:
    """Metrics dict (numpy values, results with `.summary()` allowed; NaN -> null) -> JSON file."""
    write_text_atomic(path, json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if not math.isfinite(value) else f"{value:.6g}"
    return str(value).replace("|", "\\|")


def write_markdown_table(path: str | os.PathLike, rows: Sequence[Mapping], columns: Sequence[str] | None = None,
                         title: str | None = None) -> None:
    """Rows of metrics (one dict per row) -> markdown table; columns default to the keys in order."""
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [f"# {title}", ""] if title else []
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _save(fig, path: str | os.PathLike) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def plot_trajectory_overlay(path: str | os.PathLike, ref_positions: np.ndarray, est_positions: np.ndarray,
                            title: str = "trajectory") -> None:
    """Top view (x-z) and side view (z-y, y down as in OpenCV) of ref [N, 3] and aligned est [M, 3]."""
    from matplotlib.figure import Figure

    ref, est = np.asarray(ref_positions, dtype=np.float64), np.asarray(est_positions, dtype=np.float64)
    for name, p in (("ref_positions", ref), ("est_positions", est)):
        if p.ndim != 2 or p.shape[1] != 3 or len(p) == 0:
            raise ValueError(f"{name} must be non-empty [N, 3], got shape {p.shape}")
    fig = Figure(figsize=(11, 5))
    top, side = fig.subplots(1, 2)
    for ax, (a, b), label in ((top, (0, 2), "top view (x-z)"), (side, (2, 1), "side view (z-y)")):
        ax.plot(ref[:, a], ref[:, b], "-", color="0.3", lw=1.5, label="ground truth")
        ax.plot(est[:, a], est[:, b], "-", color="tab:red", lw=1.0, label="estimate (aligned)")
        ax.plot(ref[0, a], ref[0, b], "o", color="tab:green", ms=5, label="start")
        ax.set_xlabel("xyz"[a] + " [m]")
        ax.set_ylabel("xyz"[b] + " [m]")
        ax.set_title(label)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    side.invert_yaxis()  # OpenCV y points down; show up as up
    top.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_ate_per_frame(path: str | os.PathLike, errors: np.ndarray, frame_index: np.ndarray | None = None,
                       title: str = "ATE per frame") -> None:
    """Position error per matched frame [N] against its frame index [N] (default 0..N-1), with
    the RMSE as a line."""
    from matplotlib.figure import Figure

    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    x = np.arange(e.size) if frame_index is None else np.asarray(frame_index).reshape(-1)
    if e.size == 0 or x.shape != e.shape:
        raise ValueError(f"{path}: need a non-empty error per frame index, got {e.size} errors and {x.size} indices")
    fig = Figure(figsize=(9, 3.5))
    ax = fig.subplots()
    ax.plot(x, e, "-", color="tab:blue", lw=1.0, label="ATE")
    rmse = float(np.sqrt(np.nanmean(e * e)))
    ax.axhline(rmse, color="tab:red", ls="--", lw=1.0, label=f"RMSE {rmse:.4g} m")
    ax.set_xlabel("frame index")
    ax.set_ylabel("position error [m]")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def write_report(out_dir: str | os.PathLike, name: str, ape_result, rpe_result=None, extra: Mapping | None = None
                 ) -> dict[str, Path]:
    """Write `<name>_metrics.json`, `<name>_metrics.md`, `<name>_trajectory.png` and
    `<name>_ate.png` under out_dir from an `APEResult` (and optional `RPEResult`, plus extra
    metric objects or dicts such as depth / point-cloud metrics). Returns the paths by kind."""
    out = Path(out_dir)
    paths = {kind: out / f"{name}_{suffix}" for kind, suffix in
             (("json", "metrics.json"), ("markdown", "metrics.md"), ("trajectory", "trajectory.png"),
              ("ate", "ate.png"))}
    metrics = {"ape": ape_result, **({"rpe": rpe_result} if rpe_result is not None else {}), **(extra or {})}
    write_json(paths["json"], {"name": name, **metrics})
    row = {"sequence": name, "matched": len(ape_result.errors), "ATE RMSE [m]": ape_result.stats["rmse"],
           "ATE mean [m]": ape_result.stats["mean"], "ATE max [m]": ape_result.stats["max"],
           "scale": ape_result.alignment.s}
    if rpe_result is not None:
        row["RPE trans RMSE [m]"] = rpe_result.trans_stats["rmse"]
        row["RPE rot RMSE [deg]"] = rpe_result.rot_stats["rmse"]
    write_markdown_table(paths["markdown"], [row], title=f"Evaluation: {name}")
    plot_trajectory_overlay(paths["trajectory"], ape_result.ref.positions, ape_result.est_aligned.positions, name)
    plot_ate_per_frame(paths["ate"], ape_result.errors, ape_result.est_index, f"{name}: ATE per frame")
    return paths
