"""Geometry: rotations, SE(3)/Sim(3), pose encodings, alignment (installed as `recon.align`)."""

from .layerwise import LayerAlignment, LayerConfig, apply_depth_scale, layerwise_corrections, link_segments
from .pose_encoding import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri
from .prediction import WindowPrediction, camera_points, scale_along_rays, transform_extrinsic
from .rotation import hat, mat_to_quat, quat_to_mat, rotation_angle_deg
from .se3 import camera_centers, invert_extrinsic, to_homogeneous, unproject_depth
from .segment import felzenszwalb, segment_depth_layers
from .sim3 import Sim3Fit, estimate_window_sim3, robust_rotation_mean, robust_scale
from .umeyama import Sim3, umeyama
from .windows import AlignedWindow, WindowAligner, WindowConfig, align_windows, window_ranges

__all__ = [
    "AlignedWindow",
    "LayerAlignment",
    "LayerConfig",
    "Sim3",
    "Sim3Fit",
    "WindowAligner",
    "WindowConfig",
    "WindowPrediction",
    "align_windows",
    "apply_depth_scale",
    "camera_centers",
    "camera_points",
    "estimate_window_sim3",
    "extri_intri_to_pose_encoding",
    "felzenszwalb",
    "hat",
    "invert_extrinsic",
    "layerwise_corrections",
    "link_segments",
    "mat_to_quat",
    "pose_encoding_to_extri_intri",
    "quat_to_mat",
    "rotation_angle_deg",
    "robust_rotation_mean",
    "robust_scale",
    "scale_along_rays",
    "segment_depth_layers",
    "to_homogeneous",
    "transform_extrinsic",
    "umeyama",
    "unproject_depth",
    "window_ranges",
]
