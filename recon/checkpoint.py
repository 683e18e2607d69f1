"""Loading and saving weights.

Own format: a safetensors file whose metadata holds {"format": "streamrecon", "config":
<ModelConfig as JSON>}, so a file alone rebuilds its model.

Interop: public VGGT-1B and StreamVGGT state dicts (`.pt`/`.pth` or `.safetensors`, the
1797-tensor layout) load into the `vggt-1b` / `streamvggt` presets, strictly on keys and
shapes. `.pt` files are opened with `weights_only=True`, so no pickled code ever runs.

Every failure is a `CheckpointError` with a one-line message that names the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from .atomic import atomic_path, write_text_atomic
from .config import ModelConfig, get_preset

FORMAT = "streamrecon"
WEIGHTS_DIR = Path(__file__).parent / "weights"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line and names the file."""


def save_checkpoint(
    model: torch.nn.Module,
    path: str | os.PathLike,
    extra: dict | None = None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int | None = None,
) -> list[Path]:
    """Write the model's weights and config atomically; returns the files written.

    dtype: cast floating-point tensors (e.g. torch.float16 for shipping).
    max_shard_bytes: split larger checkpoints into `<stem>-00001-of-0000N.safetensors`
    shards plus a `<stem>.index.json` (key -> shard), the common sharded layout.
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        state[k] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    if extra:
        meta["extra"] = json.dumps(extra)
    total = sum(v.numel() * v.element_size() for v in state.values())
    if not max_shard_bytes or total <= max_shard_bytes:
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata=meta)
        return [path]
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    written, weight_map = [], {}
    for i, shard in enumerate(shards, start=1):
        name = f"{path.stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        with atomic_path(path.parent / name) as tmp:
            save_file(shard, str(tmp), metadata=meta)
        written.append(path.parent / name)
        weight_map.update({k: name for k in shard})
    index = path.parent / f"{path.stem}.index.json"
    write_text_atomic(index, json.dumps({**meta, "weight_map": weight_map}, indent=1))
    return [*written, index]


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], ModelConfig | None]:
    """Read a state dict (and the embedded config, for our own format) from a file."""
    path = Path(path)
    if path.suffix == ".safetensors" and not path.exists():
        index = path.with_name(f"{path.stem}.index.json")
        if index.exists():
            path = index
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.name.endswith(".index.json"):
        return _read_sharded(path)
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return _read_torch(path), None
    raise CheckpointError(f"{path}: unknown checkpoint extension (expected .safetensors, .pt or .pth)")


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], ModelConfig | None]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for bad headers/truncation
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint (corrupt or truncated): {_short(e)}")
    config = None
    if meta.get("format") == FORMAT:
        try:
            config = ModelConfig.from_dict(json.loads(meta["config"]))
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: embedded model config is invalid: {_short(e)}")
    return state, config


def _read_sharded(index: Path) -> tuple[dict[str, Tensor], ModelConfig | None]:
    try:
        spec = json.loads(index.read_text())
        files = sorted(set(spec["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index} is not a valid checkpoint index: {_short(e)}")
    state: dict[str, Tensor] = {}
    config = None
    for name in files:
        shard = index.parent / name
        if not shard.is_file():
            raise CheckpointError(f"{index}: shard {name} is missing")
        part, config = _read_safetensors(shard)
        state.update(part)
    missing = set(spec["weight_map"]) - set(state)
    if missing:
        raise CheckpointError(f"{index}: {len(missing)} tensors listed in the index are not in the shards")
    return state, config


def _read_torch(path: Path) -> dict[str, Tensor]:
    try:
        try:  # memory-mapped: a 5 GB checkpoint is not read twice into RAM
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)  # legacy format
    except Exception as e:  # pickle errors, zip errors, refused globals: all mean "not usable"
        raise CheckpointError(f"{path} is not a loadable weights-only PyTorch checkpoint: {_short(e)}")
    # Training checkpoints wrap the weights: {"model": {...}} or {"state_dict": {...}}.
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not contain a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def check_state_dict(model: torch.nn.Module, state: dict[str, Tensor], path: str | os.PathLike) -> None:
    """Strict key and shape check with a one-line report of the first mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    name = getattr(getattr(model, "config", None), "name", type(model).__name__)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{path} does not match the {name} architecture: {'; '.join(parts)}")
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{path} does not match the {name} architecture: {len(wrong)} shape mismatches "
            f"(first: {k} is {list(state[k].shape)} in the file, {list(expected[k].shape)} in the model)"
        )


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    state, _ = read_checkpoint(path)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)  # copies into the model's own dtype


def shipped_weights(preset: str) -> Path | None:
    for name in (f"{preset}.safetensors", f"{preset}.index.json"):
        if (WEIGHTS_DIR / name).is_file():
            return WEIGHTS_DIR / name
    return None


def load_model(spec: str, preset: str | None = None, device: str | torch.device = "cpu"):
    """Build a model from a preset name (with its shipped weights, if any) or a file.

    For a file without an embedded config (public VGGT/StreamVGGT weights) `preset`
    picks the architecture, default "vggt-1b".
    Returns (model, weights_path or None).
    """
    from .model import build_model

    path = Path(spec)
    looks_like_file = path.suffix in (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".json") or os.sep in spec
    if not looks_like_file:
        config = get_preset(spec)  # ValueError for an unknown preset
        model = build_model(config)
        weights = shipped_weights(spec)
        if weights is not None:
            load_weights(model, weights)
        return model.to(device).eval(), weights
    state, config = read_checkpoint(path)
    if config is None:
        config = get_preset(preset or "vggt-1b")
        if config.architecture == "horizon":  # public HorizonStream files use their own names
            from .model.horizon_checkpoint import convert_horizonstream_state_dict

            state = convert_horizonstream_state_dict(state, config)
    elif preset is not None:
        config = config.replace(camera_cache_layout=get_preset(preset).camera_cache_layout)
    # Built on the meta device and filled by assignment: no second copy of a 5 GB model.
    with torch.device("meta"):
        model = build_model(config)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True, assign=True)
    # Half-precision files load as fp32; the device decides the compute precision.
    return model.float().to(device).eval(), path


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    return (text[:160] + "...") if len(text) > 160 else (text or type(e).__name__)
