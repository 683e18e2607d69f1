"""Loading and saving weights.

Own format: a safetensors file whose metadata holds {"format": "streamrecon", "config":
<ModelConfig as JSON>}, so a file alone rebuilds its model.

Shipping (`ship_weights`, tools/ship_weights.py): float16 shards + `<name>.index.json` in
recon/weights. Weights derived from other shipped weights (tiny-linear from tiny) can leave
out the tensors they share: their index maps those keys to the base's shard files and pins
each such file's sha256; loading merges them and refuses a base that changed since.

Interop: public VGGT-1B and StreamVGGT state dicts (`.pt`/`.pth` or `.safetensors`, the
1797-tensor layout) load into the `vggt-1b` / `streamvggt` presets, strictly on keys and
shapes. `.pt` files are opened with `weights_only=True`, so no pickled code ever runs.

Every failure is a `CheckpointError` with a one-line message that names the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
    base: str | os.PathLike | None = None,
) -> list[Path]:
    """Write the model's weights and config atomically; returns the files written.

    dtype: cast floating-point tensors (e.g. torch.float16 for shipping).
    max_shard_bytes: split larger checkpoints into `<stem>-00001-of-0000N.safetensors`
    shards plus a `<stem>.index.json` (key -> shard), the common sharded layout.
    base: weights already shipped in the same folder (their `.index.json` or `.safetensors`):
    tensors bitwise equal (after the dtype cast) to the base's tensor of the same name are
    not written again. The index (always written with a base) maps them to the base's files
    and records those files' sha256 under "base", so `read_checkpoint` merges them and
    refuses a base that changed since (see `_read_sharded`).
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
    keys = list(state)
    shared, base_entry = {}, None
    if base is not None:
        shared, base_entry = _shared_with_base(state, Path(base), path.parent)
        state = {k: v for k, v in state.items() if k not in shared}
    total = sum(v.numel() * v.element_size() for v in state.values())
    if base is None and (not max_shard_bytes or total <= max_shard_bytes):
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata=meta)
        return [path]
    shards: list[dict[str, Tensor]] = []
    size = 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if not shards or (max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes):
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    written, own = [], {}
    for i, shard in enumerate(shards, start=1):
        name = f"{path.stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        with atomic_path(path.parent / name) as tmp:
            save_file(shard, str(tmp), metadata=meta)
        written.append(path.parent / name)
        own.update({k: name for k in shard})
    spec = {**meta, "weight_map": {k: own[k] if k in own else shared[k] for k in keys}}
    if base_entry is not None:
        spec["base"] = base_entry
    index = path.parent / f"{path.stem}.index.json"
    write_text_atomic(index, json.dumps(spec, indent=1))
    return [*written, index]


def _shared_with_base(state: dict[str, Tensor], base: Path, folder: Path) -> tuple[dict[str, str], dict]:
    """-> ({key: base file} for the tensors of `state` bitwise equal to the base's, the index's
    "base" entry {"name", "sha256": {base file: digest}})."""
    if base.parent.resolve() != folder.resolve():
        raise CheckpointError(f"{base}: base weights must sit in the folder of the weights that share them ({folder})")
    base_state, _ = read_checkpoint(base)  # checks the base (and its own base, if it has one)
    if base.name.endswith(".index.json"):
        files = json.loads(base.read_text())["weight_map"]
        name = base.name.removesuffix(".index.json")
    else:
        files, name = dict.fromkeys(base_state, base.name), base.stem
    shared = {}
    for k, v in state.items():
        b = base_state.get(k)
        if b is not None and b.dtype == v.dtype and b.shape == v.shape and _bitwise_equal(b, v):
            shared[k] = files[k]
    digests = {f: _sha256(folder / f) for f in sorted(set(shared.values()))}
    return shared, {"name": name, "sha256": digests}


def _bitwise_equal(a: Tensor, b: Tensor) -> bool:
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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


def _read_safetensors(path: Path, keys: set[str] | None = None) -> tuple[dict[str, Tensor], ModelConfig | None]:
    """All tensors of a file, or only `keys` (those it has), and its embedded config."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys() if keys is None or k in keys}
    except Exception as e:  # safetensors raises several types for bad headers/truncation
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint (corrupt or truncated): {_short(e)}")
    return state, _embedded_config(meta, path)


def _embedded_config(meta: dict, path: Path) -> ModelConfig | None:
    if meta.get("format") != FORMAT:
        return None
    try:
        return ModelConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: embedded model config is invalid: {_short(e)}")


def _read_sharded(index: Path) -> tuple[dict[str, Tensor], ModelConfig | None]:
    """The shards an index names, each read for the keys mapped to it. Files pinned under
    "base" (tensors shared with other shipped weights, see `save_checkpoint`) must still
    have the recorded sha256: a base re-shipped since would silently change these weights."""
    try:
        spec = json.loads(index.read_text())
        by_file: dict[str, set[str]] = {}
        for k, name in spec["weight_map"].items():
            by_file.setdefault(name, set()).add(k)
        base = spec.get("base") or {}
        pinned, base_name = dict(base.get("sha256", {})), base.get("name", "?")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index} is not a valid checkpoint index: {_short(e)}")
    state: dict[str, Tensor] = {}
    config = None
    for name in sorted(by_file):
        shard = index.parent / name
        if name in pinned:
            if not shard.is_file():
                raise CheckpointError(f"{index}: base shard {shard} is missing (these weights share tensors "
                                      f"with {base_name!r}, whose files must sit next to them)")  # fmt: skip
            if _sha256(shard) != pinned[name]:
                raise CheckpointError(f"{index}: base shard {shard} is not the one these weights were shipped with "
                                      f"(sha256 differs: {base_name!r} was re-shipped; re-ship these weights "
                                      f"with --base {base_name})")  # fmt: skip
        elif not shard.is_file():
            raise CheckpointError(f"{index}: shard {name} is missing")
        part, part_config = _read_safetensors(shard, by_file[name])
        state.update(part)
        if name not in pinned:
            config = part_config or config
    missing = set(spec["weight_map"]) - set(state)
    if missing:
        raise CheckpointError(f"{index}: {len(missing)} tensors listed in the index are not in the shards")
    return state, config or _embedded_config(spec, index)


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
    _load_strict(model, state, path)


def _load_strict(model: torch.nn.Module, state: dict[str, Tensor], path: str | os.PathLike) -> None:
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)  # copies into the model's own dtype


def load_matching_weights(model: torch.nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Initialise `model` from a checkpoint of the same or of a related preset.

    Same preset (or a file without an embedded config): strict, exactly `load_weights`.
    Another preset (e.g. tiny -> tiny-linear): the tensors of the same name and shape are
    copied, the model's other tensors keep their initialisation.
    Returns {"loaded": keys copied, "new": model keys not in the file, "unused": file keys
    not copied}."""
    state, config = read_checkpoint(path)
    name = getattr(getattr(model, "config", None), "name", None)
    if config is None or config.name == name:
        _load_strict(model, state, path)
        return {"loaded": list(state), "new": [], "unused": []}
    expected = model.state_dict()
    match = {k: v for k, v in state.items() if k in expected and tuple(v.shape) == tuple(expected[k].shape)}
    if not match:
        raise CheckpointError(f"{path} ({config.name}) shares no tensor (same name and shape) with the {name} model")
    model.load_state_dict(match, strict=False)  # copies into the model's own dtype
    return {"loaded": list(match), "new": [k for k in expected if k not in match],
            "unused": [k for k in state if k not in match]}  # fmt: skip


def shipped_weights(preset: str, folder: str | os.PathLike | None = None) -> Path | None:
    """The weights shipped for `preset` in `folder` (default: the package's weights folder),
    `<preset>.safetensors` or its index."""
    folder = Path(WEIGHTS_DIR if folder is None else folder)
    for name in (f"{preset}.safetensors", f"{preset}.index.json"):
        if (folder / name).is_file():
            return folder / name
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


def ship_weights(
    src: str | os.PathLike,
    out_dir: str | os.PathLike = WEIGHTS_DIR,
    name: str | None = None,
    base: str | None = None,
    max_shard_mb: float = 15.0,
    preset: str | None = None,
) -> list[Path]:
    """Write the weights of `src` (a checkpoint file or a preset name; `preset` for files
    without an embedded config) for shipping: float16 safetensors shards of at most
    `max_shard_mb` MB (10^6 bytes) and `<name>.index.json` in `out_dir`, or one
    `<name>.safetensors` when it fits in one shard and there is no base.

    base: the name of weights already shipped in `out_dir` (e.g. "tiny"): tensors equal to
    theirs are not written again, the index refers to the base's files (see `save_checkpoint`).
    Files of an earlier shipment under `name` that this one does not write are removed.
    Returns the files written."""
    model, _ = load_model(str(src), preset=preset)
    out_dir = Path(out_dir)
    name = name or model.config.name
    base_path = None
    if base is not None:
        if base == name:
            raise ValueError(f"weights {name!r} cannot share tensors with themselves")
        base_path = shipped_weights(base, out_dir)
        if base_path is None:
            raise CheckpointError(f"{out_dir}: no shipped weights {base!r} ({base}.index.json or {base}.safetensors) "
                                  f"to share tensors with")  # fmt: skip
    written = save_checkpoint(model, out_dir / f"{name}.safetensors", dtype=torch.float16,
                              max_shard_bytes=int(max_shard_mb * 1e6), base=base_path)  # fmt: skip
    ours = re.compile(rf"{re.escape(name)}(-\d{{5}}-of-\d{{5}}\.safetensors|\.safetensors|\.index\.json)")
    for p in out_dir.iterdir():
        if ours.fullmatch(p.name) and p not in written:
            p.unlink()
    return written


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    return (text[:160] + "...") if len(text) > 160 else (text or type(e).__name__)
