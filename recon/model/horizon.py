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

forward = graph_finish(graph_core(images, state), state), split for CUDA graphs:
  graph_core    aggregator, depth head, window poses, metric scale: device work only. With
                a steady state (`state.steady()`) and one frame it has no host
                synchronisation, updates the state in place and reads the frame index from
                the state's device clock: capture it once, replay it for later frames, and
                call `state.count_replayed_step()` after each replay.
  graph_finish  online pose fusion (host-side SO(3) median), cameras and unprojection; runs
                eagerly after every core step (replayed or not), before the next one. It
                only reads the core outputs (they may be a graph's static buffers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recon.align import pose_encoding_to_extri_intri, unproject_depth
from recon.attention import LinearStreamState, PoseHistory
from recon.config import ModelConfig
from recon.device import fp32_region, upcast

from .camera_head import CameraHead
from .dpt_head import DPTHead
from .horizon_aggregator import HorizonAggregator
from .horizon_layout import WindowLayout
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
        self.depth_head.frames_chunk_size = 1  # HorizonStream's inference setting
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
        H, W = images.shape[-2:]
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
        core = self.graph_core(images, state, joint_window=joint_window, time_start=time_start, pool_scale=pool_scale)
        return self.graph_finish(core, state)

    def graph_core(
        self,
        images: Tensor,
        state: LinearStreamState | None = None,
        *,
        joint_window: bool = False,
        time_start: int | None = None,
        pool_scale: bool = False,
    ) -> dict:
        """images [B, S, 3, H, W] -> device outputs: depth / depth_conf [B, S, H, W] (metric),
        metric_scale [B, S], window_pose_enc [B, S, Wmax, 9] (metric), window_pose_enc_list,
        window_valid [S, Wmax], fov_slot [S] (each frame's own slot) and `step` (host facts
        for graph_finish, the same for every steady step). Advances the state's frame count
        (host) and clock (device)."""
        B, S, _, H, W = images.shape
        needed = set(self.config.dpt_levels) | {self.config.depth - 1}
        agg = self.aggregator(images, state, keep_levels=needed, time_start=time_start, joint=joint_window)
        layout = agg.layout
        depth, depth_conf = self.depth_head(agg.levels, images, agg.patch_start_idx)
        with fp32_region(images.device.type):
            window_list = self._window_poses(upcast(agg.pose), layout)  # raw, per iteration
            readout = upcast(agg.levels[-1][:, :, self.aggregator.patch_start_idx - 1])
            scale = self._metric_scale(readout, pool_scale)
            depth = depth[..., 0] * scale[:, :, None, None]
            window = torch.cat((window_list[-1][..., :3] * scale[:, :, None, None], window_list[-1][..., 3:]), -1)
        if state is not None:
            state.clock.advance(S)
            state.num_frames += S
        step = StepInfo(layout.row_lengths, joint_window, (H, W))
        return {
            "depth": depth, "depth_conf": depth_conf, "metric_scale": scale, "window_pose_enc": window,
            "window_pose_enc_list": window_list, "window_valid": layout.valid, "fov_slot": layout.lengths - 1,
            "step": step,
        }  # fmt: skip

    def graph_finish(self, core: dict, state: LinearStreamState | None = None) -> dict[str, Tensor | list[Tensor]]:
        """graph_core's outputs -> the forward's output dict (fuses the window poses into
        absolute ones, extending `state.poses`)."""
        step: StepInfo = core["step"]
        window, depth = core["window_pose_enc"], core["depth"]
        with fp32_region(depth.device.type):
            pose_enc = self._absolute_poses(window, core["fov_slot"], step, state)
            extrinsic, intrinsic = pose_encoding_to_extri_intri(pose_enc, step.image_hw)
            world_points = unproject_depth(depth, extrinsic, intrinsic)
        depth_conf = core["depth_conf"]
        return {
            "pose_enc": pose_enc, "pose_enc_list": [pose_enc], "extrinsic": extrinsic, "intrinsic": intrinsic,
            "depth": depth, "depth_conf": depth_conf, "world_points": world_points, "world_points_conf": depth_conf,
            "metric_scale": core["metric_scale"], "window_pose_enc": window,
            "window_pose_enc_list": core["window_pose_enc_list"], "window_valid": core["window_valid"],
        }  # fmt: skip

    def _window_poses(self, tokens: Tensor, layout: WindowLayout) -> list[Tensor]:
        """tokens [B, S, Wmax, 2C] -> per iteration [B, S, Wmax, 9]; each row attends over
        its active slots only (runs of rows of equal length are batched)."""
        B, S, Wm, _ = tokens.shape
        if layout.uniform:  # every slot active: one call, no scatter
            x = tokens.reshape(B * S, Wm, 1, -1)
            return [enc.reshape(B, S, Wm, 9) for enc in self.camera_head(x, causal=False)]
        outs = [tokens.new_zeros(B, S, Wm, 9) for _ in range(self.camera_head.num_iterations)]
        for a, b, L in layout.runs():
            x = tokens[:, a:b, :L].reshape(B * (b - a), L, 1, -1)
            for out, enc in zip(outs, self.camera_head(x, causal=False)):
                out[:, a:b, :L] = enc.reshape(B, b - a, L, 9)
        return outs

    def _metric_scale(self, readout: Tensor, pool: bool) -> Tensor:
        """readout features [B, S, 2C] -> positive scale [B, S] (1 without a readout token)."""
        B, S, _ = readout.shape
        if self.metric_head is None:
            return readout.new_ones(B, S)
        if pool:  # one scale for the whole call (HorizonStream chunks)
            return self.metric_head(readout.mean(dim=1)).exp().expand(B, S)
        return self.metric_head(readout)[..., 0].exp()

    def _absolute_poses(self, window: Tensor, fov_slot: Tensor, step: "StepInfo", state) -> Tensor:
        """Window poses [B, S, Wmax, 9] -> absolute pose encodings [B, S, 9] (causal FoV:
        each frame's own slot `fov_slot` [S])."""
        S = window.shape[1]
        history = state.poses if state is not None else PoseHistory(self.config.window_frames)
        w2c = absolute_from_windows(window, list(step.row_lengths), history, step.joint)
        fov = window[:, torch.arange(S, device=window.device), fov_slot, 7:]
        return pose_to_encoding(w2c, fov)


@dataclass(frozen=True)
class StepInfo:
    """Host facts of a core step that graph_finish needs (constant once a stream is steady)."""

    row_lengths: tuple[int, ...]  # active window slots per frame
    joint: bool
    image_hw: tuple[int, int]
