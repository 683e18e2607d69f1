"""Model configuration: a plain dataclass and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelConfig:
    name: str = "custom"
    img_size: int = 518  # backbone's native resolution (its position-embedding grid)
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24  # aggregator levels (each = one frame block + one temporal block)
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    backbone_depth: int = 24
    backbone_heads: int = 16
    rope_freq: float = 100.0
    camera_trunk_depth: int = 4
    camera_heads: int = 16
    camera_iterations: int = 4
    camera_cache_layout: str = "per_iteration"
    dpt_features: int = 256
    dpt_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    dpt_levels: tuple[int, ...] = (4, 11, 17, 23)
    track_head: bool = True
    track_features: int = 128
    # Resolution the model is used at by default (frames are resized to this width).
    default_width: int = 518
    # --- architecture "horizon": local window attention + KDA linear attention (HorizonStream) ---
    architecture: str = "vggt"  # "vggt" | "horizon"
    window_frames: int = 9  # W: past frames in each frame's local attention window
    pose_tokens: int = 32  # pose tokens per window slot
    rope_time_period: int = 21  # the time index of the 3D RoPE wraps with this period
    linear_layers: tuple[int, ...] = ()  # levels whose global step starts with a KDA block
    kda_head_dim: int = 64
    kda_expand_v: float = 1.0
    kda_conv_size: int = 4  # short causal convolution on q/k/v (0: none)
    kda_allow_neg_eigval: bool = False
    metric_readout: bool = True  # per-frame readout token -> positive metric scale
    metric_hidden: tuple[int, ...] = (256, 128)
    horizon_register_tokens: bool = False  # aggregator register tokens (HorizonStream: off)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


_VGGT_1B = ModelConfig(name="vggt-1b")

PRESETS: dict[str, ModelConfig] = {
    # Exactly the tensor layout of the public VGGT-1B and StreamVGGT checkpoints.
    "vggt-1b": _VGGT_1B,
    # Same weights layout; the camera head streams with StreamVGGT's shared cache, which
    # reproduces the public StreamVGGT streaming inference.
    "streamvggt": _VGGT_1B.replace(name="streamvggt", camera_cache_layout="shared"),
    "small": ModelConfig(
        name="small", img_size=518, embed_dim=384, depth=12, num_heads=6, backbone_depth=12, backbone_heads=6,
        camera_trunk_depth=4, camera_heads=12, dpt_features=128, dpt_out_channels=(96, 192, 384, 384),
        dpt_levels=(2, 5, 8, 11), track_head=False, default_width=518,
    ),
    # The shipped default: sized for >= 5 FPS at 224 px on two CPU cores.
    # 10.6M parameters: fp32 training state fits the GPU box's 64 MB transfer limit and
    # fp16 shipped weights stay under 32 MB.
    "tiny": ModelConfig(
        name="tiny", img_size=224, embed_dim=192, depth=5, num_heads=3, backbone_depth=3, backbone_heads=3,
        camera_trunk_depth=1, camera_heads=6, dpt_features=48, dpt_out_channels=(48, 96, 192, 192),
        dpt_levels=(0, 2, 3, 4), track_head=False, default_width=224,
    ),
}  # fmt: skip

# Linear memory: constant memory and time per frame on endless streams.
PRESETS["tiny-linear"] = PRESETS["tiny"].replace(
    name="tiny-linear", architecture="horizon", window_frames=9, pose_tokens=4, rope_time_period=21,
    linear_layers=(1, 3), kda_head_dim=64, metric_hidden=(128, 64),
)  # fmt: skip
# Exactly the tensor layout of the public HorizonStream checkpoint (configs/horizonstream_infer.yaml).
PRESETS["horizonstream"] = ModelConfig(
    name="horizonstream", architecture="horizon", track_head=False, window_frames=9, pose_tokens=32,
    rope_time_period=21, linear_layers=(4, 11, 17, 23), kda_head_dim=64, metric_hidden=(256, 128),
)  # fmt: skip


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}") from None
