"""DINOv2-style ViT with register tokens: turns each image into patch tokens.

Input  images [N, 3, H, W], normalised with ImageNet mean/std, H and W multiples of the
       patch size.
Output patch tokens [N, (H/p)*(W/p), C] after the final LayerNorm.

The learned position embedding is defined on a square grid (img_size/p)^2 and resized
bicubically (with antialiasing) to the input grid, as in DINOv2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import Block, LayerNorm


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNormalization:
    """images [N, 3, H, W] in [0, 1] -> ImageNet-normalised, the backbone's input. The two
    constants are cached per (dtype, device): no per-frame host-to-device copies (which a
    CUDA graph could not replay)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def __call__(self, images: Tensor) -> Tensor:
        key = (images.dtype, images.device)
        if key not in self._cache:
            mean = torch.tensor(_IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
            std = torch.tensor(_IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
            self._cache[key] = (mean, std)
        mean, std = self._cache[key]
        return (images - mean) / std


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTBackbone(nn.Module):
    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        num_register_tokens: int,
        mlp_ratio: float = 4.0,
        init_values: float = 1.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        # Unused at inference; kept so DINOv2/VGGT checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=init_values, norm_eps=1e-6) for _ in range(depth)
        )
        self.norm = LayerNorm(embed_dim, eps=1e-6)
        self._pos_cache: dict[tuple, Tensor] = {}
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def patch_pos_embed(self, rows: int, cols: int) -> Tensor:
        """Position embedding of the patches for a rows x cols grid, [1, rows*cols, C]."""
        grid = int(round((self.pos_embed.shape[1] - 1) ** 0.5))
        table = self.pos_embed[:, 1:]
        if rows == grid and cols == grid:
            return table
        cacheable = not torch.is_grad_enabled()
        key = (rows, cols, table.device, table.dtype, self.pos_embed._version, self.pos_embed.data_ptr())
        if cacheable and key in self._pos_cache:
            return self._pos_cache[key]
        C = table.shape[-1]
        square = table.float().reshape(1, grid, grid, C).permute(0, 3, 1, 2)
        resized = F.interpolate(square, size=(rows, cols), mode="bicubic", antialias=True)
        out = resized.permute(0, 2, 3, 1).reshape(1, rows * cols, C).to(table.dtype)
        if cacheable:
            self._pos_cache = {key: out}
        return out

    def forward(self, images: Tensor) -> Tensor:
        N, _, H, W = images.shape
        rows, cols = H // self.patch_size, W // self.patch_size
        x = self.patch_embed(images) + self.patch_pos_embed(rows, cols)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(N, -1, -1)
        x = torch.cat((cls, self.register_tokens.expand(N, -1, -1), x), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]
