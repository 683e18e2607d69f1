"""Which frames each frame's window holds, and the masks that follow (horizon aggregator).

A frame n sees itself and its last W frames. Its row of pose tokens has one slot per
window frame (slot j <-> frame n - L + 1 + j, L = min(n + 1, W + 1) slots, the current
frame last). Rows of one call are padded to the longest row; padding slots map to frame
j (only first-window rows are short, and they start at frame 0) and are inactive:

* causal mode (streaming and the causal batch forward): inactive slots are invisible to
  everything (keys are masked, the KDA sequence skips them, pooled gates ignore them);
* joint mode (HorizonStream's first chunk, for checkpoint interop): all rows have
  S slots, slot j <-> frame j; inactive slots (j > row) still exist: they enter the KDA
  sequence and the chunk-pooled global gate, and attend only to themselves.
Either way an inactive query attends only to itself, so no row of softmax is empty.
Everything the host needs (row lengths, number of slots, uniformity) is computed from host
integers: building a layout never synchronises with the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class WindowLayout:
    lengths: Tensor  # [S] active slots per row (the current frame is slot lengths-1)
    slot_hist: Tensor  # [S, Wmax] frame of each slot, as an index into the call's history
    valid: Tensor  # [S, Wmax] bool, active slots
    joint: bool
    row_lengths: tuple[int, ...]  # = lengths, on the host

    @property
    def num_slots(self) -> int:
        return self.valid.shape[1]

    @property
    def uniform(self) -> bool:
        """Every slot of every row is active (no masks needed)."""
        return min(self.row_lengths) == self.num_slots

    def runs(self) -> list[tuple[int, int, int]]:
        """[(first row, end row, length)]: maximal runs of consecutive rows of equal length."""
        out: list[tuple[int, int, int]] = []
        for s, L in enumerate(self.row_lengths):
            if out and out[-1][2] == L:
                out[-1] = (out[-1][0], s + 1, L)
            else:
                out.append((s, s + 1, L))
        return out

    @classmethod
    def build(
        cls, first_frame: int, num_frames: int, window: int, held: int, joint: bool, device=None
    ) -> "WindowLayout":
        """first_frame: stream index of the call's first frame; held: past frames in the caches."""
        if joint:
            row_lengths = tuple(range(1, num_frames + 1))
        else:
            row_lengths = tuple(min(first_frame + s + 1, window + 1) for s in range(num_frames))
        slots = max(row_lengths)
        s = torch.arange(num_frames, device=device)
        # Host constants only depend on the frame index until the window is full: a
        # streaming step's layout is the same call every frame from then on.
        lengths = s + 1 if joint else torch.clamp(s + min(first_frame + 1, window + 1), max=window + 1)
        j = torch.arange(slots, device=device)
        valid = j[None] < lengths[:, None]
        hist = s + held  # index of each row's frame in the call's history (past frames first)
        slot_hist = torch.where(valid, hist[:, None] - lengths[:, None] + 1 + j[None], j[None])
        return cls(lengths, slot_hist, valid, joint, row_lengths)

    def token_valid(self, num_patch: int, pose_tokens: int) -> Tensor:
        """[S, P + Wmax*X] bool: the tokens of each row that exist for the KDA sequence."""
        S = self.valid.shape[0]
        pose = torch.ones_like(self.valid) if self.joint else self.valid
        return torch.cat((self.valid.new_ones(S, num_patch), pose.repeat_interleave(pose_tokens, dim=1)), dim=1)

    def global_mask(self, num_patch: int, pose_tokens: int) -> Tensor:
        """[S, 1, A, Wmax*(P+X)] bool for the global attention of each row; keys are the
        window frames' patches (slot-major) then the row's own pose tokens."""
        S, Wm = self.valid.shape
        P, X = num_patch, pose_tokens
        key_valid = torch.cat((self.valid.repeat_interleave(P, dim=1), self.valid.repeat_interleave(X, dim=1)), dim=1)
        query_active = torch.cat((self.valid.new_ones(S, P), self.valid.repeat_interleave(X, dim=1)), dim=1)
        q = torch.arange(P + Wm * X, device=self.valid.device)
        k = torch.arange(Wm * (P + X), device=self.valid.device)
        self_only = (q[:, None] >= P) & (k[None, :] == q[:, None] - P + Wm * P)  # [A, K]
        mask = torch.where(query_active[:, :, None], key_valid[:, None, :], self_only[None])
        return mask[:, None]
