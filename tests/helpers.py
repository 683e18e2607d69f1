"""Shared test utilities: small configs and weight randomisation."""

from __future__ import annotations

import torch

from recon.config import ModelConfig

# A reduced config small enough for CPU tests, with every module of the real model.
REDUCED = ModelConfig(
    name="reduced", img_size=56, patch_size=14, embed_dim=64, depth=4, num_heads=4, backbone_depth=2,
    backbone_heads=4, camera_trunk_depth=2, camera_heads=4, dpt_features=32, dpt_out_channels=(16, 32, 64, 64),
    dpt_levels=(0, 1, 2, 3), track_head=False, default_width=70,
)  # fmt: skip


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter a non-trivial random value, so no block is a near no-op
    (default inits make layer scales 0.01 and special tokens ~1e-6)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * noise)
        elif name.endswith("gamma"):
            p.copy_(0.1 + 0.05 * noise)
        elif "token" in name:
            p.copy_(0.5 * noise)
        elif p.ndim >= 2:
            p.copy_(noise / max(1.0, p[0].numel()) ** 0.5)
        else:
            p.copy_(0.02 * noise)
    return model
