import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from recon.preprocess import PATCH_SIZE, ImageTransform, preprocess_frame, read_image

# (shape, preprocess_frame kwargs): downscaling, upscaling, crop, pad and explicit sizes.
CASES = [
    ((480, 640), {}),
    ((1000, 37), {}),
    ((60, 90), {}),
    ((480, 640), {"mode": "pad"}),
    ((37, 1000), {"mode": "pad"}),
    ((90, 60), {"mode": "pad"}),
    ((480, 640), {"size": (280, 280)}),
    ((50, 70), {"size": (140, 336)}),
    ((480, 640), {"size": (280, 280), "mode": "pad"}),
]


def _random_rgb(h: int = 61, w: int = 83, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ramp(h: int, w: int) -> np.ndarray:
    """Float RGB image whose R and G channels hold the pixel-centre coordinates u / w and v / h."""
    u = (np.arange(w) + 0.5) / w
    v = (np.arange(h) + 0.5) / h
    out = np.zeros((h, w, 3), np.float32)
    out[..., 0], out[..., 1] = u[None, :], v[:, None]
    return out


def _write_png_rgb(path: Path, rgb: np.ndarray) -> None:
    """Encode an 8-bit RGB PNG without OpenCV, so the file's channel order is known for sure."""
    h, w, _ = rgb.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + row.tobytes() for row in rgb)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(png)


@pytest.mark.parametrize("shape, kwargs", CASES)
def test_input_formats_match_rgb_uint8(shape: tuple[int, int], kwargs: dict) -> None:
    rgb = _random_rgb(*shape)
    gray = rgb[..., 0]
    reference = preprocess_frame(rgb, **kwargs).image
    gray_reference = preprocess_frame(np.repeat(gray[..., None], 3, axis=2), **kwargs).image.numpy()
    alpha = np.random.default_rng(1).integers(0, 256, shape + (1,), dtype=np.uint8)

    same = {
        "bgr": preprocess_frame(rgb[..., ::-1], bgr=True, **kwargs).image,
        "rgba": preprocess_frame(np.concatenate([rgb, alpha], axis=2), **kwargs).image,
        "bgra": preprocess_frame(np.concatenate([rgb[..., ::-1], alpha], axis=2), bgr=True, **kwargs).image,
        "uint16": preprocess_frame(rgb.astype(np.uint16) * 257, **kwargs).image,
        "float32": preprocess_frame(rgb.astype(np.float32) / 255, **kwargs).image,
        "float64": preprocess_frame(rgb / 255.0, **kwargs).image,
        "tensor": preprocess_frame(torch.from_numpy(rgb), **kwargs).image,
    }
    for name, image in same.items():
        np.testing.assert_allclose(image.numpy(), reference.numpy(), atol=1e-5, rtol=0, err_msg=name)
    for image in (gray, gray[..., None], gray.astype(np.uint16) * 257):
        np.testing.assert_allclose(preprocess_frame(image, **kwargs).image.numpy(), gray_reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "shape, crop_hw, pad_hw",
    [
        ((480, 640), (392, 518), (392, 518)),
        ((1080, 1920), (294, 518), (294, 518)),
        ((37, 1000), (14, 518), (14, 518)),
        ((1000, 37), (518, 518), (518, 14)),
        ((1, 1), (518, 518), (518, 518)),
    ],
)
def test_output_sizes(shape: tuple[int, int], crop_hw: tuple[int, int], pad_hw: tuple[int, int]) -> None:
    image = np.full(shape + (3,), 128, np.uint8)
    crop = preprocess_frame(image)
    pad = preprocess_frame(image, mode="pad")
    explicit = preprocess_frame(image, size=(126, 350))

    assert tuple(crop.image.shape) == (3, *crop_hw)
    assert tuple(pad.image.shape) == (3, 518, 518)
    assert pad.transform.resized_hw == pad_hw
    assert tuple(explicit.image.shape) == (3, 126, 350)
    for frame in (crop, pad, explicit):
        assert frame.image.dtype == torch.float32
        assert frame.image.shape[1] % PATCH_SIZE == 0 and frame.image.shape[2] % PATCH_SIZE == 0
        assert 0.0 <= frame.image.min() and frame.image.max() <= 1.0
        assert frame.transform.model_hw == tuple(frame.image.shape[1:])


def test_pad_is_white_and_centred() -> None:
    frame = preprocess_frame(np.zeros((100, 200, 3), np.uint8), mode="pad", target_width=28)
    # 200 -> 28 wide, 100 -> 14 tall, placed at rows 7..20 of the 28 x 28 square.
    column = frame.image[0, :, 10]
    assert torch.all(column[:7] == 1.0) and torch.all(column[7:21] == 0.0) and torch.all(column[21:] == 1.0)
    assert frame.transform.offset == (0.0, 7.0)


def test_read_image_returns_rgb(tmp_path: Path) -> None:
    rgb = _random_rgb(20, 30)
    _write_png_rgb(tmp_path / "plain.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "plain.png"), rgb)

    cv2.imwrite(str(tmp_path / "cv2.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image(tmp_path / "cv2.png"), rgb)

    # Raw cv2.imread output is BGR: the bgr flag must undo exactly that one swap.
    from_bgr = preprocess_frame(cv2.imread(str(tmp_path / "plain.png")), bgr=True).image
    np.testing.assert_array_equal(from_bgr.numpy(), preprocess_frame(rgb).image.numpy())


def test_read_image_keeps_depth_alpha_and_gray(tmp_path: Path) -> None:
    rgba16 = np.random.default_rng(2).integers(0, 65536, (10, 12, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "rgba16.png"), cv2.cvtColor(rgba16, cv2.COLOR_RGBA2BGRA))
    np.testing.assert_array_equal(read_image(tmp_path / "rgba16.png"), rgba16)

    gray = _random_rgb(10, 12)[..., 0]
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), gray)


def test_read_image_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(missing)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"this is not an image" * 10)
    with pytest.raises(ValueError, match="corrupt.png"):
        read_image(corrupt)
    truncated = tmp_path / "truncated.png"
    _write_png_rgb(truncated, _random_rgb(20, 30))
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated.png"):
        read_image(truncated)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros(5, np.uint8),
        np.zeros((2, 4, 4, 3), np.uint8),
        np.zeros((0, 10, 3), np.uint8),
        np.zeros((10, 0), np.uint8),
        np.zeros((10, 10, 2), np.uint8),
        np.zeros((10, 10, 5), np.uint8),
        np.zeros((10, 10, 3), np.int32),
        np.zeros((10, 10, 3), bool),
        [[0, 1], [2, 3]],
    ],
    ids=["1d", "4d", "zero-h", "zero-w", "2ch", "5ch", "int32", "bool", "list"],
)
def test_bad_images_raise(image: object) -> None:
    with pytest.raises(ValueError):
        preprocess_frame(image)


@pytest.mark.parametrize(
    "kwargs", [{"mode": "stretch"}, {"target_width": 500}, {"target_width": 0}, {"size": (100, 140)}, {"size": (14,)}]
)
def test_bad_options_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        preprocess_frame(np.zeros((10, 10, 3), np.uint8), **kwargs)


@pytest.mark.parametrize("shape, kwargs", CASES)
def test_transform_matches_image_content(shape: tuple[int, int], kwargs: dict) -> None:
    """Each model pixel shows the ramp value of the original point that to_original says it came from."""
    h, w = shape
    frame = preprocess_frame(_ramp(h, w), **kwargs)
    t = frame.transform
    mh, mw = t.model_hw
    vv, uu = np.mgrid[0:mh, 0:mw] + 0.5
    uv_orig = t.to_original(np.stack([uu.ravel(), vv.ravel()], axis=1))
    expected = uv_orig / np.array([w, h])
    got = frame.image[:2].numpy().reshape(2, -1).T

    # Skip the border, where resampling clamps: 2 pixels of the original or of the resized image.
    (rh, rw), (sx, sy) = t.resized_hw, t.scale
    margin = 2 * np.maximum(1.0, np.array([sx, sy]))
    resized_uv = uv_orig * np.array([sx, sy])
    inside = np.all((resized_uv > margin) & (resized_uv < np.array([rw, rh]) - margin), axis=1)
    assert inside.sum() > 0
    np.testing.assert_allclose(got[inside], expected[inside], atol=2e-3)
    padded = (uv_orig[:, 0] < 0) | (uv_orig[:, 0] > w) | (uv_orig[:, 1] < 0) | (uv_orig[:, 1] > h)
    assert np.all(frame.image.numpy().reshape(3, -1)[:, padded] == 1.0)


@pytest.mark.parametrize("shape, kwargs", CASES)
def test_uv_round_trip(shape: tuple[int, int], kwargs: dict) -> None:
    t = preprocess_frame(np.zeros(shape, np.uint8), **kwargs).transform
    uv = np.random.default_rng(3).uniform(-10, 1000, (50, 2))
    np.testing.assert_allclose(t.to_original(t.to_model(uv)), uv, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(t.to_model(t.to_original(uv)), uv, rtol=1e-12, atol=1e-9)
    uv_t = torch.from_numpy(uv).float()
    back_t = t.to_original(t.to_model(uv_t))
    assert isinstance(back_t, torch.Tensor) and back_t.dtype == torch.float32
    np.testing.assert_allclose(back_t.numpy(), uv_t.numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("shape, kwargs", CASES)
def test_intrinsics_round_trip_and_consistency(shape: tuple[int, int], kwargs: dict) -> None:
    h, w = shape
    t = preprocess_frame(np.zeros(shape, np.uint8), **kwargs).transform
    K = np.array([[1.2 * w, 0.0, 0.48 * w], [0.0, 1.1 * w, 0.53 * h], [0.0, 0.0, 1.0]])
    K_model = t.intrinsics_to_model(K)
    np.testing.assert_allclose(t.intrinsics_to_original(K_model), K, rtol=1e-12, atol=1e-9)
    K_t = torch.from_numpy(K)
    K_model_t = t.intrinsics_to_model(K_t)
    assert isinstance(K_model_t, torch.Tensor) and K_model_t.dtype == torch.float64
    np.testing.assert_allclose(K_model_t.numpy(), K_model, rtol=1e-12)
    np.testing.assert_allclose(t.intrinsics_to_original(K_model_t).numpy(), K, rtol=1e-12, atol=1e-9)

    points = np.random.default_rng(4).uniform([-1, -1, 1], [1, 1, 5], (100, 3))

    def project(K: np.ndarray) -> np.ndarray:
        p = points @ K.T
        return p[:, :2] / p[:, 2:]

    np.testing.assert_allclose(t.to_original(project(K_model)), project(K), rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(project(K_model), t.to_model(project(K)), rtol=1e-10, atol=1e-8)


def test_intrinsics_batched_and_degenerate() -> None:
    t = preprocess_frame(np.zeros((480, 640), np.uint8)).transform
    K = np.tile(np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]], np.float32), (4, 1, 1))
    K_model = t.intrinsics_to_model(K)
    assert K_model.shape == (4, 3, 3) and K_model.dtype == np.float32
    np.testing.assert_allclose(K_model[:, 0, 2], 259.0)  # centred principal point stays centred
    K[0, 0, 0] = np.inf  # an untrained model can predict a zero field of view
    K_inf = t.intrinsics_to_original(K)
    assert np.isinf(K_inf[0, 0, 0]) and not np.isnan(K_inf).any()


def test_known_transform_values() -> None:
    # 1000 x 37 (tall): width 37 -> 518 (x14), height 1000 -> 14000, centre-crop 6741 rows.
    t = preprocess_frame(np.zeros((1000, 37), np.uint8)).transform
    assert t == ImageTransform((1000, 37), (518, 518), (14.0, 14.0), (0.0, -6741.0))
    np.testing.assert_allclose(t.to_model(np.array([[18.5, 500.0]])), [[259.0, 259.0]])


@pytest.mark.parametrize("shape, kwargs", CASES)
def test_resize_map_to_original(shape: tuple[int, int], kwargs: dict) -> None:
    h, w = shape
    ramp = _ramp(h, w)
    frame = preprocess_frame(ramp, **kwargs)
    t = frame.transform
    u_map = frame.image[0].numpy()

    back = t.resize_map_to_original(u_map, "linear")
    assert back.shape == (h, w) and back.dtype == np.float32
    # Original pixels that fell outside the model input (cropped away) come back as NaN.
    vv, uu = np.mgrid[0:h, 0:w] + 0.5
    uv_model = t.to_model(np.stack([uu.ravel(), vv.ravel()], axis=1)).reshape(h, w, 2)
    mh, mw = t.model_hw
    visible = (uv_model[..., 0] >= 0) & (uv_model[..., 0] < mw) & (uv_model[..., 1] >= 0) & (uv_model[..., 1] < mh)
    assert np.all(np.isnan(back[~visible]))
    deep = (
        (uv_model[..., 0] > 3) & (uv_model[..., 0] < mw - 3) & (uv_model[..., 1] > 3) & (uv_model[..., 1] < mh - 3)
    )
    tolerance = 2e-3 + 1.0 / min(t.resized_hw)  # downscaling to the model loses up to ~a model pixel
    np.testing.assert_allclose(back[deep], ramp[..., 0][deep], atol=tolerance)

    channels = torch.from_numpy(frame.image.numpy().transpose(1, 2, 0).copy())
    back_t = t.resize_map_to_original(channels)
    assert isinstance(back_t, torch.Tensor) and tuple(back_t.shape) == (h, w, 3)
    mask = t.resize_map_to_original(np.ones(t.model_hw, bool))
    assert mask.dtype == bool and np.array_equal(mask, visible)
    single = t.resize_map_to_original(np.ones(t.model_hw + (1,), np.float32))
    assert single.shape == (h, w, 1)


def test_resize_map_to_original_rejects_wrong_shape() -> None:
    t = preprocess_frame(np.zeros((480, 640), np.uint8)).transform
    with pytest.raises(ValueError):
        t.resize_map_to_original(np.zeros((518, 392)))
    with pytest.raises(ValueError):
        t.resize_map_to_original(np.zeros(t.model_hw), "bilinear")
