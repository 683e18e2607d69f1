"""3D rotary position embedding over (time, row, column) token coordinates.

Layout (HorizonStream's, so its checkpoints keep their meaning): the head dim D is split
into three parts of D//3, D//3 and D - 2*(D//3) features for time, row and column. Each
part rotates its first even number of features with the "rotate half" pairing (feature i
with i + d/2, frequencies base^(-2i/d)); an odd leftover feature passes through.

Positions are integers [N, 3] = (t, row, col). Special tokens sit at (0, 0, 0); patches of
a frame with time index t at (t + 1, r + 1, c + 1). The caller wraps t with a fixed period
(`time_index`), so positions stay bounded on endless streams; only differences within
the attention window matter. `frame_tables` builds a frame's tables from a device tensor
of time indices (the row/column part cached), so a step whose frame index lives on the
device can be captured as a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RopeTables:
    """cos, sin [N, D] (sin already signed for the rotation) and the pairing index [D]."""

    cos: Tensor
    sin: Tensor
    index: Tensor

    def apply(self, x: Tensor) -> Tensor:
        """x [..., N, D] -> rotated x."""
        return x * self.cos + x.index_select(-1, self.index) * self.sin


def _parts(head_dim: int) -> list[tuple[int, int]]:
    """(offset, rotated features) of the time, row and column parts."""
    d = head_dim // 3
    sizes = (d, d, head_dim - 2 * d)
    offsets = (0, d, 2 * d)
    return [(o, (s // 2) * 2) for o, s in zip(offsets, sizes)]


class RotaryEmbedding3D:
    def __init__(self, base: float = 100.0) -> None:
        self.base = float(base)
        self._static: dict[tuple, RopeTables] = {}

    def tables(self, positions: Tensor, head_dim: int, dtype: torch.dtype) -> RopeTables:
        """positions [N, 3] (long) -> RopeTables for [..., N, head_dim] tensors."""
        if head_dim < 6:
            raise ValueError(f"3D RoPE needs head_dim >= 6, got {head_dim}")
        N, device = positions.shape[0], positions.device
        cos = torch.ones(N, head_dim, device=device)
        sin = torch.zeros(N, head_dim, device=device)
        index = torch.arange(head_dim, device=device)
        for axis, (offset, rot) in enumerate(_parts(head_dim)):
            half = rot // 2
            inv_freq = 1.0 / self.base ** (torch.arange(0, rot, 2, device=device).float() / rot)
            angles = positions[:, axis].float()[:, None] * inv_freq[None]  # [N, half]
            c, s = angles.cos(), angles.sin()
            cos[:, offset : offset + rot] = torch.cat((c, c), dim=-1)
            # rotate-half: out[i] = -x[i + half], out[i + half] = x[i]
            sin[:, offset : offset + rot] = torch.cat((-s, s), dim=-1)
            index[offset : offset + half] = torch.arange(offset + half, offset + rot, device=device)
            index[offset + half : offset + rot] = torch.arange(offset, offset + half, device=device)
        return RopeTables(cos.to(dtype), sin.to(dtype), index)

    def frame_tables(
        self, times: Tensor, rows: int, cols: int, num_special: int, extra: int, head_dim: int, dtype: torch.dtype
    ) -> RopeTables:
        """Tables [S, num_special + rows*cols + extra, head_dim] of S frames' tokens laid out as
        `frame_positions` plus `extra` tokens at (0, 0, 0), for time indices `times` [S] (long,
        on the device). Everything that depends on the frame index is computed on the device
        from `times` (no host values baked in: safe to capture in a CUDA graph once the
        static part is cached, i.e. after one call of this shape)."""
        static = self._static_tables(rows, cols, num_special, head_dim, times.device)
        offset, rot = _parts(head_dim)[0]  # the time part
        inv_freq = 1.0 / self.base ** (torch.arange(0, rot, 2, device=times.device).float() / rot)
        angles = (times + 1).float()[:, None, None] * inv_freq  # [S, 1, rot/2]
        c, s = angles.cos(), angles.sin()
        S, P = times.shape[0], static.cos.shape[0]
        patches = slice(num_special, P)
        cos = static.cos.new_ones(S, P + extra, head_dim)
        sin = static.sin.new_zeros(S, P + extra, head_dim)
        cos[:, :P], sin[:, :P] = static.cos, static.sin
        cos[:, patches, offset : offset + rot] = torch.cat((c, c), dim=-1)
        sin[:, patches, offset : offset + rot] = torch.cat((-s, s), dim=-1)
        return RopeTables(cos.to(dtype), sin.to(dtype), static.index)

    def _static_tables(self, rows: int, cols: int, num_special: int, head_dim: int, device) -> RopeTables:
        """fp32 tables [P, head_dim] of one frame's tokens at time 0 (the row and column
        parts); the last shape asked for is cached."""
        key = (rows, cols, num_special, head_dim, torch.device(device))
        if key not in self._static:
            pos = frame_positions(rows, cols, num_special, -1, device)
            self._static = {key: self.tables(pos, head_dim, torch.float32)}
        return self._static[key]


def frame_positions(rows: int, cols: int, num_special: int, time: int, device=None) -> Tensor:
    """Positions of one frame's tokens: `num_special` tokens at (0, 0, 0), then the patch grid
    in raster order at (time + 1, r + 1, c + 1). Returns [num_special + rows*cols, 3] long."""
    r = torch.arange(rows, device=device)
    c = torch.arange(cols, device=device)
    grid = torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).reshape(-1, 2) + 1
    t = torch.full((grid.shape[0], 1), time + 1, dtype=grid.dtype, device=device)
    special = torch.zeros(num_special, 3, dtype=grid.dtype, device=device)
    return torch.cat((special, torch.cat((t, grid), dim=1)), dim=0)


def time_index(frame: int, period: int) -> int:
    """Time coordinate of a stream's frame: wraps with `period` (0 or less: no wrap)."""
    return frame % period if period > 0 else frame
