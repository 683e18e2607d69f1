"""The causal geometry transformer (VGGT family): images in, cameras and geometry out.

forward(images [B, S, 3, H, W] in [0, 1], state=None, causal=True) returns a dict:
  pose_enc           [B, S, 9]      last camera-head iteration (see recon.align.pose_encoding)
  pose_enc_list      list of [B, S, 9], one per refinement iteration (for training)
  extrinsic          [B, S, 3, 4]   camera-from-world, OpenCV axes, world = first camera
  intrinsic          [B, S, 3, 3]   pixels of the model input, principal point at centre
  depth              [B, S, H, W]   z-depth along the optical axis
  depth_conf         [B, S, H, W]   > 1, higher is more confident
  world_points       [B, S, H, W, 3] point map in the world frame (from the point head, or
                     depth unprojected with the camera when `world_points_from == "depth"`)
  world_points_conf  [B, S, H, W]   (depth_conf in the latter case)
  track, track_vis, track_conf  (only with query_points and a track head)

Modes: causal=False is the offline bidirectional VGGT forward; causal=True is the
block-causal batch forward; passing a `StreamState` continues a stream (frames are
appended after what the state has seen), and equals the causal batch forward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recon.align import pose_encoding_to_extri_intri, unproject_depth
from recon.attention import FullKVCache, KVCache, StreamState
from recon.config import ModelConfig
from recon.device import fp32_region, upcast

from .aggregator import Aggregator
from .camera_head import CameraHead
from .dpt_head import DPTHead


class GeometryTransformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.aggregator = Aggregator(
            c.img_size, c.patch_size, c.embed_dim, c.depth, c.num_heads, c.mlp_ratio, c.num_register_tokens,
            c.backbone_depth, c.backbone_heads, c.rope_freq,
        )  # fmt: skip
        dim = 2 * c.embed_dim
        self.camera_head = CameraHead(
            dim, c.camera_trunk_depth, c.camera_heads, c.mlp_ratio,
            num_iterations=c.camera_iterations, cache_layout=c.camera_cache_layout,
        )  # fmt: skip
        dpt = dict(patch_size=c.patch_size, features=c.dpt_features, out_channels=c.dpt_out_channels,
                   intermediate_layer_idx=c.dpt_levels)  # fmt: skip
        self.point_head = DPTHead(dim, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
        self.depth_head = DPTHead(dim, output_dim=2, activation="exp", conf_activation="expp1", **dpt)
        self.track_head = None
        if c.track_head:
            from .track_head import TrackHead

            self.track_head = TrackHead(
                dim, patch_size=c.patch_size, features=c.track_features, intermediate_layer_idx=c.dpt_levels
            )
        # "head": the point-map head's output; "depth": depth unprojected with the predicted
        # camera (set for inference by recon.device.prepare_model).
        self.world_points_from = "head"

    def init_state(self, temporal: KVCache | None = None, camera: KVCache | None = None) -> StreamState:
        """A fresh stream. Defaults keep every past frame (the `full` memory strategy)."""
        return StreamState(
            temporal=temporal if temporal is not None else FullKVCache(self.config.depth),
            camera=camera if camera is not None else FullKVCache(self.camera_head.num_cache_slots),
        )

    def forward(
        self,
        images: Tensor,
        state: StreamState | None = None,
        causal: bool = True,
        query_points: Tensor | None = None,
    ) -> dict[str, Tensor | list[Tensor]]:
        if images.ndim == 4:
            images = images.unsqueeze(0)
        B, S, _, H, W = images.shape
        p = self.config.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
        needed = set(self.config.dpt_levels) | {self.config.depth - 1}
        levels, patch_start = self.aggregator(images, state=state, causal=causal, keep_levels=needed)

        # The camera head accumulates pose updates over its iterations: always fp32. The DPT
        # heads pick their own precision (see recon.device.prepare_model).
        with fp32_region(images.device.type):
            pose_enc_list = self.camera_head(upcast(levels[-1]), state=state, causal=causal)
            pose_enc = pose_enc_list[-1]
            extrinsic, intrinsic = pose_encoding_to_extri_intri(pose_enc, (H, W))
        depth, depth_conf = self.depth_head(levels, images, patch_start)
        if self.world_points_from == "depth":
            # Depth unprojected with the predicted camera: VGGT reports it more accurate
            # than the point head, and it skips a whole DPT head.
            points, points_conf = unproject_depth(depth[..., 0], extrinsic, intrinsic), depth_conf
        else:
            points, points_conf = self.point_head(levels, images, patch_start)
        out: dict[str, Tensor | list[Tensor]] = {
            "pose_enc": pose_enc,
            "pose_enc_list": pose_enc_list,
            "extrinsic": extrinsic,
            "intrinsic": intrinsic,
            "depth": depth[..., 0],
            "depth_conf": depth_conf,
            "world_points": points,
            "world_points_conf": points_conf,
        }
        if query_points is not None:
            if self.track_head is None:
                raise ValueError(f"model {self.config.name!r} has no track head")
            with fp32_region(images.device.type):
                levels32 = [upcast(lv) for lv in levels]
                tracks, vis, conf = self.track_head(levels32, images, patch_start, query_points=query_points)
            out.update(track=tracks[-1], track_vis=vis, track_conf=conf)
        if state is not None:
            state.num_frames += S
        return out

