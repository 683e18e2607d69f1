"""Frame sources, dataset readers and synthetic scenes (installed as `recon.datasets`)."""

from .types import Frame, Sequence

__all__ = ["Frame", "Sequence"]
