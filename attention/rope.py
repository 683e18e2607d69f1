"""2D rotary position embedding over (row, column) patch coordinates.

The head dimension D is split in two halves: the first half is rotated by the row
index, the second by the column index. Inside each half the "rotate half" pairing is
used (feature i is paired with feature i + D/4). This is the layout of the VGGT family,
so pretrained checkpoints keep their meaning.

Positions are integers, [N, 2] (row, col); special tokens sit at (0, 0) and patches
start at 1, which the caller decides.
"""

from __future__ import annotations

import torch
from torch import Tensor


class RotaryEmbedding2D:
    """Builds cos/sin tables for 2D RoPE and applies them.

    Tables are computed once per (positions, dtype, device) by the caller and shared by
    every layer, since all layers see the same token grid.
    """

    def __init__(self, base: float = 100.0) -> None:
        self.base = float(base)

    def tables(self, positions: Tensor, head_dim: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """positions [N, 2] (long) -> (cos, sin), each [N, head_dim] in `dtype`."""
        if head_dim % 4 != 0:
            raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
        half = head_dim // 2
        inv_freq = 1.0 / (self.base ** (torch.arange(0, half, 2, device=positions.device).float() / half))
        parts_cos, parts_sin = [], []
        for axis in range(2):
            angles = positions[:, axis].float()[:, None] * inv_freq[None, :]  # [N, half/2]
            angles = torch.cat((angles, angles), dim=-1).to(dtype)  # [N, half]
            parts_cos.append(angles.cos())
            parts_sin.append(angles.sin())
        return torch.cat(parts_cos, dim=-1), torch.cat(parts_sin, dim=-1)

    @staticmethod
    def apply(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x [..., N, D], cos/sin broadcastable to x -> rotated x."""
        return x * cos + _rotate_halves(x) * sin


def _rotate_halves(x: Tensor) -> Tensor:
    # Within each of the two (row, col) halves: (a, b) -> (-b, a).
    q = x.shape[-1] // 4
    a1, a2, b1, b2 = x.split(q, dim=-1)
    return torch.cat((-a2, a1, -b2, b1), dim=-1)


def grid_positions(rows: int, cols: int, num_special: int, device: torch.device | None = None) -> Tensor:
    """Token positions of one frame: `num_special` tokens at (0, 0), then the patch grid
    in raster order at (r + 1, c + 1). Returns [num_special + rows * cols, 2] long."""
    r = torch.arange(rows, device=device)
    c = torch.arange(cols, device=device)
    grid = torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).reshape(-1, 2) + 1
    special = torch.zeros(num_special, 2, dtype=grid.dtype, device=device)
    return torch.cat((special, grid), dim=0)
