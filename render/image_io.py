"""Writing images: atomic PNG saves and contact sheets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fileio import write_atomically


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """image: (3, H, W) or (1, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_png(image: torch.Tensor | np.ndarray | Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically (temp file in the same folder, then rename). Tensors are (C, H, W) in [0, 1]."""
    path = Path(path)
    if isinstance(image, torch.Tensor):
        image = Image.fromarray(to_uint8(image))
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    write_atomically(path, lambda handle: image.save(handle, format="PNG"))
    return path


def contact_sheet(images: list[torch.Tensor], columns: int, labels: list[str] | None = None, pad: int = 2) -> Image.Image:
    """Tile (C, H, W) images in [0, 1] into one picture, optionally with a short label on each tile."""
    tiles = [Image.fromarray(to_uint8(im)) for im in images]
    w = max(t.width for t in tiles)
    h = max(t.height for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, tile in enumerate(tiles):
        x, y = pad + (k % columns) * (w + pad), pad + (k // columns) * (h + pad)
        sheet.paste(tile, (x, y))
        if labels:
            draw.rectangle([x, y, x + 6 * len(labels[k]) + 4, y + 11], fill=(0, 0, 0))
            draw.text((x + 2, y), labels[k], fill=(255, 255, 255))
    return sheet
