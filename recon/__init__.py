"""streamrecon: streaming 3D reconstruction with causal geometry transformers.

    from recon import load_model, Reconstructor
    model, _ = load_model("tiny")
    rec = Reconstructor(model, memory="full")
    pred = rec.step(rgb_image)
"""

from .checkpoint import CheckpointError, load_model, save_checkpoint
from .config import PRESETS, ModelConfig, get_preset
from .session import FramePrediction, Reconstructor

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "CheckpointError",
    "FramePrediction",
    "ModelConfig",
    "Reconstructor",
    "get_preset",
    "load_model",
    "save_checkpoint",
]
