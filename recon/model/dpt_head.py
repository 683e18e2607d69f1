"""DPT dense head: fuses four aggregator levels into a full-resolution map.

Input  aggregator levels [B, S, P, 2C] (the ones in `intermediate_layer_idx`), images
       [B, S, 3, H, W] (only their size is used), patch_start_idx.
Output (preds [B, S, H, W, output_dim-1], conf [B, S, H, W]), or, with feature_only,
       features [B, S, features, H/down_ratio, W/down_ratio].

Activations: "exp" (depth), "inv_log" (sign(y)*(exp|y|-1), point maps), "linear";
confidence "expp1" (1 + exp), so confidences are > 1.
Module names follow the public VGGT layout so checkpoints load strictly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.device import fp32_region, upcast

from .blocks import LayerNorm


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        # The skip connection carries the *activated* input: the reference applies an
        # in-place ReLU to x before the convolutions, and pretrained weights expect that.
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FusionBlock(nn.Module):
    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.has_residual = has_residual
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        if self.has_residual:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size or (x.shape[-2] * 2, x.shape[-1] * 2)
        return self.out_conv(F.interpolate(x, size=size, mode="bilinear", align_corners=True))


class DPTHead(nn.Module):
    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        # Set by recon.device.prepare_model(precision="bf16"): compute under the caller's bf16
        # autocast (outputs are activated in fp32); otherwise the head runs in fp32.
        self.bf16 = False
        # Frames per convolution pass: bounds activation memory at inference; 0 runs all
        # frames in one pass (recon.train.configure_heads_for_training).
        self.frames_chunk_size = 8
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = list(intermediate_layer_idx)
        oc = list(out_channels)

        self.norm = LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        self.scratch.refinenet1 = FusionBlock(features)
        self.scratch.refinenet2 = FusionBlock(features)
        self.scratch.refinenet3 = FusionBlock(features)
        self.scratch.refinenet4 = FusionBlock(features, has_residual=False)
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1)
            )
        self._embed_cache: dict[tuple, Tensor] = {}

    def forward(
        self,
        levels: list[Tensor | None],
        images: Tensor,
        patch_start_idx: int,
    ) -> Tensor | tuple[Tensor, Tensor]:
        B, S, _, H, W = images.shape
        chunk = self.frames_chunk_size or S
        with fp32_region(images.device.type, enabled=not self.bf16):
            if not self.bf16:
                levels = [upcast(lv) for lv in levels]
            pieces = [self._forward_frames(levels, (H, W), patch_start_idx, s, min(s + chunk, S))
                      for s in range(0, S, chunk)]  # fmt: skip
        if self.feature_only:
            return torch.cat(pieces, dim=1)
        return torch.cat([p[0] for p in pieces], dim=1), torch.cat([p[1] for p in pieces], dim=1)

    def _forward_frames(self, levels, image_hw, patch_start_idx, s0, s1):
        H, W = image_hw
        rows, cols = H // self.patch_size, W // self.patch_size
        feats = []
        for k, level in enumerate(self.intermediate_layer_idx):
            x = levels[level][:, s0:s1, patch_start_idx:]
            B, S = x.shape[:2]
            x = self.norm(x.reshape(B * S, rows * cols, -1))
            x = x.transpose(1, 2).reshape(B * S, -1, rows, cols)
            x = self.projects[k](x)
            if self.pos_embed:
                x = x + self._uv_embedding(x, W / H)
            feats.append(self.resize_layers[k](x))

        sc = self.scratch
        l1, l2, l3, l4 = (getattr(sc, f"layer{i}_rn")(f) for i, f in enumerate(feats, start=1))
        out = sc.refinenet4(l4, size=l3.shape[2:])
        out = sc.refinenet3(out, l3, size=l2.shape[2:])
        out = sc.refinenet2(out, l2, size=l1.shape[2:])
        out = sc.refinenet1(out, l1)
        out = sc.output_conv1(out)
        size = (int(rows * self.patch_size / self.down_ratio), int(cols * self.patch_size / self.down_ratio))
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        if self.pos_embed:
            out = out + self._uv_embedding(out, W / H)
        if self.feature_only:
            return out.reshape(B, S, *out.shape[1:])
        out = sc.output_conv2(out)
        preds, conf = _activate(out, self.activation, self.conf_activation)
        return preds.reshape(B, S, *preds.shape[1:]), conf.reshape(B, S, *conf.shape[1:])

    def _uv_embedding(self, x: Tensor, aspect: float) -> Tensor:
        """Sin/cos embedding of normalised image coordinates, [1, C, h, w], scaled by 0.1."""
        C, h, w = x.shape[1:]
        key = (C, h, w, aspect, x.dtype, x.device)
        if key not in self._embed_cache:
            self._embed_cache[key] = uv_embedding(h, w, C, aspect, x.device).to(x.dtype)
        return self._embed_cache[key]


def uv_embedding(h: int, w: int, channels: int, aspect: float, device: torch.device, omega_0: float = 100.0) -> Tensor:
    # Coordinates span the image, normalised by its diagonal, at patch/pixel centres.
    diag = (aspect**2 + 1.0) ** 0.5
    span_x, span_y = aspect / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (w - 1) / w, span_x * (w - 1) / w, w, device=device)
    ys = torch.linspace(-span_y * (h - 1) / h, span_y * (h - 1) / h, h, device=device)
    u, v = torch.meshgrid(xs, ys, indexing="xy")  # [h, w] each

    def sincos(pos: Tensor, dim: int) -> Tensor:
        omega = 1.0 / omega_0 ** (torch.arange(dim // 2, dtype=torch.float64, device=device) / (dim / 2.0))
        angles = pos.reshape(-1, 1).double() * omega[None]
        return torch.cat((angles.sin(), angles.cos()), dim=1)

    emb = torch.cat((sincos(u, channels // 2), sincos(v, channels // 2)), dim=1).float()
    return 0.1 * emb.reshape(h, w, channels).permute(2, 0, 1).unsqueeze(0)


def inverse_log(y: Tensor) -> Tensor:
    return torch.sign(y) * torch.expm1(y.abs())


def _activate(out: Tensor, activation: str, conf_activation: str) -> tuple[Tensor, Tensor]:
    fmap = upcast(out.permute(0, 2, 3, 1))  # exp and confidences in fp32, whatever the head ran in
    values, conf = fmap[..., :-1], fmap[..., -1]
    if activation == "exp":
        values = torch.exp(values)
    elif activation == "inv_log":
        values = inverse_log(values)
    elif activation != "linear":
        raise ValueError(f"unknown activation {activation!r}")
    if conf_activation == "expp1":
        conf = 1 + conf.exp()
    elif conf_activation == "sigmoid":
        conf = torch.sigmoid(conf)
    else:
        raise ValueError(f"unknown confidence activation {conf_activation!r}")
    return values, conf
