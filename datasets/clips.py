"""Training clips cut from real datasets (any reader in recon.datasets.readers).

A clip is S consecutive frames (with a random frame stride) of one sequence, brought to the
training resolution exactly like inference frames (recon.preprocess, crop mode), with the
intrinsics and the depth map transformed by the same image transform.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import cv2
import numpy as np
import torch

from recon.preprocess import ImageTransform, preprocess_frame

from .types import Sequence


def depth_to_model(depth: np.ndarray, transform: ImageTransform) -> np.ndarray:
    """Resample an original-resolution depth map [H, W] into the model input's pixels
    (nearest neighbour: depth must not be blended across edges); outside -> 0."""
    (sx, sy), (ox, oy) = transform.scale, transform.offset
    # Corner-based u_m = s*u_o + o becomes OpenCV's centre-based c_m = s*c_o + (o + s/2 - 1/2).
    M = np.array([[sx, 0, ox + 0.5 * sx - 0.5], [0, sy, oy + 0.5 * sy - 0.5]], dtype=np.float64)
    H, W = transform.model_hw
    return cv2.warpAffine(depth.astype(np.float32), M, (W, H), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)  # fmt: skip


def find_sequences(root: str | os.PathLike) -> list[Sequence]:
    """`root` is one dataset sequence or a folder of them; keeps those with camera poses."""
    from .readers import open_sequence

    root = Path(root)
    try:
        candidates = [open_sequence(root)]
    except (ValueError, FileNotFoundError):
        candidates = []
    if not candidates or not candidates[0].has_ground_truth():
        candidates = []
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                seq = open_sequence(sub)
            except (ValueError, FileNotFoundError):
                continue
            if len(seq) and seq.has_ground_truth():
                candidates.append(seq)
    if not candidates:
        raise ValueError(f"no sequence with ground-truth poses found under {root}")
    return candidates


class ClipSampler:
    """sampler(step, B, S) -> dict of tensors [B, S, ...] on `device` (see recon.train)."""

    def __init__(
        self,
        data: str | os.PathLike | list[Sequence],
        height: int,
        width: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        max_stride: int = 3,
    ) -> None:
        self.sequences = list(data) if isinstance(data, list) else find_sequences(data)
        self.size = (height, width)
        self.device = torch.device(device)
        self.rng = random.Random(seed)
        self.max_stride = max_stride

    def clip(self, S: int) -> dict[str, torch.Tensor]:
        seq = self.rng.choice(self.sequences)
        stride = self.rng.randint(1, max(1, min(self.max_stride, (len(seq) - 1) // max(1, S - 1))))
        span = (S - 1) * stride + 1
        if span > len(seq):
            raise ValueError(f"sequence {seq.name} has {len(seq)} frames, too few for a clip of {S}")
        start = self.rng.randint(0, len(seq) - span)
        images, depths, intrinsics, extrinsics = [], [], [], []
        for i in range(start, start + span, stride):
            frame = seq[i]
            pre = preprocess_frame(frame.image, mode="crop", size=self.size)
            images.append(pre.image)
            depth = frame.depth if frame.depth is not None else np.zeros(frame.image.shape[:2], np.float32)
            depths.append(torch.from_numpy(depth_to_model(depth, pre.transform)))
            intrinsics.append(torch.as_tensor(pre.transform.intrinsics_to_model(frame.intrinsic), dtype=torch.float32))
            extrinsics.append(torch.as_tensor(frame.extrinsic, dtype=torch.float32))
        depth = torch.stack(depths)
        return {"images": torch.stack(images), "depth": depth, "valid": depth > 0,
                "intrinsic": torch.stack(intrinsics), "extrinsic": torch.stack(extrinsics)}  # fmt: skip

    def __call__(self, step: int, B: int, S: int) -> dict[str, torch.Tensor]:
        clips = [self.clip(S) for _ in range(B)]
        return {k: torch.stack([c[k] for c in clips]).to(self.device) for k in clips[0]}
