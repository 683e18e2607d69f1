"""Dataset readers with ground truth: each is a `recon.datasets.Sequence` of `Frame`s.

    seq = open_sequence("data/rgbd_dataset_freiburg3_long_office_household")
    for frame in seq:  # image [H, W, 3] RGB, intrinsic [3, 3], extrinsic [3, 4] camera-from-world
        ...

`open_sequence(path)` recognises, in this order: a NeRF transforms*.json; TUM RGB-D (rgb.txt,
or an rgb/ folder with groundtruth.txt); 7-Scenes (seq-XX folders or frame-XXXXXX.color.png);
a COLMAP model (cameras.bin/.txt, sparse/0/ or sparse/); any folder of images. Keyword
options go to the reader's constructor.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from recon.datasets.types import Sequence

from .colmap import ColmapSequence, find_model_dir
from .folder import IMAGE_EXTENSIONS, FolderSequence, is_image_file, list_images, natural_key
from .nerf import NerfSequence
from .sevenscenes import SevenScenesSequence
from .tum import TUMSequence

READERS: dict[str, type[Sequence]] = {
    "tum": TUMSequence,
    "7scenes": SevenScenesSequence,
    "colmap": ColmapSequence,
    "nerf": NerfSequence,
    "folder": FolderSequence,
}
_ALIASES = {"7-scenes": "7scenes", "sevenscenes": "7scenes", "images": "folder", "transforms": "nerf"}
_SEQ_DIR = re.compile(r"seq-?\d+$", re.IGNORECASE)

__all__ = [
    "IMAGE_EXTENSIONS", "READERS", "ColmapSequence", "FolderSequence", "NerfSequence", "SevenScenesSequence",
    "TUMSequence", "detect_kind", "is_image_file", "list_images", "natural_key", "open_sequence",
]  # fmt: skip


def detect_kind(path: str | os.PathLike) -> str:
    """Name of the reader (a key of READERS) for `path`, from the folder's contents."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path not found: {path}")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "nerf"
        raise ValueError(f"not a dataset folder or transforms.json: {path}")
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise ValueError(f"dataset folder is empty: {path}")
    names = {p.name for p in entries}
    if "transforms.json" in names or any(re.fullmatch(r"transforms_\w+\.json", n) for n in names):
        return "nerf"
    if "rgb.txt" in names or ((path / "rgb").is_dir() and "groundtruth.txt" in names):
        return "tum"
    if any(n.endswith(".color.png") and n.startswith("frame-") for n in names) or any(
        p.is_dir() and _SEQ_DIR.match(p.name) for p in entries
    ):
        return "7scenes"
    try:
        find_model_dir(path)
        return "colmap"
    except FileNotFoundError:
        pass
    if any(p.is_file() and is_image_file(p) for p in entries):
        return "folder"
    raise ValueError(f"no dataset recognised in {path} (looked for transforms.json, rgb.txt or rgb/ + groundtruth.txt, "
                     "seq-XX/ or frame-*.color.png, cameras.bin/.txt or sparse/, image files)")  # fmt: skip


def open_sequence(path: str | os.PathLike, kind: str = "auto", **options) -> Sequence:
    """Open `path` with the reader for `kind` ("auto" detects it; see READERS for the names)."""
    key = detect_kind(path) if kind == "auto" else _ALIASES.get(kind.lower(), kind.lower())
    if key not in READERS:
        raise ValueError(f"unknown dataset kind {kind!r} (expected 'auto' or one of {', '.join(READERS)})")
    return READERS[key](path, **options)
