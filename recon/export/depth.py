"""Per-frame depth and confidence maps at model resolution, written as each frame arrives.

"png": `depth/NNNNNN.png` uint16 with depth = value / depth_scale (0 = no depth: non-finite,
not positive, or beyond what 16 bits hold at that scale), and `depth_conf/NNNNNN.png` uint16 with
conf = value / conf_scale (clipped to 65535). "npz": `depth/NNNNNN.npz` with float32 `depth` and
`depth_conf`, exact. `depth/depth_info.json` states the scales and the resolution; the matching
intrinsics are the "model" entries of intrinsics.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from recon.atomic import atomic_path, write_text_atomic

DEPTH_FORMATS = ("png", "npz")
UINT16_MAX = 65535


def quantize_depth(depth: np.ndarray, scale: float) -> np.ndarray:
    """Depth [H, W] float -> uint16 round(depth * scale); 0 where there is no representable depth."""
    scaled = np.rint(np.where(np.isfinite(depth), depth, 0.0) * scale)
    return np.where((scaled > 0) & (scaled <= UINT16_MAX), scaled, 0).astype(np.uint16)


def quantize_conf(conf: np.ndarray, scale: float) -> np.ndarray:
    """Confidence [H, W] float -> uint16 round(conf * scale) clipped to [0, 65535]; NaN -> 0."""
    return np.clip(np.rint(np.nan_to_num(conf, nan=0.0) * scale), 0, UINT16_MAX).astype(np.uint16)


def write_png16(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"could not write PNG: {path}")


class DepthWriter:
    def __init__(self, out_dir: Path, fmt: str, depth_scale: float, conf_scale: float) -> None:
        if fmt not in DEPTH_FORMATS:
            raise ValueError(f"depth_format must be one of {', '.join(DEPTH_FORMATS)}, got {fmt!r}")
        if not depth_scale > 0 or not conf_scale > 0:
            raise ValueError(f"depth_scale and conf_scale must be positive, got {depth_scale}, {conf_scale}")
        self.depth_dir, self.conf_dir = out_dir / "depth", out_dir / "depth_conf"
        self.fmt, self.depth_scale, self.conf_scale = fmt, float(depth_scale), float(conf_scale)
        self.info_path = self.depth_dir / "depth_info.json"
        self._wrote_info = False

    def _write_info(self, hw: tuple[int, int]) -> None:
        if self.fmt == "png":
            info = {"format": "png", "depth": f"depth = png_value / {self.depth_scale:g} (0 = no depth)",
                    "depth_conf": f"../depth_conf/*.png: conf = png_value / {self.conf_scale:g} (clipped at "
                                  f"{UINT16_MAX / self.conf_scale:g})",
                    "depth_scale": self.depth_scale, "conf_scale": self.conf_scale}  # fmt: skip
        else:
            info = {"format": "npz", "depth": "float32 array 'depth' [H, W]", "depth_conf": "float32 array "
                    "'depth_conf' [H, W]; higher is more confident"}  # fmt: skip
        info.update(height=hw[0], width=hw[1], units="scene units (the scale of the trajectory files)",
                    intrinsics="intrinsics.json, 'model' entry of each frame")  # fmt: skip
        write_text_atomic(self.info_path, json.dumps(info, indent=1) + "\n")
        self._wrote_info = True

    def write(self, index: int, depth: np.ndarray, depth_conf: np.ndarray) -> list[Path]:
        """Write one frame's depth [H, W] and depth_conf [H, W]; returns the files written."""
        if not self._wrote_info:
            self._write_info(depth.shape)
        name = f"{index:06d}"
        if self.fmt == "npz":
            path = self.depth_dir / f"{name}.npz"
            with atomic_path(path) as tmp:
                np.savez_compressed(tmp, depth=depth.astype(np.float32), depth_conf=depth_conf.astype(np.float32))
            return [path]
        paths = [self.depth_dir / f"{name}.png", self.conf_dir / f"{name}.png"]
        write_png16(paths[0], quantize_depth(depth, self.depth_scale))
        write_png16(paths[1], quantize_conf(depth_conf, self.conf_scale))
        return paths
