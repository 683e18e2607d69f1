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


PRECISIONS = ("bf16", "mixed", "fp32")


def autocast_for(device: torch.device, precision: str = "bf16", cache_enabled: bool = True):
    """The autocast context used for inference on `device` (a no-op on CPU or for fp32).
    CUDA-graph capture needs `cache_enabled=False` (cached weight casts would be freed)."""
    if device.type == "cuda" and precision != "fp32":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def fp32_region(device_type: str, enabled: bool = True):
    """Leave bf16 autocast for a region that must compute in fp32 (no-op when autocast is off)."""
    if enabled and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def upcast(t):
    """Half-precision tensors to fp32; others (fp32, fp64, None) unchanged."""
    return t.float() if t is not None and t.dtype in (torch.bfloat16, torch.float16) else t


def prepare_model(
    model: torch.nn.Module, device: torch.device, precision: str = "bf16", world_points: str = "depth"
) -> torch.nn.Module:
    """Move a model to `device` for inference.

    world_points: "depth" (default) makes point maps by unprojecting the predicted depth
    with the predicted camera and skips the point-map head (VGGT's own finding: this is
    the more accurate of the two, and it halves the DPT work); "head" uses the point head.

    precision, on CUDA only (the CPU always runs fp32):

    * "bf16"  -- the transformer trunk and the DPT heads store and compute in bf16; the DPT
      outputs are activated (exp, confidences) in fp32, and the camera head, which
      accumulates pose updates over its iterations, stays fp32. The default on CUDA.
    * "mixed" -- trunk in bf16, every head in fp32 (the reference VGGT inference policy).
    * "fp32"  -- no autocast at all (matmuls may still use TF32); the accuracy reference.

    The linear-attention ("horizon") model's recurrent KDA layers keep fp32 weights under bf16
    autocast: their states accumulate over the whole stream.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if world_points not in ("depth", "head"):
        raise ValueError(f"world_points must be 'depth' or 'head', got {world_points!r}")
    model = model.to(device).eval()
    model.precision = precision if device.type == "cuda" else "fp32"
    if hasattr(model, "world_points_from"):
        model.world_points_from = world_points
    if device.type != "cuda":
        return model
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if precision == "fp32":
        return model
    model.aggregator.to(torch.bfloat16)
    for linear in getattr(model.aggregator, "linear_blocks", {}).values():
        linear.float()  # recurrent (KDA) layers: states accumulate over the whole stream
    if precision == "bf16":
        for name in ("depth_head", "point_head"):
            head = getattr(model, name, None)
            if head is not None:
                head.to(torch.bfloat16)
                head.bf16 = True
    return model
