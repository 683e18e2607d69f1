"""Geometric refinement of the model's cameras: features, PnP, bundle adjustment with the
model's depth as a prior (see recon.refine.refiner)."""

from .bundle import BundleProblem, bundle_adjust
from .calibrate import FocalEstimator, essential_cost
from .depth_sweep import SweepConfig, sweep_depth
from .features import Keypoints, SiftFeatures
from .refiner import PoseRefiner, RefineConfig

__all__ = [
    "BundleProblem", "FocalEstimator", "Keypoints", "PoseRefiner", "RefineConfig", "SiftFeatures", "SweepConfig",
    "bundle_adjust", "essential_cost", "sweep_depth",
]
