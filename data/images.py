"""Robust reading of photos into RGB arrays.

Whatever the file holds (grayscale, palette, RGBA, CMYK, 16-bit, EXIF-rotated), a readable
image comes back as (H, W, 3) uint8 RGB at the file's full resolution, upright per its EXIF
orientation. Everything else (missing, empty, truncated or non-image files, images beyond the
pixel limit) raises :class:`UnreadableImageError` with a one-line reason, so a caller can skip
the file and count it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# 100 Mpx is about 300 MB decoded; larger files are refused instead of risking memory.
DEFAULT_MAX_PIXELS = 100_000_000
# Transparent pixels are composited over this colour (mid grey, like a neutral background).
BACKGROUND_RGB = (128, 128, 128)


class UnreadableImageError(ValueError):
    """A file that cannot be decoded into an RGB image. ``reason`` is a short phrase."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: cannot read image ({reason}); replace or delete the file")


def is_image_file(path: str | Path) -> bool:
    """True when the file name has one of ``IMAGE_EXTENSIONS`` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_rgb_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB.

    path: any format Pillow reads.
    max_pixels: images with more pixels (width x height) are refused before decoding.
    Returns (H, W, 3) uint8 RGB. Raises UnreadableImageError with the reason otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableImageError(path, "file not found")
    if path.stat().st_size == 0:
        raise UnreadableImageError(path, "empty file")
    try:
        with warnings.catch_warnings():
            # Size is checked against max_pixels below; Pillow's own bomb warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UnreadableImageError(
                        path, f"image too large: {width}x{height} px, over the "
                              f"{max_pixels} px limit; downscale it")
                image.load()
                return _to_rgb_array(ImageOps.exif_transpose(image))
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError:
        raise UnreadableImageError(path, "image too large for Pillow's decompression-bomb "
                                         "limit; downscale it") from None
    except UnidentifiedImageError:
        raise UnreadableImageError(path, "not an image file Pillow recognises") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports truncated or corrupt data as OSError (and a few plugins as the others).
        raise UnreadableImageError(path, f"corrupt or truncated data: {error}") from None


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_bit_depth_to_rgb(np.asarray(image))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.asarray(image, dtype=np.uint8).copy()


def _high_bit_depth_to_rgb(values: np.ndarray) -> np.ndarray:
    """(H, W) 16/32-bit integer or float gray -> (H, W, 3) uint8, scaled, not clipped."""
    is_float = values.dtype.kind == "f"
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    peak = float(finite.max()) if finite.size else 0.0
    if peak <= 1.0 and is_float:
        scaled = values * 255.0  # float images in [0, 1]
    elif peak <= 255.0:
        scaled = values
    elif peak <= 65535.0:
        scaled = values / 257.0  # 16-bit: 65535 -> 255
    else:
        low = float(finite.min())
        scaled = (values - low) * (255.0 / max(peak - low, 1e-12))
    gray = np.clip(np.nan_to_num(scaled), 0.0, 255.0).round().astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def tensor_to_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8 (clipped, rounded)."""
    array = image.detach().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()
