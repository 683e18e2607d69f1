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

    @property
    def num_slots(self) -> int:
        return self.valid.shape[1]

    @property
    def uniform(self) -> bool:
        return bool(self.valid.all())

    @classmethod
    def build(
        cls, first_frame: int, num_frames: int, window: int, held: int, joint: bool, device=None
    ) -> "WindowLayout":
        """first_frame: stream index of the call's first frame; held: past frames in the caches."""
        frames = first_frame + torch.arange(num_frames, device=device)
        if joint:
            lengths = torch.arange(1, num_frames + 1, device=device)
            slots = num_frames
        else:
            lengths = torch.clamp(frames + 1, max=window + 1)
            slots = int(lengths.max())
        j = torch.arange(slots, device=device)
        valid = j[None] < lengths[:, None]
        slot_frame = torch.where(valid, frames[:, None] - lengths[:, None] + 1 + j[None], j[None])
        return cls(lengths, slot_frame - (first_frame - held), valid, joint)

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
