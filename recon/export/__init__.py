"""Exports for other tools: fused point cloud (PLY), trajectories (TUM, KITTI) and intrinsics,
a COLMAP sparse model with images, per-frame depth maps, and a TSDF mesh."""

from .exporter import FORMATS, Exporter, ExportError, parse_formats

__all__ = ["FORMATS", "ExportError", "Exporter", "parse_formats"]
