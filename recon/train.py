"""Train the geometry transformer, top to bottom (nanoGPT style).

    python tools/train.py --preset tiny --steps 20000 --out runs/tiny          # one GPU or CPU
    torchrun --nproc_per_node 4 tools/train.py --preset tiny --out runs/tiny   # data parallel
    python tools/train.py --data /path/to/tum_or_colmap_or_folder ...          # your own data
    python tools/train.py --preset tiny-linear --init tiny --freeze patch_embed,frame_blocks ...

Data: synthetic clips rendered on the fly on the training device (datasets/synthetic), or
clips cut from any dataset reader with depth and poses (datasets/readers). Clips are
trained block-causally (each frame sees itself and earlier frames), the clip length grows
from --min-frames to --max-frames over the first --curriculum fraction of training. bf16 autocast on CUDA
(the DPT heads too, all frames in one pass), optional activation checkpointing, CSV log,
resumable from <out>/last.pt: a resumed run goes on with the same learning-rate and clip-length
schedule (with --time-limit, by the training time already spent), so --chunk 500 trains a
long schedule in processes of ~500 s each (e.g. on machines lent by the hour). --reuse 2
trains on each synthetic rendering twice (the second time played backwards). Short clips
show more scenes per frame rendered: in this project's runs (docs/MODEL_CARD.md), 8-12-frame
clips improved held-out depth where a longer run on 48-frame clips did not.

--init loads weights from a checkpoint of the same preset (strictly) or of a related one
(tiny -> tiny-linear: the tensors of the same name and shape; the rest keep their
initialisation). --freeze takes parameter-name prefixes, matched at any dotted component
("frame_blocks" freezes aggregator.frame_blocks.*): those parameters are not trained.
The loss follows the architecture (`recon.losses.training_loss`); for the vggt architecture,
--match-weight (off by default; 0.1 in session 7's trial, docs/MODEL_CARD.md) adds the
correspondence supervision of temporal attention (`recon.losses_match`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist

from .atomic import atomic_path
from .checkpoint import load_matching_weights, save_checkpoint, shipped_weights
from .config import get_preset
from .device import resolve_device
from .losses import training_loss
from .losses_match import MatchProbes
from .model import build_model

# Synthetic seeds below this are reserved for evaluation (the frozen benchmark).
TRAIN_SEED_BASE = 1_000_000


@dataclass
class TrainConfig:
    preset: str = "tiny"
    out: str = "runs/tiny"
    init: str = ""  # weights to start from: a file or a preset's shipped weights (ignored when resuming)
    freeze: str = ""  # comma list of parameter-name prefixes not to train (e.g. patch_embed,frame_blocks)
    data: str = "synthetic"  # "synthetic" or a dataset folder
    families: str = ""  # synthetic scene families to train on (comma list; empty: all but held-out)
    steps: int = 2000
    frames_per_step: int = 32  # per process: clips x frames
    min_frames: int = 2
    max_frames: int = 24
    curriculum: float = 0.3  # fraction of training over which clips grow to max_frames
    height: int = 224
    width: int = 224
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup: int = 200
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    bf16: bool = True  # CUDA only
    grad_checkpointing: bool = False
    match_weight: float = 0.0  # correspondence supervision of temporal attention (recon.losses_match), e.g. 0.1
    match_layers: str = "1,2,3"  # temporal layers whose head --match-head is supervised
    match_head: int = 0
    reuse: int = 1  # synthetic data: train on each rendered batch this many steps (1 or 2; the 2nd time reversed in time)
    log_every: int = 20
    save_every: int = 500
    time_limit: float = 0.0  # seconds of training in all; save and stop cleanly; schedules then follow elapsed time
    chunk: float = 0.0  # seconds: this process saves and stops after this long; resuming continues the schedule
    seed: int = 0
    device: str = "auto"


def progress(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Fraction of training done: by steps, or by time when a time limit is set (whichever is
    further along), so a run cut to a time budget still anneals its learning rate."""
    frac = step / max(1, cfg.steps)
    if cfg.time_limit:
        frac = max(frac, elapsed / cfg.time_limit)
    return min(1.0, frac)


def clip_length(cfg: TrainConfig, frac: float) -> int:
    grow = min(1.0, frac / cfg.curriculum) if cfg.curriculum > 0 else 1.0
    return int(round(cfg.min_frames + grow * (cfg.max_frames - cfg.min_frames)))


def learning_rate(cfg: TrainConfig, step: int, frac: float) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="recon train", description=__doc__.split("\n\n")[0])
    for f in fields(TrainConfig):
        if f.type == "bool":
            p.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    return TrainConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    # -- processes and devices ------------------------------------------------------------
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, world = 0, 1
    device = resolve_device(cfg.device)
    if distributed:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    master = rank == 0
    torch.manual_seed(cfg.seed + rank)
    use_bf16 = cfg.bf16 and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = Path(cfg.out)
    if master:
        out.mkdir(parents=True, exist_ok=True)

    # -- model and optimiser --------------------------------------------------------------
    model = build_model(get_preset(cfg.preset)).to(device)
    if cfg.grad_checkpointing and model.config.architecture != "vggt":
        raise SystemExit(f"--grad-checkpointing is not supported by the {model.config.architecture} architecture")
    model.aggregator.gradient_checkpointing = cfg.grad_checkpointing
    configure_heads_for_training(model, use_bf16)
    resume = out / "last.pt"
    ckpt = torch.load(resume, map_location=device, weights_only=True) if resume.exists() else None
    initialised: set[str] = set()
    if ckpt is not None:
        was = ckpt.get("config", {}).get("freeze", "")
        if was != cfg.freeze:  # the optimiser's parameter groups depend on it
            raise SystemExit(f"{resume} was trained with --freeze '{was}': resume with the same (got '{cfg.freeze}')")
        model.load_state_dict(ckpt["model"])
    elif cfg.init:
        initialised = init_weights(model, cfg.init, master)
    frozen = freeze(model, cfg.freeze)
    probes = None
    if cfg.match_weight > 0 and model.config.architecture == "vggt":
        try:
            probes = MatchProbes(model, [int(i) for i in cfg.match_layers.split(",") if i.strip()], cfg.match_head)
        except ValueError as e:
            raise SystemExit(f"--match-layers {cfg.match_layers!r} / --match-head {cfg.match_head}: {e}") from None
    elif cfg.match_weight > 0 and master:
        print(f"note: the correspondence loss supervises vggt temporal attention; not used for {cfg.preset}")
    if master and frozen:
        n = sum(p.numel() for name, p in model.named_parameters() if name in frozen)
        print(f"frozen: {len(frozen)} parameters ({n / 1e6:.2f}M values) matching {cfg.freeze}")
        fresh = sorted(frozen - initialised) if cfg.init and ckpt is None else []
        if fresh:
            print(f"note: {len(fresh)} frozen parameters keep their initialisation (not in {cfg.init}), "
                  f"e.g. {fresh[0]}")  # fmt: skip
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "token" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim < 2 or "token" in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda",
    )  # fmt: skip
    start_step, spent = 0, 0.0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        start_step, spent = int(ckpt["step"]), float(ckpt.get("elapsed", 0.0))
        if master:
            print(f"resumed from {resume} at step {start_step} ({spent:.0f} s of training)")
    # Frozen parameters get no gradient and are not DDP's concern; all others are used.
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    if master:
        n = sum(p.numel() for p in model.parameters())
        k = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"training {cfg.preset} ({n / 1e6:.1f}M params, {k / 1e6:.1f}M trainable) on {world} x {device}, "
              f"bf16={use_bf16}")  # fmt: skip

    # -- data -------------------------------------------------------------------------------
    sample = make_sampler(cfg, device, rank, world)

    # -- loop -------------------------------------------------------------------------------
    log_path = out / "log.csv"
    header = master and not (log_path.exists() and log_path.stat().st_size)  # columns follow the loss terms
    log_file = open(log_path, "a", newline="") if master else None
    writer = csv.writer(log_file) if master else None
    t_process = time.time()
    t_start = t_process - spent  # the schedule's clock: training time, across resumed processes
    t_last, frames_since = t_process, 0
    step = start_step
    model.train()
    while step < cfg.steps:
        frac = progress(cfg, step, time.time() - t_start)
        if distributed:  # ranks must agree on the clip length and learning rate
            shared = torch.tensor(frac, device=device, dtype=torch.float64)
            dist.broadcast(shared, src=0)
            frac = shared.item()
        S = clip_length(cfg, frac)
        B = max(1, cfg.frames_per_step // S)
        batch = sample(step, B, S)
        for group in optimizer.param_groups:
            group["lr"] = lr = learning_rate(cfg, step, frac)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            pred = ddp_model(batch["images"], causal=True)
        losses = training_loss(pred, batch)
        if probes is not None:
            losses["match"] = probes.loss(batch)
            losses["total"] = losses["total"] + cfg.match_weight * losses["match"]
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        frames_since += B * S * world

        if master and (step % cfg.log_every == 0 or step == cfg.steps):
            now = time.time()
            vals = {k: v.item() for k, v in losses.items()}
            terms = [k for k in vals if k != "total"]  # camera, depth, points | scale; match
            rate = frames_since / max(1e-9, now - t_last)
            if header:
                writer.writerow(["step", "time_s", "lr", "frames", "loss", *terms, "frames_per_s"])
                header = False
            writer.writerow([step, round(now - t_start, 2), f"{lr:.3g}", S,
                             *(f"{vals[k]:.5f}" for k in ("total", *terms)), round(rate, 1)])
            log_file.flush()
            print(f"step {step:6d}  S={S:2d}  loss {vals['total']:.4f}  "
                  + "  ".join(f"{k} {vals[k]:.4f}" for k in terms) + f"  {rate:.0f} frames/s", flush=True)
            t_last, frames_since = now, 0
        now = time.time()
        out_of_time = bool(cfg.time_limit) and now - t_start > cfg.time_limit
        out_of_time = out_of_time or (bool(cfg.chunk) and now - t_process > cfg.chunk)
        if distributed:  # every rank must agree to stop at the same step
            flag = torch.tensor(float(bool(out_of_time)), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if master and (step % cfg.save_every == 0 or step == cfg.steps or out_of_time):
            save_training_state(model, optimizer, step, cfg, out, time.time() - t_start)
        if out_of_time:
            if master:
                print(f"time limit reached at step {step}; state saved to {out}")
            break

    if log_file:
        log_file.close()
    if distributed:
        # Data parallel replicas must end bit-identical; record each rank's checksum.
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
        gathered = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(gathered, checksum)
        if master:
            sums = [g.item() for g in gathered]
            (out / "ddp_checksums.json").write_text(json.dumps({"world_size": world, "checksums": sums}))
            print(f"replica checksums: {sums}")
        dist.barrier()
        dist.destroy_process_group()
    return 0


def init_weights(model: torch.nn.Module, spec: str, verbose: bool) -> set[str]:
    """Load --init (a file, or a preset name: its shipped weights); returns the names of
    the parameters it set."""
    path = spec if os.path.exists(spec) else (shipped_weights(spec) or spec)
    report = load_matching_weights(model, path)
    if verbose:
        loaded, new, unused = (len(report[k]) for k in ("loaded", "new", "unused"))
        detail = f": {loaded} tensors loaded, {new} new (initialised fresh), {unused} unused" if new or unused else ""
        print(f"initialised from {path}{detail}")
    return set(report["loaded"])


def freeze(model: torch.nn.Module, prefixes: str) -> set[str]:
    """requires_grad=False for the parameters whose name, or the name without its first
    dotted components, starts with one of the comma-separated prefixes; returns their names."""
    wanted = [p.strip().strip(".") for p in prefixes.split(",") if p.strip()]
    frozen, used = set(), set()
    for name, param in model.named_parameters():
        parts = name.split(".")
        tails = {".".join(parts[i:]) for i in range(len(parts))}
        for p in wanted:
            if any(t == p or t.startswith(p + ".") for t in tails):
                param.requires_grad_(False)
                frozen.add(name)
                used.add(p)
    unknown = [p for p in wanted if p not in used]
    if unknown:
        raise SystemExit(f"--freeze: no parameter matches {', '.join(unknown)}")
    return frozen


def configure_heads_for_training(model: torch.nn.Module, bf16: bool) -> None:
    """The DPT heads run all frames of a step in one pass (inference chunks them by 8 to bound
    memory) and, under bf16 autocast, in bf16 (inference keeps them fp32 unless
    `prepare_model(precision="bf16")`; their outputs are activated in fp32 either way).
    tools/profile_train.py, tiny, 16 x 48 frames, H200: 786 -> 622 ms a step, 73.7 -> 53.8 GiB."""
    from .model.dpt_head import DPTHead

    for module in model.modules():
        if isinstance(module, DPTHead):
            module.frames_chunk_size = 0
            module.bf16 = bf16


def reversed_in_time(batch: dict) -> dict:
    """The same clips played backwards: every [B, S, ...] tensor reversed along S (a valid clip:
    the targets are re-expressed relative to the new first frame)."""
    return {k: v.flip(1) for k, v in batch.items()}


def save_training_state(model, optimizer, step: int, cfg: TrainConfig, out: Path, elapsed: float) -> None:
    """`last.pt` (weights + optimiser + the training time spent, for resuming) and
    `model.safetensors` (weights only)."""
    with atomic_path(out / "last.pt") as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "elapsed": elapsed, "config": dataclasses.asdict(cfg)}, tmp)  # fmt: skip
    save_checkpoint(model, out / "model.safetensors", extra={"step": step, "train": dataclasses.asdict(cfg)})


def make_sampler(cfg: TrainConfig, device: torch.device, rank: int, world: int):
    """Returns sample(step, B, S) -> dict of [B, S, ...] tensors on `device`:
    images [B,S,3,H,W] in [0,1], depth [B,S,H,W], valid, intrinsic [B,S,3,3], extrinsic [B,S,3,4]."""
    if cfg.data == "synthetic":
        from recon.datasets.synthetic import render_batch

        from .benchmark import TRAIN_FAMILIES

        families = [f for f in cfg.families.split(",") if f] or list(TRAIN_FAMILIES)

        if cfg.reuse not in (1, 2):
            raise SystemExit(f"--reuse must be 1 or 2, got {cfg.reuse}")
        last: dict = {}

        def sample(step: int, B: int, S: int) -> dict:
            # Distinct clips on every rank and rendering; never an evaluation seed or family.
            # With --reuse 2 a rendering serves two steps, the second time played backwards
            # (rendering is ~1/4 of a step's time on the GPU).
            draw, repeat = divmod(step, cfg.reuse)
            if last.get("key") != (draw, B, S):
                first = TRAIN_SEED_BASE + cfg.seed * 10_000_000 + (draw * world + rank) * B
                seeds = list(range(first, first + B))
                fams = [families[s % len(families)] for s in seeds]
                last.update(key=(draw, B, S), batch=render_batch(seeds, S, cfg.height, cfg.width, families=fams,
                                                                   device=device))  # fmt: skip
            return reversed_in_time(last["batch"]) if repeat else last["batch"]

        return sample
    if cfg.reuse != 1:
        raise SystemExit("--reuse applies to synthetic data only (--data synthetic)")
    from recon.datasets.clips import ClipSampler

    return ClipSampler(cfg.data, cfg.height, cfg.width, device=device, seed=cfg.seed * 1000 + rank)


if __name__ == "__main__":
    raise SystemExit(main())
