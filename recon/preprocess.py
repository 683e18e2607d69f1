"""Image preprocessing for VGGT-family models (patch size 14).

Coordinate convention: continuous, corner-based pixel coordinates. An image of
width W and height H spans [0, W] x [0, H], and the centre of pixel (row i,
col j) is (j + 0.5, i + 0.5). cv2.resize samples with exactly this convention,
so resize followed by crop or pad is the affine map ``u_model = sx * u + ox``,
``v_model = sy * v + oy`` with no half-pixel terms. Intrinsics are taken in the
same convention (COLMAP's): a centred principal point is (W / 2, H / 2). For
OpenCV-style intrinsics (top-left pixel centre at 0) add 0.5 to cx and cy first.

Colour: everything here is RGB. BGR exists only inside `read_image` and behind
the `bgr` flag of `preprocess_frame`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

# Per-frame resizes are small; OpenCV's own thread pool would fight torch's OpenMP
# threads for the same cores and slow a CPU stream down by an order of magnitude.
cv2.setNumThreads(1)

PATCH_SIZE = 14
PAD_VALUE = 1.0  # white, as in VGGT's "pad" mode

Mode = Literal["crop", "pad"]
Interpolation = Literal["nearest", "linear", "cubic", "area"]
ArrayOrTensor = np.ndarray | torch.Tensor

_CV2_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST_EXACT,  # plain INTER_NEAREST is off by half a pixel
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


def _affine(points: ArrayOrTensor, scale: tuple[float, float], offset: tuple[float, float]) -> ArrayOrTensor:
    """Return ``points * scale + offset`` for [..., 2] numpy arrays or tensors."""
    if isinstance(points, torch.Tensor):
        if points.shape[-1] != 2:
            raise ValueError(f"expected [..., 2] points, got shape {tuple(points.shape)}")
        points = points if points.is_floating_point() else points.double()
        return points * points.new_tensor(scale) + points.new_tensor(offset)
    points = np.asarray(points)
    if points.shape[-1:] != (2,):
        raise ValueError(f"expected [..., 2] points, got shape {points.shape}")
    if not np.issubdtype(points.dtype, np.floating):
        points = points.astype(np.float64)
    return points * np.asarray(scale, points.dtype) + np.asarray(offset, points.dtype)


def _affine_intrinsics(K: ArrayOrTensor, scale: tuple[float, float], offset: tuple[float, float]) -> ArrayOrTensor:
    """Return ``[[sx, 0, ox], [0, sy, oy], [0, 0, 1]] @ K`` keeping K's array type and (floating) dtype.

    Written row by row rather than as a matmul so that an infinite focal length
    stays infinite instead of turning the whole row into NaN through 0 * inf.
    """
    if isinstance(K, torch.Tensor):
        K = K if K.is_floating_point() else K.double()
    else:
        K = np.asarray(K)
        K = K if np.issubdtype(K.dtype, np.floating) else K.astype(np.float64)
    if tuple(K.shape[-2:]) != (3, 3):
        raise ValueError(f"expected [..., 3, 3] intrinsics, got shape {tuple(K.shape)}")
    out = K.clone() if isinstance(K, torch.Tensor) else K.copy()
    (sx, sy), (ox, oy) = scale, offset
    out[..., 0, :] = sx * K[..., 0, :] + ox * K[..., 2, :]
    out[..., 1, :] = sy * K[..., 1, :] + oy * K[..., 2, :]
    return out


def _paste(src: np.ndarray, dst: np.ndarray, oy: int, ox: int) -> np.ndarray:
    """Write src into dst so that src[r, c] lands on dst[r + oy, c + ox]; the rest is dropped."""
    y0, x0 = max(0, oy), max(0, ox)
    y1 = min(dst.shape[0], src.shape[0] + oy)
    x1 = min(dst.shape[1], src.shape[1] + ox)
    if y1 > y0 and x1 > x0:
        dst[y0:y1, x0:x1] = src[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    return dst


@dataclass(frozen=True)
class ImageTransform:
    """Affine map from original-image to model-input pixel coordinates.

    ``u_model = sx * u_orig + ox`` and ``v_model = sy * v_orig + oy`` in the
    corner-based convention of this module. The offset is a whole number of
    pixels: negative for a crop, positive for padding.
    """

    original_hw: tuple[int, int]
    model_hw: tuple[int, int]
    scale: tuple[float, float]  # (sx, sy)
    offset: tuple[float, float]  # (ox, oy)

    @property
    def resized_hw(self) -> tuple[int, int]:
        """Size of the resized image before it was cropped or padded."""
        (h, w), (sx, sy) = self.original_hw, self.scale
        return round(sy * h), round(sx * w)

    def _inverse(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(scale, offset) of the model -> original map."""
        (sx, sy), (ox, oy) = self.scale, self.offset
        return (1 / sx, 1 / sy), (-ox / sx, -oy / sy)

    def to_model(self, uv: ArrayOrTensor) -> ArrayOrTensor:
        """Map [N, 2] (u, v) points from the original image to the model input."""
        return _affine(uv, self.scale, self.offset)

    def to_original(self, uv: ArrayOrTensor) -> ArrayOrTensor:
        """Map [N, 2] (u, v) points from the model input to the original image."""
        return _affine(uv, *self._inverse())

    def intrinsics_to_model(self, K_orig: ArrayOrTensor) -> ArrayOrTensor:
        """Intrinsics of the original image -> intrinsics of the model input."""
        return _affine_intrinsics(K_orig, self.scale, self.offset)

    def intrinsics_to_original(self, K_model: ArrayOrTensor) -> ArrayOrTensor:
        """Intrinsics predicted for the model input -> intrinsics of the original image."""
        return _affine_intrinsics(K_model, *self._inverse())

    def resize_map_to_original(
        self,
        values: ArrayOrTensor,
        interpolation: Interpolation = "nearest",
        fill: float | None = None,
    ) -> ArrayOrTensor:
        """Bring a dense [H, W] or [H, W, C] model-resolution map to the original resolution.

        Padding is removed, and the parts of the original image that were cropped
        away get `fill`: NaN for floating-point maps, 0 for integer and bool maps
        unless given. NaN spreads to the neighbours that "linear", "cubic" and
        "area" blend it into. "nearest" is the default because blending depth
        across object edges invents points that lie between surfaces.
        """
        is_tensor = isinstance(values, torch.Tensor)
        array = values.detach().cpu().numpy() if is_tensor else np.asarray(values)
        if array.ndim not in (2, 3) or tuple(array.shape[:2]) != tuple(self.model_hw):
            raise ValueError(f"expected a map of shape {self.model_hw} (+ channels), got {array.shape}")
        if interpolation not in _CV2_INTERPOLATION:
            raise ValueError(f"unknown interpolation {interpolation!r}")

        dtype = array.dtype
        if dtype == np.bool_:
            array = array.astype(np.uint8)
        elif dtype == np.float16:
            array = array.astype(np.float32)
        if fill is None:
            fill = np.nan if np.issubdtype(array.dtype, np.floating) else 0

        canvas = np.full(self.resized_hw + array.shape[2:], fill, dtype=array.dtype)
        ox, oy = (int(o) for o in self.offset)
        _paste(array, canvas, -oy, -ox)
        h, w = self.original_hw
        out = cv2.resize(canvas, (w, h), interpolation=_CV2_INTERPOLATION[interpolation])
        out = out.reshape((h, w) + array.shape[2:]).astype(dtype, copy=False)
        return torch.from_numpy(out).to(values.device) if is_tensor else out


@dataclass(frozen=True)
class PreprocessedFrame:
    """Model input (float32 [3, H, W], RGB in [0, 1]) and its map to the original image."""

    image: torch.Tensor
    transform: ImageTransform
    pinned: torch.Tensor | None = None  # a page-locked copy of `image`, for an async upload to a GPU


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB, RGBA or grayscale, keeping its bit depth.

    This is the one place where OpenCV's BGR(A) order is turned into RGB(A).
    EXIF orientation is not applied (IMREAD_UNCHANGED), so pixels keep the
    stored layout that a calibration of the camera refers to.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"could not read image (unsupported or corrupt): {path}")
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def _to_float_rgb(image: ArrayOrTensor, bgr: bool) -> np.ndarray:
    """Validate an HxW[xC] image and return it as float32 HxWx3 RGB.

    The alpha channel of RGBA input is dropped, not composited.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array or torch tensor, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {image.shape}")
    h, w, c = image.shape
    if h == 0 or w == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    if c not in (1, 3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels, got {c} (shape {image.shape})")

    if image.dtype == np.uint8:
        out = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16:
        out = image.astype(np.float32) / 65535.0
    elif np.issubdtype(image.dtype, np.floating):
        out = image.astype(np.float32)
    else:
        raise ValueError(f"unsupported dtype {image.dtype}; expected uint8, uint16 or float in [0, 1]")

    if c == 1:
        return np.repeat(out, 3, axis=2)
    out = out[:, :, 2::-1] if bgr else out[:, :, :3]
    return np.ascontiguousarray(out)


def _round_to_patch(x: float) -> int:
    return max(PATCH_SIZE, round(x / PATCH_SIZE) * PATCH_SIZE)


def _plan(
    h: int, w: int, mode: Mode, target_width: int, size: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return (resized_hw, model_hw) for an h x w image."""
    if size is not None:
        mh, mw = size
        # "crop" scales to cover the requested size, "pad" scales to fit inside it.
        pick = max if mode == "crop" else min
        s = pick(mh / h, mw / w)
        rh, rw = pick(mh, max(1, round(h * s))), pick(mw, max(1, round(w * s)))
        return (rh, rw), (mh, mw)
    if mode == "crop":
        rh = _round_to_patch(h * target_width / w)
        return (rh, target_width), (min(rh, target_width), target_width)
    if w >= h:
        resized = (_round_to_patch(h * target_width / w), target_width)
    else:
        resized = (target_width, _round_to_patch(w * target_width / h))
    return resized, (target_width, target_width)


def _centre_offset(resized: int, model: int) -> int:
    """Offset of the resized image inside the model image: pad before, or minus crop before."""
    return (model - resized) // 2 if model >= resized else -((resized - model) // 2)


def _resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    (rh, rw), (h, w) = hw, image.shape[:2]
    if (rh, rw) == (h, w):
        return image
    if rh <= h and rw <= w:
        return cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
    # Bicubic overshoots at edges; clip back into the valid intensity range.
    return np.clip(cv2.resize(image, (rw, rh), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def preprocess_frame(
    image: ArrayOrTensor,
    *,
    mode: Mode = "crop",
    target_width: int = 518,
    size: tuple[int, int] | None = None,
    bgr: bool = False,
) -> PreprocessedFrame:
    """Turn an image into a model input whose sides are multiples of 14.

    image: HxW, HxWx1, HxWx3 or HxWx4 (alpha dropped); uint8, uint16 or float in
        [0, 1]; numpy array or torch tensor in the same HWC layout.
    mode: "crop" (VGGT default): width -> target_width, height scaled to keep the
        aspect ratio and rounded to a multiple of 14, then centre-cropped to
        target_width if taller. "pad": the longer side -> target_width, the other
        scaled and rounded to a multiple of 14, then padded with white to a
        target_width square (extra odd pixel at the bottom/right).
    size: explicit (H, W), both multiples of 14. With "crop" the image is scaled
        to cover it and centre-cropped, with "pad" scaled to fit and padded white.
    bgr: the 3- or 4-channel input is in OpenCV's BGR(A) order.
    """
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    if size is not None:
        if len(size) != 2 or any(int(s) != s or s <= 0 or s % PATCH_SIZE for s in size):
            raise ValueError(f"size must be (H, W), positive multiples of {PATCH_SIZE}, got {size}")
        size = (int(size[0]), int(size[1]))
    elif target_width <= 0 or target_width % PATCH_SIZE:
        raise ValueError(f"target_width must be a positive multiple of {PATCH_SIZE}, got {target_width}")

    rgb = _to_float_rgb(image, bgr)
    h, w = rgb.shape[:2]
    (rh, rw), (mh, mw) = _plan(h, w, mode, target_width, size)
    ox, oy = _centre_offset(rw, mw), _centre_offset(rh, mh)

    canvas = np.full((mh, mw, 3), PAD_VALUE, dtype=np.float32)
    _paste(_resize(rgb, (rh, rw)), canvas, oy, ox)
    np.clip(canvas, 0.0, 1.0, out=canvas)

    transform = ImageTransform(
        original_hw=(h, w),
        model_hw=(mh, mw),
        scale=(rw / w, rh / h),
        offset=(float(ox), float(oy)),
    )
    tensor = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))
    return PreprocessedFrame(image=tensor, transform=transform)
