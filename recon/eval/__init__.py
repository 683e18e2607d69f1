"""Evaluation metrics: trajectories (ATE/RPE, evo-compatible), depth, point clouds, reports."""

from .depth import DepthMetrics, depth_metrics
from .pointcloud import PointCloudMetrics, pointcloud_metrics
from .report import plot_ate_per_frame, plot_trajectory_overlay, write_json, write_markdown_table, write_report
from .trajectory import APEResult, RPEResult, ape, associate, error_stats, path_length, rpe, rpe_pairs, sim3_scores

__all__ = [
    "APEResult",
    "DepthMetrics",
    "PointCloudMetrics",
    "RPEResult",
    "ape",
    "associate",
    "depth_metrics",
    "error_stats",
    "path_length",
    "plot_ate_per_frame",
    "plot_trajectory_overlay",
    "pointcloud_metrics",
    "rpe",
    "rpe_pairs",
    "sim3_scores",
    "write_json",
    "write_markdown_table",
    "write_report",
]
