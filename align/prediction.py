"""A set of per-frame geometry predictions in float64 numpy (one window, or one map summary).

`WindowPrediction` is what the window aligners (`recon.align.sim3`, `recon.align.layerwise`,
`recon.align.windows`) work on. Build it from a model output dict with `from_model_output`
or from arrays; conventions are the project's (extrinsic camera-from-world OpenCV [3, 4],
intrinsic in pixels, world = first camera of whatever produced it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .umeyama import Sim3


def _array(value, name: str, shape_tail: tuple[int, ...], frames: int | None) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.ndim != 1 + len(shape_tail) or any(n is not None and a.shape[1 + i] != n for i, n in enumerate(shape_tail)):
        want = ", ".join(["S", *("?" if n is None else str(n) for n in shape_tail)])
        raise ValueError(f"{name} must have shape [{want}], got {a.shape}")
    if frames is not None and a.shape[0] != frames:
        raise ValueError(f"{name} holds {a.shape[0]} frames, expected {frames}")
    return a


@dataclass
class WindowPrediction:
    """Geometry of S frames (float64).

    extrinsic [S, 3, 4], intrinsic [S, 3, 3], depth [S, H, W], depth_conf [S, H, W],
    world_points [S, H, W, 3] or None, points_conf [S, H, W] or None.
    """

    extrinsic: np.ndarray
    intrinsic: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    world_points: np.ndarray | None = None
    points_conf: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.extrinsic = _array(self.extrinsic, "extrinsic", (3, 4), None)
        S = len(self.extrinsic)
        self.intrinsic = _array(self.intrinsic, "intrinsic", (3, 3), S)
        self.depth = _array(self.depth, "depth", (None, None), S)
        hw = self.depth.shape[1:]
        self.depth_conf = _array(self.depth_conf, "depth_conf", hw, S)
        if self.world_points is not None:
            self.world_points = _array(self.world_points, "world_points", (*hw, 3), S)
        if self.points_conf is not None:
            self.points_conf = _array(self.points_conf, "points_conf", hw, S)

    def __len__(self) -> int:
        return len(self.extrinsic)

    @property
    def hw(self) -> tuple[int, int]:
        return self.depth.shape[1], self.depth.shape[2]

    @classmethod
    def from_model_output(cls, out: dict, batch: int = 0) -> WindowPrediction:
        """GeometryTransformer output dict ([B, S, ...] tensors) -> the prediction of batch item `batch`."""

        def get(name: str) -> np.ndarray | None:
            if name not in out:
                return None
            # Half the transfer of a device-side upcast; float64 on the host.
            return out[name][batch].detach().float().cpu().numpy().astype(np.float64)

        return cls(get("extrinsic"), get("intrinsic"), get("depth"), get("depth_conf"),
                   get("world_points"), get("world_points_conf"))  # fmt: skip

    def select(self, frames) -> WindowPrediction:
        """The frames at `frames` (slice, int list or boolean mask), as a new prediction."""

        def take(a):
            return None if a is None else a[frames]

        return WindowPrediction(take(self.extrinsic), take(self.intrinsic), take(self.depth),
                                take(self.depth_conf), take(self.world_points), take(self.points_conf))  # fmt: skip

    @staticmethod
    def concat(parts: list[WindowPrediction]) -> WindowPrediction:
        """Frames of several predictions in order (points kept only if every part has them)."""
        if not parts:
            raise ValueError("concat needs at least one prediction")

        def cat(name: str):
            arrays = [getattr(p, name) for p in parts]
            return None if any(a is None for a in arrays) else np.concatenate(arrays)

        return WindowPrediction(*(cat(n) for n in ("extrinsic", "intrinsic", "depth", "depth_conf",
                                                    "world_points", "points_conf")))  # fmt: skip

    def without_points(self) -> WindowPrediction:
        return WindowPrediction(self.extrinsic, self.intrinsic, self.depth, self.depth_conf)

    def copy(self) -> WindowPrediction:
        """A deep copy (so a kept subset does not pin the arrays it was sliced from)."""
        arrays = (self.extrinsic, self.intrinsic, self.depth, self.depth_conf, self.world_points, self.points_conf)
        return WindowPrediction(*(None if a is None else a.copy() for a in arrays))

    def camera_centers(self) -> np.ndarray:
        """[S, 3] camera centres in the world frame."""
        R, t = self.extrinsic[:, :, :3], self.extrinsic[:, :, 3]
        return -np.einsum("sji,sj->si", R, t)

    def transformed(self, sim3: Sim3) -> WindowPrediction:
        """The same frames in the world frame `x' = s R x + t`: cameras moved, depth scaled by s."""
        return WindowPrediction(
            extrinsic=transform_extrinsic(self.extrinsic, sim3),
            intrinsic=self.intrinsic,
            depth=self.depth * sim3.s,
            depth_conf=self.depth_conf,
            world_points=None if self.world_points is None else sim3.apply(self.world_points),
            points_conf=self.points_conf,
        )

    def nbytes(self) -> int:
        arrays = (self.extrinsic, self.intrinsic, self.depth, self.depth_conf, self.world_points, self.points_conf)
        return sum(a.nbytes for a in arrays if a is not None)


def transform_extrinsic(extrinsic: np.ndarray, sim3: Sim3) -> np.ndarray:
    """Camera-from-world [..., 3, 4] after the world moves by `x' = s R x + t` -> [..., 3, 4].

    The camera frame is rescaled with the world (camera-space coordinates multiply by s), so
    the result stays a rigid [R' | t'] with R' = Rc R^T and t' = s tc - R' t.
    """
    Rc, tc = extrinsic[..., :3], extrinsic[..., 3]
    R_new = Rc @ sim3.R.T
    t_new = sim3.s * tc - R_new @ sim3.t
    return np.concatenate((R_new, t_new[..., None]), axis=-1)


def camera_points(depth: np.ndarray, intrinsic: np.ndarray) -> np.ndarray:
    """Depth [..., H, W] with intrinsic [..., 3, 3] -> camera-space points [..., H, W, 3].

    Pixel (i, j) is sampled at its centre (j + 0.5, i + 0.5), as in `unproject_depth`.
    """
    H, W = depth.shape[-2:]
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    fx, fy = intrinsic[..., 0, 0, None, None], intrinsic[..., 1, 1, None, None]
    cx, cy = intrinsic[..., 0, 2, None, None], intrinsic[..., 1, 2, None, None]
    return np.stack(((u - cx) / fx * depth, (v - cy) / fy * depth, depth), axis=-1)


def world_points_from_depth(depth: np.ndarray, extrinsic: np.ndarray, intrinsic: np.ndarray) -> np.ndarray:
    """Depth [..., H, W] with camera-from-world extrinsic [..., 3, 4] and intrinsic [..., 3, 3]
    -> world points [..., H, W, 3] (numpy twin of `unproject_depth`)."""
    cam = camera_points(depth, intrinsic)
    R, t = extrinsic[..., None, None, :3, :3], extrinsic[..., None, None, :3, 3]
    return np.einsum("...ji,...j->...i", R, cam - t)  # R^T (x_cam - t)


def scale_along_rays(world_points: np.ndarray, extrinsic: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Move world points [S, H, W, 3] along their camera rays by per-pixel factors [S, H, W].

    `X' = C + scale (X - C)`, C the camera centre of each frame (extrinsic [S, 3, 4]): the
    world-space form of multiplying camera-space points (and depth) by `scale`.
    """
    R, t = extrinsic[:, :, :3], extrinsic[:, :, 3]
    centers = -np.einsum("sji,sj->si", R, t)[:, None, None, :]
    return centers + scale[..., None] * (world_points - centers)
