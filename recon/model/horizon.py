"""The "horizon" geometry transformer: constant memory and time per frame on endless streams.

HorizonStream-style (github.com/TooCoolLa/HorizonStream): a local-window + KDA aggregator
(`HorizonAggregator`), our camera head run inside each frame's window (relative poses of
the window's frames, camera-from-current), our DPT depth head, and a metric readout token
whose features give a positive scale exp(MLP(f)) applied to depth and translations. The
relative window poses are fused online into absolute poses (`horizon_poses`).

forward(images [B, S, 3, H, W], state=None) returns the GeometryTransformer dict:
  pose_enc [B, S, 9] (absolute, world = first camera, metric translation), pose_enc_list
  ([pose_enc]), extrinsic [B, S, 3, 4], intrinsic [B, S, 3, 3], depth / depth_conf [B, S, H, W],
  world_points [B, S, H, W, 3] (depth unprojected), world_points_conf (= depth_conf), and
  metric_scale [B, S], window_pose_enc [B, S, Wmax, 9] (metric), window_pose_enc_list (raw,
  one per refinement iteration), window_valid [S, Wmax] (active window slots).
A frame's field of view is its own slot's estimate (causal); `median_window_fov` gives the
reference's offline median over every window that saw the frame.

The batch forward (state=None) is causal and equals streaming frame by frame with a
`LinearStreamState` (memory strategy "linear"). `joint_window`, `time_start` and
`pool_scale` reproduce HorizonStream's chunked inference (see horizon_reference.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recon.align import pose_encoding_to_extri_intri, unproject_depth
from recon.attention import LinearStreamState, PoseHistory
from recon.config import ModelConfig
from recon.device import fp32_region, upcast

from .camera_head import CameraHead
from .dpt_head import DPTHead
from .horizon_aggregator import HorizonAggregator
from .horizon_poses import absolute_from_windows, pose_to_encoding


class HorizonTransformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        if c.depth - 1 not in c.dpt_levels:
            raise ValueError(f"horizon models read pose tokens at the last level: dpt_levels {c.dpt_levels} "
                             f"must contain {c.depth - 1}")  # fmt: skip
        bad = [i for i in c.linear_layers if not 0 <= i < c.depth]
        if bad:
            raise ValueError(f"linear_layers {bad} out of range for depth {c.depth}")
        self.config = c
        self.aggregator = HorizonAggregator(c)
        dim = 2 * c.embed_dim
        self.camera_head = CameraHead(
            dim, c.camera_trunk_depth, c.camera_heads, c.mlp_ratio, num_iterations=c.camera_iterations
        )
        self.depth_head = DPTHead(dim, patch_size=c.patch_size, output_dim=2, activation="exp", conf_activation="expp1",
                                  features=c.dpt_features, out_channels=c.dpt_out_channels,
                                  intermediate_layer_idx=c.dpt_levels)  # fmt: skip
        self.metric_head = None
        if c.metric_readout:
            layers: list[nn.Module] = []
            last = dim
            for h in c.metric_hidden:
                layers += [nn.Linear(last, h), nn.ReLU()]
                last = h
            layers.append(nn.Linear(last, 1))
            self.metric_head = nn.Sequential(*layers)
            nn.init.zeros_(self.metric_head[-1].bias)

    def init_state(self) -> LinearStreamState:
        return LinearStreamState.create(self.config.depth, self.config.window_frames)

    def forward(
        self,
        images: Tensor,
        state: LinearStreamState | None = None,
        causal: bool = True,
        query_points: Tensor | None = None,
        *,
        joint_window: bool = False,
        time_start: int | None = None,
        pool_scale: bool = False,
    ) -> dict[str, Tensor | list[Tensor]]:
        if images.ndim == 4:
            images = images.unsqueeze(0)
        B, S, _, H, W = images.shape
        name = self.config.name
        if not causal:
            raise ValueError(f"model {name!r} (horizon architecture) is causal only")
        if query_points is not None:
            raise ValueError(f"model {name!r} has no track head")
        if state is not None and not isinstance(state, LinearStreamState):
            raise ValueError(f"model {name!r} streams with memory strategy 'linear', got a {type(state).__name__}")
        p = self.config.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
        needed = set(self.config.dpt_levels) | {self.config.depth - 1}
        agg = self.aggregator(images, state, keep_levels=needed, time_start=time_start, joint=joint_window)
        layout = agg.layout

        depth, depth_conf = self.depth_head(agg.levels, images, agg.patch_start_idx, frames_chunk_size=1)
        with fp32_region(images.device.type):
            window_list = self._window_poses(upcast(agg.pose), layout.lengths)  # raw, per iteration
            readout = upcast(agg.levels[-1][:, :, self.aggregator.patch_start_idx - 1])
            scale = self._metric_scale(readout, pool_scale)
            depth = depth[..., 0] * scale[:, :, None, None]
            window = torch.cat((window_list[-1][..., :3] * scale[:, :, None, None], window_list[-1][..., 3:]), -1)
            pose_enc = self._absolute_poses(window, layout, state, joint_window)
            extrinsic, intrinsic = pose_encoding_to_extri_intri(pose_enc, (H, W))
            world_points = unproject_depth(depth, extrinsic, intrinsic)
        if state is not None:
            state.num_frames += S
        return {
            "pose_enc": pose_enc, "pose_enc_list": [pose_enc], "extrinsic": extrinsic, "intrinsic": intrinsic,
            "depth": depth, "depth_conf": depth_conf, "world_points": world_points, "world_points_conf": depth_conf,
            "metric_scale": scale, "window_pose_enc": window, "window_pose_enc_list": window_list,
            "window_valid": layout.valid,
        }  # fmt: skip

    def _window_poses(self, tokens: Tensor, lengths: Tensor) -> list[Tensor]:
        """tokens [B, S, Wmax, 2C] -> per iteration [B, S, Wmax, 9]; each row attends over
        its active slots only (rows of equal length are batched)."""
        B, S, Wm, _ = tokens.shape
        outs = [tokens.new_zeros(B, S, Wm, 9) for _ in range(self.camera_head.num_iterations)]
        for L in lengths.unique().tolist():
            rows = (lengths == L).nonzero().squeeze(1)
            x = tokens[:, rows, :L].reshape(B * len(rows), L, 1, -1)
            for out, enc in zip(outs, self.camera_head(x, causal=False)):
                out[:, rows, :L] = enc.reshape(B, len(rows), L, 9)
        return outs

    def _metric_scale(self, readout: Tensor, pool: bool) -> Tensor:
        """readout features [B, S, 2C] -> positive scale [B, S] (1 without a readout token)."""
        B, S, _ = readout.shape
        if self.metric_head is None:
            return readout.new_ones(B, S)
        if pool:  # one scale for the whole call (HorizonStream chunks)
            return self.metric_head(readout.mean(dim=1)).exp().expand(B, S)
        return self.metric_head(readout)[..., 0].exp()

    def _absolute_poses(self, window: Tensor, layout, state: LinearStreamState | None, joint: bool) -> Tensor:
        """Window poses [B, S, Wmax, 9] -> absolute pose encodings [B, S, 9] (causal FoV)."""
        S = window.shape[1]
        history = state.poses if state is not None else PoseHistory(self.config.window_frames)
        w2c = absolute_from_windows(window, layout.lengths.tolist(), history, joint)
        fov = window[:, torch.arange(S, device=window.device), layout.lengths - 1, 7:]  # own slot's estimate
        return pose_to_encoding(w2c, fov)
