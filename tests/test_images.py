"""data.images: an odd file becomes (H, W, 3) uint8 RGB or a one-line UnreadableImageError."""
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from data.images import (BACKGROUND_RGB, UnreadableImageError, image_to_tensor, is_image_file,
                         read_rgb_image, tensor_to_image)


def _gradient_rgb(height=24, width=32):
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 255 // (width - 1), ys * 255 // (height - 1),
                     np.full_like(xs, 90)], axis=-1).astype(np.uint8)


def _png16_rgb(values: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    height, width, _ = values.shape

    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def test_rgb_jpeg_reads_as_uint8_rgb_at_file_size(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_gradient_rgb()).save(path, quality=95)
    image = read_rgb_image(path)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - _gradient_rgb().astype(int)).mean() < 4


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "gray.png"
    gray = _gradient_rgb()[:, :, 0]
    Image.fromarray(gray, mode="L").save(path)
    image = read_rgb_image(path)
    assert image.shape == (24, 32, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], gray)


def test_rgba_composites_transparent_pixels_over_the_background(tmp_path):
    path = tmp_path / "rgba.png"
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (200, 10, 20, 255)  # opaque left half
    rgba[:, 4:] = (0, 255, 0, 0)      # transparent right half
    Image.fromarray(rgba, mode="RGBA").save(path)
    image = read_rgb_image(path)
    np.testing.assert_array_equal(image[0, 0], (200, 10, 20))
    np.testing.assert_array_equal(image[0, 7], BACKGROUND_RGB)


def test_palette_image_with_transparency_reads_as_rgb(tmp_path):
    path = tmp_path / "palette.png"
    palette_image = Image.fromarray(_gradient_rgb()).convert("P")
    palette_image.info["transparency"] = 0
    palette_image.save(path, transparency=0)
    image = read_rgb_image(path)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8


def test_cmyk_jpeg_converts_to_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    red, green, blue = read_rgb_image(path)[8, 8].astype(int)
    assert red > 200 and green < 40 and blue < 40


def test_16bit_grayscale_png_is_scaled_to_8bit_not_clipped(tmp_path):
    path = tmp_path / "gray16.png"
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    image = read_rgb_image(path)[:, :, 0].reshape(-1).astype(int)
    assert image[0] == 0 and image[-1] == 255
    assert np.all(np.diff(image) >= 0)
    assert abs(image[128] - 128) <= 1  # a clipping conversion would give 255 here


def test_16bit_rgb_png_keeps_its_colours(tmp_path):
    path = tmp_path / "rgb16.png"
    values = np.zeros((4, 4, 3), np.uint16)
    values[...] = (65535, 32896, 257 * 10)
    path.write_bytes(_png16_rgb(values))
    np.testing.assert_array_equal(read_rgb_image(path)[0, 0], (255, 128, 10))


def test_one_pixel_image_is_read(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (1, 2, 3)).save(path)
    np.testing.assert_array_equal(read_rgb_image(path), [[[1, 2, 3]]])


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, displayed rotated by 90 degrees
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(path, exif=exif)
    assert read_rgb_image(path).shape == (20, 10, 3)


def test_text_file_named_jpg_is_unreadable_with_a_reason(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(UnreadableImageError) as error:
        read_rgb_image(path)
    assert "not an image" in error.value.reason
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_truncated_jpeg_is_unreadable(tmp_path):
    full, truncated = tmp_path / "full.jpg", tmp_path / "truncated.jpg"
    Image.fromarray(_gradient_rgb(96, 96)).save(full)
    data = full.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError) as error:
        read_rgb_image(truncated)
    assert "truncated" in error.value.reason


def test_empty_and_missing_files_are_unreadable(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UnreadableImageError, match="empty file"):
        read_rgb_image(tmp_path / "empty.png")
    with pytest.raises(UnreadableImageError, match="file not found"):
        read_rgb_image(tmp_path / "missing.png")


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(path)  # 144 Mpx, a tiny file
    with pytest.raises(UnreadableImageError, match="too large: 12000x12000"):
        read_rgb_image(path)
    small = tmp_path / "small.png"
    Image.new("RGB", (50, 40)).save(small)
    with pytest.raises(UnreadableImageError, match="too large"):
        read_rgb_image(small, max_pixels=1999)
    assert read_rgb_image(small, max_pixels=2000).shape == (40, 50, 3)


def test_image_extension_check_is_case_insensitive():
    assert is_image_file("a/B.JPG") and is_image_file("c.png") and not is_image_file("d.txt")


def test_tensor_conversion_round_trips():
    image = _gradient_rgb()
    tensor = image_to_tensor(image)
    assert tensor.shape == (3, 24, 32) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    np.testing.assert_array_equal(tensor_to_image(tensor), image)
