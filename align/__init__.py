"""Geometry: rotations, SE(3)/Sim(3), pose encodings, alignment (installed as `recon.align`)."""

from .pose_encoding import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri
from .rotation import mat_to_quat, quat_to_mat
from .se3 import camera_centers, invert_extrinsic, to_homogeneous, unproject_depth
from .umeyama import Sim3, umeyama

__all__ = [
    "Sim3",
    "camera_centers",
    "extri_intri_to_pose_encoding",
    "invert_extrinsic",
    "mat_to_quat",
    "pose_encoding_to_extri_intri",
    "quat_to_mat",
    "to_homogeneous",
    "umeyama",
    "unproject_depth",
]
