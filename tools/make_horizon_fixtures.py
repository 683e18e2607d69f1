"""Generate the HorizonStream golden fixture from the public reference code (reduced config).

Usage (in a throwaway environment, see below):
    PYTHONPATH=/tmp/hsref/site FLA_CACHE_RESULTS=0 TRITON_INTERPRET=1 \
        python tools/make_horizon_fixtures.py --ref /tmp/hs --out tests/fixtures/golden

``--ref`` is a checkout of github.com/TooCoolLa/HorizonStream (commit ddf13338, Apache-2.0; the
3DAgentWorld/HorizonStream URL of the paper has no public snapshot); its ``horizonstream``
package is imported from there, never copied. HorizonStream imports fla's KDA layer, so the
environment needs flash-linear-attention + fla-core 0.5.1, triton (3.6), einops, transformers,
scipy, and numpy < 2.4 (the Triton interpreter converts 1-element arrays to scalars). fla's
Triton kernels run on the CPU under TRITON_INTERPRET=1, with two adjustments (both recorded
in the JSON): the autotuner cannot benchmark under the interpreter, so every kernel runs its
first config (configs only change tiling); and the KDA layers run fla's `fused_recurrent`
kernel, because its `chunk` kernel does not run under the interpreter (fla picks
`fused_recurrent` itself for inputs of <= 64 tokens; both compute the same recurrence).

What it does (CPU, fp32, eval, no_grad, fixed seeds):
  1. builds HorizonStream (models/horizonstream.py) with a REDUCED config (``CFG``), its DINOv2
     backbone replaced by a 2-block one, every parameter seeded-random (``RANDOMISATION``);
  2. runs the reference's streaming inference on S random frames for two chunk schedules
     (``--sliding-size`` 1 and 3 of infer.py): forward_chunk per chunk with its KV / GLA
     caches, then runtime.motion_averaging.compute_motion_averaged_camera_maps;
  3. writes ``<out>/horizon_reduced.safetensors`` (weights.* in the reference's own key layout,
     inputs.images, outputs.s<k>.*, fusion.*) and ``<out>/horizon_reduced.json`` (provenance);
  4. builds the FULL-size model of the release config (configs/horizonstream_infer.yaml) on the CPU
     and writes its state-dict layout to ``--layout`` (default <out>/../horizonstream_layout.json).
"""

import argparse
import json
import os
import sys
import warnings
from functools import partial

import torch
import torch.nn as nn
from safetensors.torch import save_file

REPO_URL = "https://github.com/TooCoolLa/HorizonStream"
COMMIT = "ddf13338b4d15e698d170cf3b8693ab0d3a36116"
FLA_VERSION = "flash-linear-attention==0.5.1, fla-core==0.5.1, triton==3.6.0 (TRITON_INTERPRET=1)"
COMMAND = ("PYTHONPATH=/tmp/hsref/site FLA_CACHE_RESULTS=0 TRITON_INTERPRET=1 "
           "python tools/make_horizon_fixtures.py --ref /tmp/hs --out tests/fixtures/golden")
WEIGHT_SEED, INPUT_SEED, MEDIAN_SEED = 1, 0, 0
S, H, W = 12, 42, 56
WINDOW = 4  # inference.window_size: the current frame + 3 past frames
SLIDINGS = (1, 3)
CFG = {
    "agg_regator_cfg": dict(patch_embed="conv", img_size=56, patch_size=14, embed_dim=64, depth=4, num_heads=4,
                            intermediate_layer_idx=[0, 1, 2, 3], gate_attn="headwise", rope_type="3d",
                            rope_temporal_period=5, fuse_grm_priori=False, num_pose_tokens=2, use_register_token=False,
                            chunk_block_num=2, global_attn_arch="gla", global_attn_impl="softmax", gla_expand_v=1.0,
                            gla_use_short_conv=True, gla_conv_size=4, gla_conv_bias=False, gla_allow_neg_eigval=False,
                            gla_norm_eps=1e-5, gla_serial_layers=[1, 3]),
    "cam_decoder_cfg": dict(pose_encoding_type="absT_quaR_FoV", dim_in=128, trunk_depth=1, num_heads=4),
    "metric_readout_head_cfg": dict(hidden_dims=[32, 16], init_bias=0.0),
    "dpt_decoder_cfg": dict(dim_in=128, output_dim=2, activation="exp", conf_activation="expp1", features=16,
                            out_channels=[8, 16, 32, 32], intermediate_layer_idx=[0, 1, 2, 3]),
    "load_pretrained": False, "use_xyz_head": False, "enable_metric_readout_token": True, "frames_chunk_size": 1,
    "use_chunkwise_checkpoint": True,
}
BACKBONE = dict(img_size=56, patch_size=14, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4, num_register_tokens=4,
                interpolate_antialias=True, interpolate_offset=0.0, block_chunks=0, init_values=1.0)
TOKENS = ("camera_token", "register_token", "cls_token", "register_tokens", "mask_token", "empty_pose_tokens",
          "pose_token", "metric_readout_token")
RANDOMISATION = {
    "generator": f"torch.Generator().manual_seed({WEIGHT_SEED}), parameters visited in named_modules() order, "
                 "direct parameters of each module in registration order, values drawn with torch.randn",
    "Linear/Conv1d/Conv2d/ConvTranspose2d weight": "N(0, 1/sqrt(numel/shape[0]))",
    "Linear/Conv bias": "N(0, 0.02)",
    "LayerNorm weight / bias, FusedRMSNormGated weight": "1 + N(0, 0.1) / N(0, 0.05)",
    "LayerScale gamma": "0.1 + N(0, 0.05)",
    "tokens " + ", ".join(TOKENS): "N(0, 0.5)",
    "pos_embed": "N(0, 0.1)",
    "KDA A_log / dt_bias": "N(0, 0.3) / -3 + N(0, 0.5) (decay ~0.9 per token: the state spans frames)",
    "then": "cam_decoder.pose_branch.fc2.bias[7:9] += 1 (else ReLU zeroes the FoV); "
            "metric_readout_head last Linear weight *= 5 (scales vary visibly between frames and chunks)",
}
# Random weights give mutually inconsistent window poses, whose SO(3) median is ill-conditioned
# (the reference itself changes by O(1) after a few frames when its input moves by 1e-6), so the
# pose fusion is also checked on its own, on consistent noisy window poses of a smooth trajectory.
FUSION = {"frames": 16, "seed": 3, "step_rotation": 0.1, "step_translation": 0.3, "rotation_noise": 0.02,
          "translation_noise": 0.01, "fov": "0.9 + N(0, 0.05)"}


def build_reduced():
    from horizonstream.models.horizonstream import HorizonStream
    from horizonstream.runtime.layers import vision_transformer as vt

    model = HorizonStream(**json.loads(json.dumps(CFG)))
    agg = model.agg_regator
    agg.patch_embed = vt.DinoVisionTransformer(block_fn=partial(vt.Block, attn_class=vt.MemEffAttention), **BACKBONE)
    agg.patch_embed.mask_token.requires_grad_(False)  # as Aggregator.__build_patch_embed__ does
    for blk in agg.global_gla_blocks.values():
        blk.attn.gla.mode = "fused_recurrent"  # fla's chunk kernel does not run under the Triton interpreter
    return model.eval()


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    count = 0
    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            n = lambda std, mean=0.0: mean + std * torch.randn(p.shape, generator=g)  # noqa: E731
            if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
                val = n((p.numel() / p.shape[0]) ** -0.5) if pname == "weight" else n(0.02)
            elif isinstance(mod, nn.LayerNorm) or type(mod).__name__ == "FusedRMSNormGated":
                val = n(0.1, 1.0) if pname == "weight" else n(0.05)
            elif pname == "gamma":
                val = n(0.05, 0.1)
            elif pname in TOKENS:
                val = n(0.5)
            elif pname == "pos_embed":
                val = n(0.1)
            elif pname == "A_log":
                val = n(0.3)
            elif pname == "dt_bias":
                val = n(0.5, -3.0)
            else:
                raise RuntimeError(f"no randomisation rule for {mname}.{pname} ({type(mod).__name__})")
            with torch.no_grad():
                p.copy_(val)
            count += 1
    assert count == len(list(model.parameters())), "some parameter was not randomised"
    with torch.no_grad():
        model.cam_decoder.pose_branch.fc2.bias[7:] += 1.0
        model.metric_readout_head[-1].weight.mul_(5.0)


def chunk_schedule(num_frames, window, sliding):
    """infer.py's schedule: the first `window` frames together, then `sliding` frames a chunk."""
    if num_frames <= window:
        return [(0, num_frames)]
    bounds = [(0, window)]
    while bounds[-1][1] < num_frames:
        start = bounds[-1][1]
        bounds.append((start, min(start + sliding, num_frames)))
    return bounds


def run_reference(model, images, sliding):
    from horizonstream.runtime.motion_averaging import compute_motion_averaged_camera_maps

    torch.manual_seed(MEDIAN_SEED)  # get_median_rotations draws random starting rotations
    state = model.build_sequence_state()
    chunks = chunk_schedule(images.shape[1], WINDOW, sliding)
    cam_maps, depth, conf, scale = [], [], [], []
    for c, (a, b) in enumerate(chunks):
        out = model.forward_chunk(images[:, a:b], window_size=(b - a) if c == 0 else WINDOW, chunk_idx=c,
                                  frame_kv_caches=state["frame_kv_caches"], global_kv_caches=state["global_kv_caches"],
                                  gla_cache=state["gla_cache"])  # fmt: skip
        model.advance_sequence_state(state, is_last_chunk=c == len(chunks) - 1)
        cam_maps.append(out["chunk_cam_map"].float())
        depth.append(out["depth"][..., 0])
        conf.append(out["depth_conf"])
        scale.append(out["predicted_metric_scale"].expand(b - a))
    motion = compute_motion_averaged_camera_maps(cam_maps, frames_num=images.shape[1], window_size=WINDOW)
    return {
        "window_pose_enc": torch.cat(cam_maps, dim=0),  # [rows, WINDOW, 9]: every chunk row, first chunk included
        "depth": torch.cat(depth, dim=1), "depth_conf": torch.cat(conf, dim=1),
        "metric_scale": torch.cat(scale)[None],
        "online_pose_enc": motion["online_cam_map"],  # [1, S, 9]: online T and q, median FoV
    }, chunks  # fmt: skip


def fusion_case():
    """Window poses of a smooth noisy trajectory -> the reference's online motion averaging."""
    from horizonstream.runtime.motion_averaging import compute_motion_averaged_camera_maps
    from horizonstream.utils.vendor.models.components.utils.rotation import mat_to_quat, quat_to_mat

    g = torch.Generator().manual_seed(FUSION["seed"])
    n = FUSION["frames"]

    def small_rotation(std, count):
        return quat_to_mat(torch.cat((std * torch.randn(count, 3, generator=g) / 2, torch.ones(count, 1)), dim=-1))

    steps = small_rotation(FUSION["step_rotation"], n)
    w2c = torch.eye(4).repeat(n, 1, 1)
    for i in range(1, n):
        w2c[i, :3, :3] = steps[i] @ w2c[i - 1, :3, :3]
        w2c[i, :3, 3] = w2c[i - 1, :3, 3] + FUSION["step_translation"] * torch.randn(3, generator=g)
    rows = []
    for c in range(n):
        frames = range(WINDOW) if c < WINDOW else range(c - WINDOW + 1, c + 1)
        rel = torch.stack([w2c[j] @ torch.linalg.inv(w2c[c]) for j in frames])  # camera j from camera c
        R = small_rotation(FUSION["rotation_noise"], WINDOW) @ rel[:, :3, :3]
        t = rel[:, :3, 3] + FUSION["translation_noise"] * torch.randn(WINDOW, 3, generator=g)
        fov = 0.9 + 0.05 * torch.randn(WINDOW, 2, generator=g)
        rows.append(torch.cat((t, mat_to_quat(R), fov), dim=-1))
    rows = torch.stack(rows)  # [n, WINDOW, 9]
    torch.manual_seed(MEDIAN_SEED)
    chunks = [rows[:WINDOW]] + [rows[c : c + 1] for c in range(WINDOW, n)]
    online = compute_motion_averaged_camera_maps(chunks, frames_num=n, window_size=WINDOW)["online_cam_map"]
    return {"fusion.window_pose_enc": rows, "fusion.online_pose_enc": online}


def full_size_layout(ref, path):
    """State-dict layout [[key, shape], ...] of the release config, built on the CPU (~5 GB)."""
    import yaml
    from horizonstream.models.horizonstream import HorizonStream

    with open(os.path.join(ref, "configs", "horizonstream_infer.yaml")) as f:
        cfg = yaml.safe_load(f)["model"]["horizonstream_cfg"]
    sd = HorizonStream(**cfg).state_dict()
    with open(path, "w") as f:
        f.write("[\n" + ",\n".join(json.dumps([k, list(v.shape)]) for k, v in sd.items()) + "\n]\n")
    params = sum(v.numel() for v in sd.values())
    print(f"FULL HorizonStream (release config): {params:,} values in {len(sd)} state-dict tensors -> {path}")
    return {"state_dict_tensors": len(sd), "values": params, "config": "configs/horizonstream_infer.yaml"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="HorizonStream checkout (the folder holding horizonstream/)")
    ap.add_argument("--out", required=True, help="fixture folder (horizon_reduced.*)")
    ap.add_argument("--layout", default=None,
                    help="full-size layout JSON (default: <out>/../horizonstream_layout.json)")
    args = ap.parse_args()
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1 (fla's kernels on the CPU)")
    sys.dont_write_bytecode = True
    warnings.filterwarnings("ignore")
    import triton.runtime.autotuner as autotuner

    autotuner.Autotuner._bench = lambda self, *a, config=None, **k: [0.0, 0.0, 0.0]  # first config wins
    sys.path.insert(0, os.path.abspath(args.ref))
    torch.set_grad_enabled(False)
    torch.manual_seed(0)

    model = build_reduced()
    randomise(model, WEIGHT_SEED)
    sd = model.state_dict()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"reduced HorizonStream: {n_params:,} params, {len(sd)} state-dict tensors")
    images = torch.rand(1, S, 3, H, W, generator=torch.Generator().manual_seed(INPUT_SEED))

    tensors = {f"weights.{k}": v.contiguous() for k, v in sd.items()}
    tensors["inputs.images"] = images
    schedules = {}
    for sliding in SLIDINGS:
        outs, chunks = run_reference(model, images, sliding)
        schedules[f"s{sliding}"] = chunks
        for name, t in outs.items():
            assert torch.isfinite(t).all(), f"s{sliding}.{name} not finite"
            print(f"  s{sliding} {name:16s} {list(t.shape)!s:20s} min {t.min():+.4e} max {t.max():+.4e}")
            tensors[f"outputs.s{sliding}.{name}"] = t.contiguous()
    tensors.update(fusion_case())
    layout = args.layout or os.path.join(os.path.dirname(os.path.abspath(args.out)), "horizonstream_layout.json")
    full = full_size_layout(os.path.abspath(args.ref), layout)
    os.makedirs(args.out, exist_ok=True)
    save_file(tensors, os.path.join(args.out, "horizon_reduced.safetensors"), metadata={"commit": COMMIT})
    prov = {
        "repository": REPO_URL, "commit": COMMIT, "fla": FLA_VERSION, "command": COMMAND,
        "torch_version": torch.__version__, "device": "cpu", "dtype": "float32",
        "mode": "model.eval(), torch.no_grad(), no autocast",
        "input": {"key": "inputs.images", "shape": [1, S, 3, H, W], "seed": INPUT_SEED,
                  "rng": "torch.rand(..., generator=torch.Generator().manual_seed(0))"},
        "weights": {"seed": WEIGHT_SEED, "scheme": RANDOMISATION, "num_params": n_params, "num_tensors": len(sd),
                    "note": "keys weights.<HorizonStream state-dict key> (module HorizonStream, no wrapper prefix)"},
        "config": {**CFG, "backbone": BACKBONE, "inference": {"window_size": WINDOW, "sliding_sizes": list(SLIDINGS)}},
        "schedules": schedules,
        "outputs": {
            "s<k>": "inference with --sliding-size k: forward_chunk over the chunks in `schedules`, "
                    "advance_sequence_state after each, then compute_motion_averaged_camera_maps",
            "window_pose_enc": "chunk_cam_map of every chunk concatenated: one row per frame (the first chunk's rows "
                               "are masked for slots after the row index), metric-scaled translations",
            "depth / depth_conf": "[1, S, H, W], depth metric-scaled",
            "metric_scale": "predicted_metric_scale of each frame's chunk",
            "online_pose_enc": "motion_maps['online_cam_map']: online median-fused absolute poses relative to frame "
                               "0, FoV = anti-diagonal median over all rows (offline)",
            "median_rotation_seed": MEDIAN_SEED,
            "fusion.*": "compute_motion_averaged_camera_maps on window poses of a smooth trajectory (see `fusion`): "
                        "rows [frames, window, 9] (the first `window` rows are the first chunk), online_cam_map",
        },
        "fusion": FUSION,
        "full_size_horizonstream": full,
        "deviations": [
            "triton autotuner: no benchmarking under the interpreter; the first config of every kernel runs",
            "KDA layers: fla fused_recurrent kernel instead of chunk (same recurrence; chunk does not run interpreted)",
        ],
    }  # fmt: skip
    with open(os.path.join(args.out, "horizon_reduced.json"), "w") as f:
        json.dump(prov, f, indent=1)
        f.write("\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
