"""Generate golden numerical fixtures from the public VGGT / StreamVGGT reference code.

Usage:
    python tools/make_golden_fixtures.py --ref /tmp/ref/src --out tests/fixtures/golden

``--ref`` must point at the ``src`` folder of a checkout of github.com/wzzheng/StreamVGGT
(commit 3e28c5c5d31128cc45a2f4832245664cb899d764); it contains the ``vggt`` package
(bidirectional VGGT) and the ``streamvggt`` package (causal StreamVGGT with a KV cache).
The reference code is imported, never copied. Its unused third-party imports
(huggingface_hub, transformers, einops) are replaced by tiny stand-ins in ``sys.modules``.

What it does (CPU, fp32, no autocast, eval mode, no_grad, fixed seeds):
  1. builds a REDUCED model (see ``CFG``) with each package, with identical module trees;
  2. fills every parameter with seeded random values (``randomise``), copies the same state
     dict into the StreamVGGT model (strict load, same keys/shapes verified);
  3. runs  vggt ``VGGT.forward`` (bidirectional), StreamVGGT ``forward`` (block-causal batch)
     and StreamVGGT ``inference`` (one frame at a time, KV cache) on S random frames;
  4. writes ``<out>/vggt_reduced.safetensors`` (weights.*, inputs.images, outputs.<mode>.*)
     and ``<out>/vggt_reduced.json`` (provenance);
  5. builds the FULL-size default ``vggt.models.vggt.VGGT()`` (and StreamVGGT()) on CPU, prints its
     parameter / tensor counts and writes the state-dict layout to ``--layout``.
Output is deterministic: running it twice gives bit-identical files.
"""
import argparse
import json
import os
import sys
import types
import warnings
from functools import partial

import torch
import torch.nn as nn
from safetensors.torch import save_file

REPO_URL = "https://github.com/wzzheng/StreamVGGT"
COMMIT = "3e28c5c5d31128cc45a2f4832245664cb899d764"
COMMAND = "python tools/make_golden_fixtures.py --ref /tmp/ref/src --out tests/fixtures/golden"
WEIGHT_SEED, INPUT_SEED = 1, 0
FOV_BIAS_OFFSET = 1.0
S, H, W = 4, 42, 70
CFG = {
    "images": {"S": S, "H": H, "W": W, "dist": "uniform[0,1)", "seed": INPUT_SEED},
    "patch_embed": dict(cls="DinoVisionTransformer", img_size=56, patch_size=14, embed_dim=64, depth=2,
                        num_heads=4, mlp_ratio=4, num_register_tokens=4, interpolate_antialias=True,
                        interpolate_offset=0.0, block_chunks=0, init_values=1.0,
                        block_fn="NestedTensorBlock(attn_class=MemEffAttention)", ffn_layer="mlp",
                        qkv_bias=True, proj_bias=True, ffn_bias=True, layernorm_eps=1e-6),
    "aggregator": dict(img_size=56, patch_size=14, embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0,
                       num_register_tokens=4, qk_norm=True, rope_freq=100, init_values=0.01,
                       aa_order=["frame", "global"], aa_block_size=1),
    "camera_head": dict(dim_in=128, trunk_depth=2, num_heads=4, mlp_ratio=4, init_values=0.01,
                        trans_act="linear", quat_act="linear", fl_act="relu", num_iterations=4),
    "depth_head": dict(dim_in=128, patch_size=14, output_dim=2, activation="exp", conf_activation="expp1",
                       features=32, out_channels=[16, 32, 64, 64], intermediate_layer_idx=[0, 1, 2, 3]),
    "point_head": dict(dim_in=128, patch_size=14, output_dim=4, activation="inv_log", conf_activation="expp1",
                       features=32, out_channels=[16, 32, 64, 64], intermediate_layer_idx=[0, 1, 2, 3]),
    "track_head": None,
}
RANDOMISATION = {
    "generator": f"torch.Generator().manual_seed({WEIGHT_SEED}), parameters visited in named_modules() order, "
                 "direct parameters of each module in registration order, values drawn with torch.randn",
    "Linear/Conv2d/ConvTranspose2d weight": "N(0, 1/sqrt(numel/shape[0]))  (fan-in scaled along dim 0)",
    "Linear/Conv bias": "N(0, 0.02)",
    "LayerNorm weight / bias": "1 + N(0, 0.1) / N(0, 0.05)",
    "LayerScale gamma": "0.1 + N(0, 0.05)",
    "camera_token, register_token, cls_token, register_tokens, mask_token, empty_pose_tokens": "N(0, 0.5)",
    "pos_embed": "N(0, 0.1)",
    "then": f"camera_head.pose_branch.fc2.bias[7:9] += {FOV_BIAS_OFFSET} (else FoV channel 7 is ReLU-clamped to 0 "
            "in every frame)",
}
QUIRKS = [  # observed in the reference code; they matter for numerical equivalence
    "StreamVGGT.inference: the camera head's per-trunk-layer KV cache is appended once per refinement iteration "
    "(4 entries per frame), so iteration k of frame t attends to all 4 iterations of frames < t and iterations "
    "0..k of frame t; hence outputs.streaming.pose_enc != outputs.causal.pose_enc (also for frame 0).",
    "StreamVGGT.inference: aggregator caches pre-qk-norm, pre-RoPE K/V per frame; frame t attends to frames <= t, "
    "equal to the block-causal batch forward up to float rounding (depth/points/confs match to ~1e-6).",
    "vggt VGGT.forward reports camera_pose[..., :7]; the 9-dim pose_enc is taken from the camera head output.",
]
OUT_NAMES = ["pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"]
RES_KEYS = {"pose_enc": "camera_pose", "depth": "depth", "depth_conf": "depth_conf",
            "world_points": "pts3d_in_other_view", "world_points_conf": "conf"}


def install_stubs():
    """Stand-ins for imports the reference code needs only for hub / output plumbing."""
    hub = types.ModuleType("huggingface_hub")
    hub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
    tf, tf_fu = types.ModuleType("transformers"), types.ModuleType("transformers.file_utils")
    tf_fu.ModelOutput = object  # outputs are @dataclass subclasses; only attribute access is used
    tf.file_utils = tf_fu
    ein = types.ModuleType("einops")

    def _unused(*a, **k):
        raise NotImplementedError("einops stub: not on any code path run here")
    ein.rearrange = ein.repeat = _unused
    sys.modules.update({"huggingface_hub": hub, "transformers": tf, "transformers.file_utils": tf_fu, "einops": ein})


def build_reduced(pkg):
    """Reduced model from package `pkg` ('vggt' or 'streamvggt') with the reference module tree."""
    mods = {n: __import__(f"{pkg}.{n}", fromlist=["x"]) for n in
            ("models.aggregator", "heads.camera_head", "heads.dpt_head", "layers.vision_transformer")}
    vt = mods["layers.vision_transformer"]
    model_cls = getattr(__import__(f"{pkg}.models.{pkg}", fromlist=["x"]), "VGGT" if pkg == "vggt" else "StreamVGGT")
    agg = mods["models.aggregator"].Aggregator(patch_embed="conv", **CFG["aggregator"])  # patch embed replaced below
    pe = {k: v for k, v in CFG["patch_embed"].items() if k not in ("cls", "block_fn", "layernorm_eps")}
    agg.patch_embed = vt.DinoVisionTransformer(block_fn=partial(vt.Block, attn_class=vt.MemEffAttention), **pe)
    agg.patch_embed.mask_token.requires_grad_(False)  # as Aggregator.__build_patch_embed__ does
    ch = {k: v for k, v in CFG["camera_head"].items() if k != "num_iterations"}
    model = model_cls.__new__(model_cls)  # the real __init__ only takes img_size/patch_size/embed_dim
    nn.Module.__init__(model)
    model.aggregator = agg  # same attribute order as VGGT.__init__ -> same state-dict key order
    model.camera_head = mods["heads.camera_head"].CameraHead(**ch)
    model.point_head = mods["heads.dpt_head"].DPTHead(**CFG["point_head"])
    model.depth_head = mods["heads.dpt_head"].DPTHead(**CFG["depth_head"])
    model.track_head = None
    return model.eval()


def randomise(model, seed):
    """Overwrite every parameter with seeded random values (scheme in RANDOMISATION)."""
    g = torch.Generator().manual_seed(seed)
    seen = 0
    tokens = ("camera_token", "register_token", "cls_token", "register_tokens", "mask_token", "empty_pose_tokens")
    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            n = lambda std, mean=0.0: mean + std * torch.randn(p.shape, generator=g)  # noqa: E731
            if isinstance(mod, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                val = n((p.numel() / p.shape[0]) ** -0.5) if pname == "weight" else n(0.02)
            elif isinstance(mod, nn.LayerNorm):
                val = n(0.1, 1.0) if pname == "weight" else n(0.05)
            elif pname == "gamma":
                val = n(0.05, 0.1)
            elif pname in tokens:
                val = n(0.5)
            elif pname == "pos_embed":
                val = n(0.1)
            else:
                raise RuntimeError(f"no randomisation rule for {mname}.{pname} ({type(mod).__name__})")
            with torch.no_grad():
                p.copy_(val)
            seen += 1
    assert seen == len(list(model.parameters())), "some parameter was not randomised"
    with torch.no_grad():  # seed 1 alone gives FoV channel 7 == ReLU(<0) == 0 for every frame in every mode
        model.camera_head.pose_branch.fc2.bias[7:] += FOV_BIAS_OFFSET


def collect(ress):
    """Stack the per-frame result dicts of the reference models into [1, S, ...] tensors."""
    return {name: torch.stack([r[key] for r in ress], dim=1).contiguous() for name, key in RES_KEYS.items()}


def run_all(vggt_model, stream_model, images):
    views = [{"img": images[:, s]} for s in range(images.shape[1])]  # each [B, 3, H, W]
    outs, captured = {}, []
    hook = vggt_model.camera_head.register_forward_hook(lambda m, i, o: captured.append(o[-1]))
    res = vggt_model(views).ress  # full bidirectional forward
    hook.remove()
    outs["bidirectional"] = collect(res)
    # VGGT.forward (this copy) reports only camera_pose[..., :7]; take all 9 from the camera head itself
    assert torch.equal(captured[0][..., :7], outs["bidirectional"]["pose_enc"])
    outs["bidirectional"]["pose_enc"] = captured[0].contiguous()
    outs["causal"] = collect(stream_model(views).ress)
    outs["streaming"] = collect(stream_model.inference(views).ress)
    return outs


def describe(outs):
    for mode, d in outs.items():
        for name, t in d.items():
            assert torch.isfinite(t).all(), f"{mode}.{name} not finite"
            print(f"  {mode:13s} {name:17s} {list(t.shape)!s:18s} min {t.min():+.4e} max {t.max():+.4e} "
                  f"std {t.std():.4e}")
    b = outs["bidirectional"]
    assert b["depth"].std() > 1e-3 and b["world_points"].std() > 1e-3, "degenerate depth / points"
    assert b["pose_enc"][..., :7].std(dim=1).min() > 1e-3, "pose_enc constant across frames"
    for c in ("depth_conf", "world_points_conf"):
        assert 1.01 < b[c].mean() < 1e3, f"{c} saturated"


def full_size_layout(path):
    from vggt.models.vggt import VGGT
    from streamvggt.models.streamvggt import StreamVGGT
    # built on CPU (~5 GB each): the meta device fails at DinoVisionTransformer's linspace(...).item()
    layout_s = [(k, v.shape) for k, v in StreamVGGT().state_dict().items()]
    full = VGGT()
    sd = full.state_dict()
    assert [(k, v.shape) for k, v in sd.items()] == layout_s, "full-size layouts differ between packages"
    n_all = sum(p.numel() for p in full.parameters())
    n_nt = sum(p.numel() for n, p in full.named_parameters() if not n.startswith("track_head."))
    t_all, t_nt = len(sd), sum(1 for k in sd if not k.startswith("track_head."))
    print(f"FULL vggt.models.vggt.VGGT(): params {n_all:,} ({len(list(full.parameters()))} parameter tensors), "
          f"state-dict tensors {t_all}")
    print(f"  without track_head.*: params {n_nt:,}, state-dict tensors {t_nt}")
    with open(path, "w") as f:
        f.write("[\n" + ",\n".join(json.dumps([k, list(v.shape)]) for k, v in sd.items()) + "\n]\n")
    return dict(params=n_all, params_no_track=n_nt, state_dict_tensors=t_all, state_dict_tensors_no_track=t_nt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="StreamVGGT checkout's src/ folder")
    ap.add_argument("--out", required=True, help="fixture folder (vggt_reduced.*)")
    ap.add_argument("--layout", default=None, help="full-size layout JSON (default: <out>/../vggt1b_layout.json)")
    args = ap.parse_args()
    sys.dont_write_bytecode = True  # leave the reference tree untouched
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.cuda.amp.autocast in reference
    install_stubs()
    sys.path.insert(0, os.path.abspath(args.ref))
    torch.manual_seed(0)
    torch.set_grad_enabled(False)

    vggt_model, stream_model = build_reduced("vggt"), build_reduced("streamvggt")
    randomise(vggt_model, WEIGHT_SEED)
    sd, sd_s = vggt_model.state_dict(), stream_model.state_dict()
    assert list(sd) == list(sd_s) and all(sd[k].shape == sd_s[k].shape for k in sd), "layouts differ"
    stream_model.load_state_dict(sd, strict=True)
    assert all(torch.equal(sd[k], v) for k, v in stream_model.state_dict().items())
    n_params = sum(p.numel() for p in vggt_model.parameters())
    print(f"reduced model: {n_params:,} params, {len(sd)} state-dict tensors (layout identical in both packages)")

    images = torch.rand(1, S, 3, H, W, generator=torch.Generator().manual_seed(INPUT_SEED))
    describe(outs := run_all(vggt_model, stream_model, images))
    diffs = {}
    for a, b in (("streaming", "causal"), ("bidirectional", "causal")):
        for name in OUT_NAMES:
            d = (outs[a][name] - outs[b][name]).abs()
            per_frame = [float(d[:, s].max()) for s in range(S)]
            diffs[f"{a}-{b}.{name}"] = {"max": float(d.max()), "max_per_frame": per_frame}
            print(f"  max|{a} - {b}| {name:17s} {d.max():.3e}  per frame {['%.1e' % x for x in per_frame]}")

    tensors = {f"weights.{k}": v.contiguous() for k, v in sd.items()}
    tensors["inputs.images"] = images
    for mode, d in outs.items():
        tensors.update({f"outputs.{mode}.{n}": t for n, t in d.items()})
    os.makedirs(args.out, exist_ok=True)
    save_file(tensors, os.path.join(args.out, "vggt_reduced.safetensors"), metadata={"commit": COMMIT})

    layout = args.layout or os.path.join(os.path.dirname(os.path.abspath(args.out)), "vggt1b_layout.json")
    full = full_size_layout(layout)
    prov = {
        "repository": REPO_URL, "commit": COMMIT, "command": COMMAND, "torch_version": torch.__version__,
        "device": "cpu", "dtype": "float32", "mode": "model.eval(), torch.no_grad(), no autocast",
        "input": {"key": "inputs.images", "shape": [1, S, 3, H, W], "seed": INPUT_SEED,
                  "rng": "torch.rand(..., generator=torch.Generator().manual_seed(0))"},
        "weights": {"seed": WEIGHT_SEED, "scheme": RANDOMISATION, "num_params": n_params, "num_tensors": len(sd),
                    "note": "keys weights.<state-dict key>; identical for vggt and streamvggt packages"},
        "config": CFG,
        "outputs": {
            "bidirectional": "vggt.models.vggt.VGGT.forward(views); pose_enc = camera_head(...)[-1] (see quirks)",
            "causal": "streamvggt.models.streamvggt.StreamVGGT.forward(views) (block-causal batch forward)",
            "streaming": "streamvggt.models.streamvggt.StreamVGGT.inference(views), one frame at a time with KV "
                         "cache; per-frame results stacked on dim 1 (camera_pose, depth, depth_conf, "
                         "pts3d_in_other_view, conf)",
            "names": {n: RES_KEYS[n] for n in OUT_NAMES},
            "views": "views[s] = {'img': images[:, s]} ([1, 3, H, W] each)",
        },
        "reference_quirks": QUIRKS,
        "max_abs_diffs": diffs,
        "full_size_vggt": full,
    }
    with open(os.path.join(args.out, "vggt_reduced.json"), "w") as f:
        json.dump(prov, f, indent=1)
        f.write("\n")
    print("wrote", args.out, layout)


if __name__ == "__main__":
    main()
