"""`SyntheticSequence`: a rendered synthetic clip as a `recon.datasets.Sequence` of `Frame`s."""

from __future__ import annotations

import numpy as np
import torch

from ..types import Frame, Sequence
from .render import make_clip_spec, render_specs

FRAME_RATE = 30.0


class SyntheticSequence(Sequence):
    """Frames of clip `seed`: uint8 RGB images [H, W, 3], depth [H, W] float32 (0 = invalid),
    intrinsic [3, 3] and extrinsic [3, 4] (camera-from-world, synthetic world frame) float64,
    timestamps index / 30 s. The clip is rendered once, on first access, on `device`."""

    def __init__(self, seed: int, num_frames: int, height: int = 294, width: int = 518,
                 family: str | None = None, trajectory: str | None = None,
                 device: str | torch.device = "cpu") -> None:  # fmt: skip
        self.spec = make_clip_spec(seed, num_frames, family, trajectory)
        self.height, self.width, self.device = int(height), int(width), device
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        self.name = f"synthetic-{self.spec.family}-{self.spec.trajectory}-{seed}"
        self._frames: list[Frame] | None = None

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def trajectory(self) -> str:
        return self.spec.trajectory

    def __len__(self) -> int:
        return len(self.spec.world_from_cam)

    def _render(self) -> list[Frame]:
        out = render_specs([self.spec], self.height, self.width, self.device)
        images = (out["images"][0].permute(0, 2, 3, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
        depth = out["depth"][0].cpu().numpy()
        intrinsic = self.spec.intrinsic(self.height, self.width)
        extrinsic = self.spec.extrinsic()
        return [
            Frame(image=images[i], timestamp=i / FRAME_RATE, index=i, depth=depth[i], intrinsic=intrinsic.copy(),
                  extrinsic=extrinsic[i], name=f"{self.name}-{i:04d}")  # fmt: skip
            for i in range(len(self))
        ]

    def frame(self, i: int) -> Frame:
        if self._frames is None:
            self._frames = self._render()
        return self._frames[i]
