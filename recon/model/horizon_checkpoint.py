"""HorizonStream checkpoints -> the `horizonstream` preset (and reduced configs of the same family).

The public code names its modules agg_regator / cam_decoder / dpt_decoder /
metric_readout_head and wraps fla's KDA layer as `global_gla_blocks.<i>.attn.gla`; ours are
aggregator / camera_head / depth_head / metric_head and `linear_blocks.<i>.attn`. Everything
else keeps its name. Two tensors exist in the checkpoint that its forward never reads (the
VGGT camera token, and the register tokens when `use_register_token` is off): they are
dropped by name; any other missing or unexpected key is an error (strict load).
"""

from __future__ import annotations

import os
import re

import torch
from torch import Tensor

from recon.checkpoint import CheckpointError, check_state_dict, read_checkpoint
from recon.config import ModelConfig, get_preset

_WRAPPERS = ("module.", "model.", "state_dict.", "sampler.", "horizonstream.")
_RENAMES = (
    (re.compile(r"^agg_regator\.global_gla_blocks\.(\d+)\.attn\.gla\."), r"aggregator.linear_blocks.\1.attn."),
    (re.compile(r"^agg_regator\.global_gla_blocks\."), "aggregator.linear_blocks."),
    (re.compile(r"^agg_regator\."), "aggregator."),
    (re.compile(r"^cam_decoder\."), "camera_head."),
    (re.compile(r"^dpt_decoder\."), "depth_head."),
    (re.compile(r"^metric_readout_head\."), "metric_head."),
)


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPERS:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def convert_horizonstream_state_dict(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """HorizonStream key layout -> ours (no shape changes)."""
    unused = {"aggregator.camera_token"}
    if not config.horizon_register_tokens:
        unused.add("aggregator.register_token")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = _strip(key)
        for pattern, repl in _RENAMES:
            key, n = pattern.subn(repl, key)
            if n:
                break
        if key not in unused:
            out[key] = value
    return out


def load_horizonstream(path: str | os.PathLike, preset: str | ModelConfig = "horizonstream", device="cpu"):
    """Build the preset's model and load a HorizonStream checkpoint (.pt/.safetensors) strictly."""
    from .horizon import HorizonTransformer

    config = get_preset(preset) if isinstance(preset, str) else preset
    if config.architecture != "horizon":
        raise CheckpointError(f"{path}: preset {config.name!r} is not a horizon architecture")
    state, _ = read_checkpoint(path)
    state = convert_horizonstream_state_dict(state, config)
    with torch.device("meta"):
        model = HorizonTransformer(config)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True, assign=True)
    return model.float().to(device).eval()
