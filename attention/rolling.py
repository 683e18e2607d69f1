"""Bounded KV cache pruned without attention weights (InfiniteVGGT-style `rolling`).

* The first step's tokens (the first frame) are anchors: never evicted.
* When a layer is full, the candidates (all non-anchor cached tokens) are scored per head
  by cosine similarity to the mean normalised candidate key; the most redundant (most
  similar) are evicted, and the new frame's tokens are written into the freed slots.
  Pruning needs keys only, never attention weights, so SDPA/FlashAttention stay usable.
* The total budget (tokens per head summed over layers, or MB, or frames) is split across
  layers in proportion to how diverse each layer's keys are, measured when the cache first
  fills (1 - |mean normalised key|, averaged over heads).
* Storage is one preallocated buffer per layer; a step writes only the new tokens
  (a scatter), never concatenates or copies the whole cache. Buffers are sized once, at
  the rebalance; before it every layer holds at most an equal share of the budget.

Shapes: k, v [B, H, T, D]. Slot order inside a buffer carries no meaning (temporal attention
has no positional term across frames), so new tokens may land anywhere. A multi-frame
step with a causal mask needs the new tokens last: that path compacts instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cache import KVCache, append_layer, grow_layer
from .scoring import redundancy_scores  # Triton kernel for CUDA tensors, torch otherwise


class RollingKVCache(KVCache):
    def __init__(
        self,
        num_layers: int,
        budget_tokens: int | None = None,
        budget_mb: float | None = None,
        budget_frames: int | None = None,
        rebalance: bool = True,
    ) -> None:
        super().__init__(num_layers)
        if sum(x is not None for x in (budget_tokens, budget_mb, budget_frames)) > 1:
            raise ValueError("give at most one of budget_tokens, budget_mb, budget_frames")
        for name, value in (("budget_tokens", budget_tokens), ("budget_mb", budget_mb), ("budget_frames", budget_frames)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.budget_tokens, self.budget_mb, self.budget_frames = budget_tokens, budget_mb, budget_frames
        self.rebalance_enabled = rebalance
        self.reset()

    # -- bookkeeping ---------------------------------------------------------------------
    def reset(self) -> None:
        self._k: list[Tensor | None] = [None] * self.num_layers
        self._v: list[Tensor | None] = [None] * self.num_layers
        self._len = [0] * self.num_layers
        self._cap: list[int | None] = [None] * self.num_layers  # final per-layer capacity
        self.anchor_tokens = 0
        self.total_budget: int | None = None  # tokens per head over all layers, once known
        self.evicted = 0
        self._step_tokens = 0

    @property
    def bounded(self) -> bool:
        return any(x is not None for x in (self.budget_tokens, self.budget_mb, self.budget_frames))

    def num_tokens(self, index: int) -> int:
        return self._len[index]

    def capacity(self, index: int) -> int | None:
        return self._cap[index]

    def steady(self) -> bool:
        # Full everywhere: each step evicts exactly its own size in every layer.
        return self.bounded and all(c is not None and n == c for c, n in zip(self._cap, self._len))

    def count_replayed_step(self) -> None:
        self.evicted += self.num_layers * self._step_tokens

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._k + self._v if t is not None)

    def _resolve_budget(self, k: Tensor) -> None:
        B, H, T, D = k.shape
        if self.budget_tokens is not None:
            total = int(self.budget_tokens)
        elif self.budget_mb is not None:
            per_token = 2 * B * H * D * k.element_size()  # keys and values, one layer
            total = int(self.budget_mb * 2**20 // per_token)
        else:
            total = int(self.budget_frames * T * self.num_layers)
        # Every layer must hold the anchors plus one incoming step.
        minimum = self.num_layers * (2 * T + 1)
        if total < minimum:
            raise ValueError(f"rolling cache budget of {total} tokens is below the minimum {minimum} "
                             f"(anchor frame + one frame + a scratch slot in each of {self.num_layers} layers)")
        self.total_budget = total

    # -- the LayerKV operation -------------------------------------------------------------
    def update(self, index: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        B, H, T, D = k.shape
        self._step_tokens = T
        first_step = self._k[index] is None
        if first_step:
            if index == 0 or not self.anchor_tokens:
                self.anchor_tokens = T
            if self.bounded and self.total_budget is None:
                self._resolve_budget(k)
            share = self.total_budget // self.num_layers if self.bounded else max(4 * T, 1)
            self._k[index] = k.new_empty(B, H, max(share, T), D)
            self._v[index] = v.new_empty(B, H, max(share, T), D)
        n = self._len[index]
        cap = self._cap[index]
        if cap is None:  # still filling the equal share (or unbounded)
            usable = self._k[index].shape[2] - (1 if self.bounded else 0)  # bounded: last slot is scratch
            if n + T > usable:
                if self.bounded and self.rebalance_enabled:
                    self._rebalance(k.device, T)
                    return self.update(index, k, v)
                if self.bounded:  # fixed equal shares; the last slot is the scratch slot
                    self._cap = [b.shape[2] - 1 if b is not None else None for b in self._k]
                    return self.update(index, k, v)
                grow_layer(self, index, k, v, max(n + T, int(self._k[index].shape[2] * 1.25)))
            return append_layer(self, index, k, v)
        if n + T <= cap:
            return append_layer(self, index, k, v)
        return self._evict_and_write(index, k, v)

    def _evict_and_write(self, index: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        buf_k, buf_v = self._k[index], self._v[index]
        n, cap, T, A = self._len[index], self._cap[index], k.shape[2], self.anchor_tokens
        if cap - T < A:
            raise ValueError(f"a step of {T} tokens does not fit layer {index}'s rolling budget of {cap}")
        B, H, _, D = k.shape
        n_evict = n + T - cap
        # Free slots: the most redundant candidates, plus never-filled slots [n, cap).
        free = torch.zeros(B, H, cap, dtype=torch.bool, device=k.device)
        if n_evict > 0:
            scores = redundancy_scores(buf_k[:, :, A:n])  # [B, H, n - A]
            free.scatter_(2, scores.topk(n_evict, dim=-1).indices + A, True)
            self.evicted += n_evict
        free[:, :, n:cap] = True
        # New tokens go last (the tail [cap - T, cap)), so a causal mask over them still
        # lines up; kept tokens living in the tail move into free slots before it.
        tail = slice(cap - T, cap)
        head_free = free[:, :, : cap - T]
        tail_kept = ~free[:, :, tail]
        moves = tail_kept.sum(-1, keepdim=True)  # [B, H, 1], equals head_free.sum(-1)
        rank = torch.arange(T, device=k.device)
        src = torch.sort(tail_kept.byte(), dim=-1, descending=True, stable=True).indices  # kept first
        dst = torch.sort(head_free.byte(), dim=-1, descending=True, stable=True).indices[..., :T]
        valid = rank < moves
        dst = torch.where(valid, dst, cap)  # invalid pairs write to the scratch slot
        src = (src + cap - T)[..., None].expand(-1, -1, -1, D)
        dst = dst[..., None].expand(-1, -1, -1, D)
        for buf, new in ((buf_k, k), (buf_v, v)):
            buf.scatter_(2, dst, buf.gather(2, src))
            buf[:, :, tail] = new
        self._len[index] = cap
        return buf_k[:, :, :cap], buf_v[:, :, :cap]

    # -- budget split ------------------------------------------------------------------------
    def _rebalance(self, device: torch.device, step_tokens: int) -> None:
        """Size every layer's buffer once, in proportion to its key diversity."""
        A, L = self.anchor_tokens, self.num_layers
        diversity = []
        for i in range(L):
            keys = self._k[i][:, :, A : self._len[i]].float()
            mean = torch.nn.functional.normalize(keys, dim=-1).mean(dim=2)  # [B, H, D]
            diversity.append((1 - mean.norm(dim=-1)).mean().clamp(min=1e-3).item())
        spare = self.total_budget - L * (2 * A + 1)  # beyond anchors + one step + scratch slot
        weights = torch.tensor(diversity)
        extra = (weights / weights.sum() * spare).floor().long().tolist()
        for i in range(L):
            cap = 2 * A + extra[i]
            n = self._len[i]
            keys, vals = self._k[i][:, :, :n], self._v[i][:, :, :n]
            keep = min(n, cap - step_tokens)  # room for the incoming step
            if keep < n:  # drop the most redundant candidates now
                scores = redundancy_scores(keys[:, :, A:n])  # upcasts internally
                kept = scores.topk(keep - A, dim=-1, largest=False).indices.sort(dim=-1).values + A
                anchor_idx = torch.arange(A, device=device).expand(*kept.shape[:2], A)
                idx = torch.cat((anchor_idx, kept), dim=-1)[..., None].expand(-1, -1, -1, keys.shape[3])
                keys, vals = keys.gather(2, idx), vals.gather(2, idx)
                self.evicted += n - keep
            new_k = keys.new_empty(keys.shape[0], keys.shape[1], cap + 1, keys.shape[3])  # +1: scratch slot
            new_v = vals.new_empty(new_k.shape)
            new_k[:, :, :keep], new_v[:, :, :keep] = keys, vals
            self._k[i], self._v[i], self._len[i], self._cap[i] = new_k, new_v, keep, cap
