"""Model modules: backbone, aggregator, camera head, DPT heads, track head, and the
HorizonStream-style linear-attention variant. `build_model(config)` picks the class."""

from recon.config import ModelConfig

from .geometry_transformer import GeometryTransformer
from .horizon import HorizonTransformer


def build_model(config: ModelConfig) -> GeometryTransformer | HorizonTransformer:
    """The model class the config's `architecture` names ("vggt" or "horizon")."""
    if config.architecture == "horizon":
        return HorizonTransformer(config)
    if config.architecture != "vggt":
        raise ValueError(f"unknown architecture {config.architecture!r} in model config {config.name!r}")
    return GeometryTransformer(config)


__all__ = ["GeometryTransformer", "HorizonTransformer", "build_model"]
