"""Keypoints and descriptor matching for the geometric refinement (OpenCV SIFT).

Keypoint positions follow the project's pixel convention (ARCHITECTURE.md): continuous
coordinates with (0, 0) at the top-left corner of the top-left pixel. OpenCV puts pixel
centres at integer coordinates, so its positions are shifted by +0.5 here, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Keypoints:
    xy: np.ndarray  # [N, 2] float64 pixels (project convention)
    descriptors: np.ndarray  # [N, 128] float32

    def __len__(self) -> int:
        return len(self.xy)


def _gray_u8(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] float RGB in [0, 1] (a FramePrediction's image) or uint8 -> [H, W] uint8."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


class SiftFeatures:
    """SIFT keypoints + descriptors, matched by Lowe's ratio test and a mutual check."""

    def __init__(self, max_features: int = 1500, ratio: float = 0.8) -> None:
        self.sift = cv2.SIFT_create(nfeatures=max_features)
        self.ratio = ratio
        self.matcher = cv2.BFMatcher(cv2.NORM_L2)

    def detect(self, image: np.ndarray) -> Keypoints:
        kps, desc = self.sift.detectAndCompute(_gray_u8(image), None)
        if not kps:
            return Keypoints(np.zeros((0, 2)), np.zeros((0, 128), np.float32))
        return Keypoints(np.array([k.pt for k in kps], np.float64) + 0.5, desc.astype(np.float32))

    def match(self, query: np.ndarray, train: np.ndarray) -> np.ndarray:
        """Descriptors [Nq, 128], [Nt, 128] -> [M, 2] index pairs (query row, train row):
        nearest neighbours that pass the ratio test and are each other's nearest."""
        if len(query) < 2 or len(train) < 2:
            return np.zeros((0, 2), np.int64)
        forward = self.matcher.knnMatch(query, train, k=2)
        pairs = np.array([(a.queryIdx, a.trainIdx) for a, b in forward if a.distance < self.ratio * b.distance],
                         np.int64).reshape(-1, 2)  # fmt: skip
        if len(pairs) == 0:
            return pairs
        backward = self.matcher.match(train[pairs[:, 1]], query)
        back = np.array([m.trainIdx for m in backward], np.int64)
        return pairs[back == pairs[:, 0]]
