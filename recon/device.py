"""Device selection and numeric policy: CUDA runs in bf16 autocast, CPU in fp32."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu. Raises ValueError for unusable devices."""
    if isinstance(spec, torch.device):
        return spec
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available on this machine")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {spec!r} (use auto, cpu or cuda[:N])") from None


def autocast_for(device: torch.device):
    """The autocast context used for inference on `device` (a no-op on CPU)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move a model to `device` for inference. On CUDA the transformer trunk is stored in
    bf16 (it runs under bf16 autocast anyway: half the weight memory, no per-step casts);
    the heads stay fp32 because they regress exponentiated depth and confidences, and
    fp32 matmuls may use TF32."""
    model = model.to(device).eval()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        # The linear-attention variant keeps fp32 weights (its recurrent states accumulate).
        if getattr(model.config, "architecture", "vggt") == "vggt":
            model.aggregator.to(torch.bfloat16)
    return model
