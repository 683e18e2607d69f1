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
