"""Where does a training step of the tiny preset spend its time? Throughput against batch
size, the share of rendering the synthetic clips, and the top CUDA kernels of one step.

    python tools/profile_train.py        # CUDA only
"""
import time, torch
from recon.config import get_preset
from recon.model import build_model
from recon.losses import make_targets, total_loss
from recon.datasets.synthetic import render_batch
dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = True
model = build_model(get_preset("tiny")).to(dev).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
def step(batch):
    t = make_targets(batch["extrinsic"], batch["intrinsic"], batch["depth"], batch["valid"])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        pred = model(batch["images"], causal=True)
    loss = total_loss(pred, t)["total"]
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for B, S in ((6, 32), (12, 32), (24, 32), (8, 48)):
    seeds = list(range(2_000_000, 2_000_000 + B))
    torch.cuda.synchronize(); t0 = time.perf_counter()
    batch = render_batch(seeds, S, 224, 224, families=["room"] * B, device=dev)
    torch.cuda.synchronize(); tr = time.perf_counter() - t0
    for _ in range(2): step(batch)
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(3): step(batch)
    torch.cuda.synchronize(); ts = (time.perf_counter() - t0) / 3
    print(f"B={B} S={S}: render {tr*1e3:.0f} ms, step {ts*1e3:.0f} ms -> {B*S/ts:.0f} frames/s model-only, "
          f"{B*S/(ts+tr):.0f} with render; peak {torch.cuda.max_memory_allocated()/2**30:.1f} GiB", flush=True)
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
    step(batch); torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60))
