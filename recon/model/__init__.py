"""Model modules: backbone, aggregator, camera head, DPT heads, track head."""

from .geometry_transformer import GeometryTransformer

__all__ = ["GeometryTransformer"]
