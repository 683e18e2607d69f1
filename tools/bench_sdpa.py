"""Per-frame cost of a growing cache's attention under each SDPA backend (the choice behind
`recon.attention.mha.growing_kv_backends`). CUDA only.

    python tools/bench_sdpa.py                                          # vggt-1b at 518x392
    TORCH_CUDNN_SDPA_AVOID_RECOMPILE=1 python tools/bench_sdpa.py       # cuDNN's ragged path

24 layers' SDPA calls with q = one frame (1,041 tokens, 16 heads of 64) over k = v = N frames
of keys, for N from 1 to 300, each at a key length not seen before: "first" includes any
execution plan the backend builds for the new shape, "again" is the same call repeated.
"""
import os
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

P, H, D, L = 1041, 16, 64, 24
bshd = os.environ.get("TORCH_CUDNN_SDPA_AVOID_RECOMPILE") == "1"
frames = [1, 2, 3, 4, 5, 8, 16, 32, 64, 100, 128, 200, 300]
cap_frames = 400
if bshd:
    qb = torch.randn(1, P, H, D, device="cuda", dtype=torch.bfloat16)
    buf = torch.randn(1, P * cap_frames, H, D, device="cuda", dtype=torch.bfloat16)
    q = qb.transpose(1, 2)
    kv = lambda n: buf[:, :n].transpose(1, 2)
else:
    q = torch.randn(1, H, P, D, device="cuda", dtype=torch.bfloat16)
    buf = torch.randn(1, H, P * cap_frames, D, device="cuda", dtype=torch.bfloat16)
    kv = lambda n: buf[:, :, :n]

def cap_of(n: int) -> int:
    """Capacity of a cache grown x1.25 from one frame to hold n keys."""
    c = P
    while c < n:
        c = max(n, int(c * 1.25))
    return c

def run(name: str, backend: SDPBackend, masked: bool, jitter: int) -> None:
    """Time the 24 calls per key length; `jitter` keeps each run's lengths unseen."""
    out = []
    for f in frames:
        n = f * P + jitter
        if masked:
            c = cap_of(n); k = kv(c)
            mask = torch.zeros(1, 1, 1, c, dtype=torch.bool, device="cuda"); mask[..., :n] = True
        else:
            k = kv(n); mask = None
        torch.cuda.synchronize(); t = time.perf_counter()
        try:
            with sdpa_kernel([backend]):
                for _ in range(L):
                    F.scaled_dot_product_attention(q, k, k, attn_mask=mask)
            torch.cuda.synchronize(); first = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            with sdpa_kernel([backend]):
                for _ in range(L):
                    F.scaled_dot_product_attention(q, k, k, attn_mask=mask)
            torch.cuda.synchronize(); again = (time.perf_counter() - t) * 1e3
            out.append(f"{f}:{first:.1f}/{again:.1f}")
        except Exception as e:
            out.append(f"{f}:ERR {str(e).splitlines()[0][:60]}"); break
    print(f"{name:28s} bshd={int(bshd)} first/again ms per 24 layers:", " ".join(out), flush=True)

run("cudnn exact", SDPBackend.CUDNN_ATTENTION, False, 3)
run("flash exact", SDPBackend.FLASH_ATTENTION, False, 5)
if not bshd:
    run("efficient masked cap", SDPBackend.EFFICIENT_ATTENTION, True, 7)
    run("cudnn masked cap", SDPBackend.CUDNN_ATTENTION, True, 9)
