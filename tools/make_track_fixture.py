#!/usr/bin/env python
"""Generate the golden fixture for ``recon.model.track_head.TrackHead``.

Runs the *reference* VGGT track head (public code, imported from ``--ref``) on a
reduced, randomly initialised configuration and stores weights, inputs and outputs:

    tests/fixtures/golden/track_reduced.safetensors   keys weights.<param>, inputs.<name>, outputs.<name>
    tests/fixtures/golden/track_reduced.json          provenance

Weights, tokens and images are rounded to float16 for storage *before* the reference
runs (in float32), so the stored values are exactly what produced the outputs.

Usage:
    python tools/make_track_fixture.py --ref /tmp/ref/src
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

REPO_URL = "https://github.com/wzzheng/StreamVGGT"
COMMIT = "3e28c5c5d31128cc45a2f4832245664cb899d764"
UPSTREAM = "https://github.com/facebookresearch/vggt (vggt/heads/track_head.py, vggt/heads/track_modules/)"

CONFIG = {
    "dim_in": 128,
    "patch_size": 14,
    "features": 16,
    "iters": 2,
    "predict_conf": True,
    "stride": 2,
    "corr_levels": 3,
    "corr_radius": 2,
    "hidden_size": 32,
    "intermediate_layer_idx": [0, 1, 2, 3],
    "out_channels": [8, 16, 32, 32],
}
INPUTS = {"B": 1, "S": 3, "patch_start_idx": 5, "patch_h": 3, "patch_w": 5, "num_layers": 4, "N": 6}


def _install_einops_stub() -> None:
    """Minimal ``einops.rearrange`` for the pure reshape patterns the reference uses."""
    if importlib.util.find_spec("einops") is not None:
        return

    def groups(side: str) -> list[list[str]]:
        return [tok.strip("()").split() for tok in re.findall(r"\([^)]*\)|\S+", side)]

    def rearrange(t: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
        lhs, rhs = (groups(s.strip()) for s in pattern.split("->"))
        if [a for g in lhs for a in g] != [a for g in rhs for a in g]:
            raise NotImplementedError(f"einops stub only reshapes, got {pattern!r}")
        known = dict(sizes)
        for g, dim in zip(lhs, t.shape):
            missing = [a for a in g if a not in known]
            prod = 1
            for a in g:
                prod *= known.get(a, 1)
            if len(missing) > 1:
                raise NotImplementedError(f"ambiguous axes in {pattern!r}")
            if missing:
                known[missing[0]] = dim // prod
        shape = []
        for g in rhs:
            prod = 1
            for a in g:
                prod *= known[a]
            shape.append(prod)
        return t.reshape(shape)

    def repeat(*_: object, **__: object) -> None:
        raise NotImplementedError("einops stub: repeat is not used by the track head")

    stub = types.ModuleType("einops")
    stub.rearrange = rearrange
    stub.repeat = repeat
    sys.modules["einops"] = stub


def build_reference(ref_src: str) -> nn.Module:
    sys.path.insert(0, ref_src)
    _install_einops_stub()
    from vggt.heads.dpt_head import DPTHead
    from vggt.heads.track_head import TrackHead

    c = CONFIG
    model = TrackHead(
        dim_in=c["dim_in"],
        patch_size=c["patch_size"],
        features=c["features"],
        iters=c["iters"],
        predict_conf=c["predict_conf"],
        stride=c["stride"],
        corr_levels=c["corr_levels"],
        corr_radius=c["corr_radius"],
        hidden_size=c["hidden_size"],
    )
    # The reference constructor hard-codes the DPT layer indices and widths; swap in a
    # reduced extractor built exactly as TrackHead builds its own.
    model.feature_extractor = DPTHead(
        dim_in=c["dim_in"],
        patch_size=c["patch_size"],
        features=c["features"],
        out_channels=list(c["out_channels"]),
        intermediate_layer_idx=list(c["intermediate_layer_idx"]),
        feature_only=True,
        down_ratio=2,
        pos_embed=False,
    )
    return model.eval()


def randomise(model: nn.Module, gen: torch.Generator, flow_std: float, emb_std: float) -> None:
    """Every parameter random: norm weights 1+N(0,0.1), everything else N(0,0.05); fp16-exact.

    Two blocks get their own std. ``flow_std``: the coordinate rows of ``flow_head`` (how far
    tracks move). ``emb_std``: the ``input_transform`` columns reading the sin/cos flow code.
    That code has frequencies up to ~750 rad/px here, so a 1-ulp difference in a coordinate
    after iteration 1 shifts its phase by ~1e-3; with weights as large as the rest, the
    reference itself moves by ~1e-4 px between float32 and float64, i.e. a 1e-4 float32
    comparison would test rounding, not the algorithm. Damping those columns conditions
    the float32 check; the float64 outputs check the flow code tightly regardless.
    """
    norm_weights = {
        f"{name}.weight" if name else "weight"
        for name, m in model.named_modules()
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm))
    }
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            value = 1.0 + 0.1 * noise if name in norm_weights else 0.05 * noise
            if name.endswith("updateformer.flow_head.weight"):
                value[:2] = flow_std * noise[:2]
            if name.endswith("updateformer.input_transform.weight"):
                code = 2 * (CONFIG["features"] // 2)  # leading sin/cos flow-code channels
                value[:, :code] = emb_std * noise[:, :code]
            p.copy_(value.half().float())


def make_inputs(gen: torch.Generator) -> dict[str, torch.Tensor]:
    i = INPUTS
    P = i["patch_start_idx"] + i["patch_h"] * i["patch_w"]
    H, W = i["patch_h"] * CONFIG["patch_size"], i["patch_w"] * CONFIG["patch_size"]
    out = {
        f"tokens_{k}": torch.randn(i["B"], i["S"], P, CONFIG["dim_in"], generator=gen).half().float()
        for k in range(i["num_layers"])
    }
    out["images"] = torch.rand(i["B"], i["S"], 3, H, W, generator=gen).half().float()
    # Keep queries a pixel away from the border so they are "inside the image".
    lo = torch.tensor([1.0, 1.0])
    hi = torch.tensor([W - 2.0, H - 2.0])
    out["query_points"] = lo + (hi - lo) * torch.rand(i["B"], i["N"], 2, generator=gen)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="path containing the reference 'vggt' package")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "tests/fixtures/golden"))
    ap.add_argument("--seed", type=int, default=20250719)
    ap.add_argument("--flow-std", type=float, default=0.05, help="std of flow_head's coordinate rows")
    ap.add_argument("--emb-std", type=float, default=0.002, help="std of input_transform's flow-code columns")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    model = build_reference(args.ref)
    gen = torch.Generator().manual_seed(args.seed)
    randomise(model, gen, args.flow_std, args.emb_std)
    inputs = make_inputs(gen)

    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"weights.{k}"] = v.half().contiguous()
    for k, v in inputs.items():
        tensors[f"inputs.{k}"] = (v if k == "query_points" else v.half()).contiguous()
    results = {}
    for suffix, dtype in (("", torch.float32), ("_f64", torch.float64)):
        model.to(dtype)
        tokens = [inputs[f"tokens_{k}"].to(dtype) for k in range(INPUTS["num_layers"])]
        with torch.no_grad():
            coord_preds, vis, conf = model(
                tokens,
                inputs["images"].to(dtype),
                INPUTS["patch_start_idx"],
                query_points=inputs["query_points"].to(dtype),
            )
        results[suffix] = coord_preds[-1]
        tensors[f"outputs.coord_preds{suffix}"] = torch.stack(coord_preds).contiguous()  # iters,B,S,N,2
        tensors[f"outputs.vis{suffix}"] = vis.contiguous()
        tensors[f"outputs.conf{suffix}"] = conf.contiguous()

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    st_path = out_dir / "track_reduced.safetensors"
    save_file(tensors, str(st_path))

    final = results[""]
    moved = (final - final[:, :1]).norm(dim=-1)[:, 1:]
    prov = {
        "description": "Golden outputs of the reference VGGT TrackHead, reduced config, random weights.",
        "reference_repo": REPO_URL,
        "reference_commit": COMMIT,
        "reference_upstream": UPSTREAM,
        "reference_construction": (
            "vggt.heads.track_head.TrackHead(dim_in, patch_size, features, iters, predict_conf, stride, "
            "corr_levels, corr_radius, hidden_size), then .feature_extractor replaced by "
            "vggt.heads.dpt_head.DPTHead(dim_in, patch_size, features, out_channels, intermediate_layer_idx, "
            "feature_only=True, down_ratio=2, pos_embed=False)"
        ),
        "config": CONFIG,
        "inputs": INPUTS,
        "seed": args.seed,
        "init": (
            "norm weights 1+N(0,0.1); rows 0:2 of tracker.updateformer.flow_head.weight "
            f"N(0,{args.flow_std}); columns 0:{CONFIG['features']} (sin/cos flow code) of "
            f"tracker.updateformer.input_transform.weight N(0,{args.emb_std}); all other parameters "
            "N(0,0.05); everything rounded to float16. See randomise() for why the flow code is damped."
        ),
        "storage": (
            "weights.* and inputs.tokens_*/images are float16 (exact: values were rounded before the "
            "reference runs); inputs.query_points and outputs.* are float32, outputs.*_f64 float64"
        ),
        "outputs": {
            "coord_preds": "[iters, B, S, N, 2] pixels of the model input, reference run in float32 on CPU",
            "vis": "[B, S, N] sigmoid, float32 run",
            "conf": "[B, S, N] sigmoid, float32 run",
            "*_f64": "same, reference module and inputs cast to float64",
        },
        "stats": {
            "num_weight_tensors": len(model.state_dict()),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "max_track_motion_px": float(moved.max()),
            "reference_f32_vs_f64_final_coords": float((results[""].double() - results["_f64"]).abs().max()),
        },
        "torch_version": torch.__version__,
        "einops": getattr(sys.modules["einops"], "__version__", "reshape-only stub in this script"),
        "command": (
            f"python tools/make_track_fixture.py --ref {args.ref} --seed {args.seed} "
            f"--flow-std {args.flow_std} --emb-std {args.emb_std}"
        ),
    }
    (out_dir / "track_reduced.json").write_text(json.dumps(prov, indent=2) + "\n")
    print(f"wrote {st_path} ({st_path.stat().st_size} bytes), {len(tensors)} tensors")
    print(json.dumps(prov["stats"]))


if __name__ == "__main__":
    main()
