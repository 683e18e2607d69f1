"""Where does a training step of the tiny preset spend its time? Rendering against the model
step, and the step under each head configuration (CUDA only).

    python tools/profile_train.py                       # B=16 clips x 48 frames
    python tools/profile_train.py --clips 8 --frames 32 --variants baseline,heads --kernels

Variants: baseline (DPT heads in fp32, 8 frames per pass: the inference defaults), heads
(bf16, all frames in one pass: `recon.train.configure_heads_for_training`), heads+cl (and
channels-last convolutions), no-point-head (world points from depth and camera instead of the
point head), compiled (heads + torch.compile of the aggregator; the first step's time is the
compilation).
"""

import argparse
import time

import torch

from recon.config import get_preset
from recon.datasets.synthetic import render_batch
from recon.losses import make_targets, total_loss
from recon.model import build_model
from recon.train import configure_heads_for_training

VARIANTS = ("baseline", "heads", "heads+cl", "no-point-head", "compiled")


def build(variant: str, dev: torch.device):
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).to(dev).train()
    if variant != "baseline":
        configure_heads_for_training(model, bf16=True)
        if variant == "heads+cl":
            model.to(memory_format=torch.channels_last)
    if variant == "no-point-head":
        model.world_points_from = "depth"
    if variant == "compiled":
        model.aggregator = torch.compile(model.aggregator)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)


def step(model, opt, batch) -> None:
    t = make_targets(batch["extrinsic"], batch["intrinsic"], batch["depth"], batch["valid"])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        pred = model(batch["images"], causal=True)
    loss = total_loss(pred, t)["total"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timed(fn, repeat: int = 1) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--kernels", action="store_true", help="print the top CUDA kernels of the last variant")
    args = p.parse_args()
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    B, S = args.clips, args.frames
    seeds = list(range(2_000_000, 2_000_000 + B))
    render_batch(seeds[:2], S, 224, 224, device=dev)  # warm-up
    batch = {}
    tr = timed(lambda: batch.update(render_batch(seeds, S, 224, 224, device=dev)))
    print(f"render {B}x{S}: {tr * 1e3:.0f} ms ({B * S / tr:.0f} frames/s)", flush=True)
    for variant in args.variants.split(","):
        try:
            model, opt = build(variant, dev)
            torch.cuda.reset_peak_memory_stats()
            first = timed(lambda: step(model, opt, batch))
            step(model, opt, batch)
            ts = timed(lambda: step(model, opt, batch), repeat=4)
        except Exception as e:  # report and go on with the next variant
            print(f"{variant}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        print(f"{variant:14s} step {ts * 1e3:6.0f} ms (first {first:.1f} s) -> {B * S / ts:6.0f} frames/s model-only, "
              f"{B * S / (ts + tr):6.0f} with rendering; peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB",
              flush=True)  # fmt: skip
    if args.kernels:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step(model, opt, batch)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))


if __name__ == "__main__":
    main()
