"""Point-tracking head (VGGT layout): tracks query points of frame 0 through a window.

``TrackHead`` = DPT feature extractor (features only, half resolution) + ``TrackPredictor``
(correlation pyramid + update transformer, refined iteratively).

Shapes (B batch, S frames, N tracks, H/W model-input size, P tokens per frame):

* ``aggregated_tokens_list``: list of ``[B, S, P, dim_in]``, indexed by
  ``intermediate_layer_idx``; patch tokens start at ``patch_start_idx``.
* ``images``: ``[B, S, 3, H, W]`` (only its size is used).
* ``query_points``: ``[B, N, 2]`` pixel ``(x, y)`` in frame 0 of the model input.
* returns ``coord_preds`` (one ``[B, S, N, 2]`` per iteration, input pixels),
  ``vis`` ``[B, S, N]`` and ``conf`` ``[B, S, N]`` (or ``None``), both in ``(0, 1)``.

The state dict matches ``track_head.*`` of the public VGGT-1B / StreamVGGT checkpoints.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from recon.model.dpt_head import DPTHead
from recon.model.track_modules import (
    CorrPyramid,
    Mlp,
    UpdateFormer,
    flow_embedding,
    grid_embedding,
    sample_points,
)


class TrackPredictor(nn.Module):
    """Iterative tracker over feature maps ``[B, S, C, h, w]`` (``C == latent_dim``).

    Query points are given in input pixels; ``stride`` is the input-to-feature-map ratio.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        hidden_size: int = 384,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        depth: int = 6,
        max_scale: float = 518.0,
        predict_conf: bool = True,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.stride = stride
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.max_scale = max_scale
        self.predict_conf = predict_conf
        # Token: [flow code (latent) | flow/max_scale twice (4) | correlation (latent) | feature (latent)].
        self.transformer_dim = 3 * latent_dim + 4

        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden_size, latent_dim)
        # Learned offsets distinguishing the query frame (0) from all others (1).
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = UpdateFormer(self.transformer_dim, hidden_size, latent_dim + 2, depth=depth)
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        if predict_conf:
            self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def forward(
        self, query_points: Tensor, fmaps: Tensor, iters: int = 4
    ) -> tuple[list[Tensor], Tensor, Tensor | None]:
        B, N, _ = query_points.shape
        _, S, C, h, w = fmaps.shape
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)

        query = query_points / float(self.stride)  # feature-map pixels
        coords = query[:, None].expand(B, S, N, 2)
        feats = sample_points(fmaps[:, 0], query)[:, :, None].expand(B, N, S, C)  # B,N,S,C
        corr = CorrPyramid(fmaps, self.corr_levels, self.corr_radius)

        # Constant over iterations: coords of frame 0 stay pinned to the query. The table is
        # float32 and sampled in float32 whatever the compute dtype, like the reference.
        grid_pe = grid_embedding(self.transformer_dim, h, w).to(fmaps.device)
        pos = sample_points(grid_pe.expand(B, -1, -1, -1), query)[:, :, None]  # B,N,1,D
        ref = self.query_ref_token
        ref = torch.cat([ref[:, :1], ref[:, 1:].expand(-1, S - 1, -1)], dim=1)[:, None]  # 1,1,S,D

        coord_preds: list[Tensor] = []
        for _ in range(iters):
            coords = coords.detach()
            corr_feats = self.corr_mlp(corr.sample(feats.transpose(1, 2), coords).transpose(1, 2))
            flows = (coords - coords[:, :1]).transpose(1, 2)  # B,N,S,2
            flow_feats = torch.cat(
                [flow_embedding(flows, C // 2), flows / self.max_scale, flows / self.max_scale], dim=-1
            )
            x = torch.cat([flow_feats, corr_feats, feats], dim=-1) + pos
            x = x + ref.to(x.dtype)

            delta = self.updateformer(x)  # B,N,S,C+2
            feat_update = self.ffeat_updater(self.ffeat_norm(delta[..., 2:].reshape(-1, C)))
            feats = feat_update.reshape(B, N, S, C) + feats
            coords = coords + delta[..., :2].transpose(1, 2)
            coords = torch.cat([query[:, None], coords[:, 1:]], dim=1)
            coord_preds.append(coords * self.stride)

        feats = feats.transpose(1, 2)  # B,S,N,C
        vis = torch.sigmoid(self.vis_predictor(feats)[..., 0])
        conf = torch.sigmoid(self.conf_predictor(feats)[..., 0]) if self.predict_conf else None
        return coord_preds, vis, conf


class TrackHead(nn.Module):
    """DPT features at half resolution + ``TrackPredictor``.

    ``intermediate_layer_idx`` and ``out_channels`` go to the DPT extractor so reduced
    models (fewer / narrower layers) can be built; the defaults give the VGGT-1B layout.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        features: int = 128,
        iters: int = 4,
        predict_conf: bool = True,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        hidden_size: int = 384,
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.iters = iters
        self.feature_extractor = DPTHead(
            dim_in=dim_in,
            patch_size=patch_size,
            features=features,
            out_channels=tuple(out_channels),
            intermediate_layer_idx=tuple(intermediate_layer_idx),
            feature_only=True,
            down_ratio=2,
            pos_embed=False,
        )
        self.tracker = TrackPredictor(
            latent_dim=features,
            hidden_size=hidden_size,
            stride=stride,
            corr_levels=corr_levels,
            corr_radius=corr_radius,
            predict_conf=predict_conf,
        )

    def forward(
        self,
        aggregated_tokens_list: Sequence[Tensor],
        images: Tensor,
        patch_start_idx: int,
        query_points: Tensor,
        iters: int | None = None,
    ) -> tuple[list[Tensor], Tensor, Tensor | None]:
        fmaps = self.feature_extractor(aggregated_tokens_list, images, patch_start_idx)  # B,S,C,H/2,W/2
        return self.tracker(query_points, fmaps, iters=self.iters if iters is None else iters)
