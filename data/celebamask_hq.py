"""CelebAMask-HQ: face photos with part masks, for training the parsing net on real faces.

Layout (as distributed): ``ROOT/CelebA-HQ-img/{i}.jpg`` (1024 px) and
``ROOT/CelebAMask-HQ-mask-anno/{i // 2000}/{i:05d}_{part}.png`` (512 px, white = part). Photos are
aligned to the 224 template like every other data set (``python -m data.prepare celebamask_hq ROOT``),
and the label map is warped with the same transform.

Labels follow perception.parsing's three classes, as SynthFaces defines them: SKIN is the skin, nose and
lips (the region the photometric loss compares); OCCLUDER is eyeglasses and hats (things in front of
the face); everything else, eyes, brows and the mouth's inside included, is BACKGROUND. Hair is left as
background: the mask does not say where it covers the face.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from data.align import CROP_SIZE, warp_to_crop
from data.image_folder import DatasetLayoutError, ImageFolderFaces
from perception.parsing_classes import BACKGROUND, OCCLUDER, SKIN

IMAGE_DIR = "CelebA-HQ-img"
MASK_DIR = "CelebAMask-HQ-mask-anno"
SKIN_PARTS = ("skin", "nose", "u_lip", "l_lip")
OCCLUDER_PARTS = ("eye_g", "hat")
DOWNLOAD_HINT = (
    "CelebAMask-HQ: download CelebAMask-HQ.zip (CelebA-HQ-img/ and CelebAMask-HQ-mask-anno/), unzip it and "
    "pass that folder (python -m data.prepare celebamask_hq DIR)")


def list_celebamask_images(root: str | Path) -> list[str]:
    """Relative paths of the photos; raises DatasetLayoutError when the layout is not there."""
    root = Path(root)
    folder = root / IMAGE_DIR
    if not folder.is_dir() or not (root / MASK_DIR).is_dir():
        raise DatasetLayoutError(f"{root}: expected {IMAGE_DIR}/ and {MASK_DIR}/ in it; {DOWNLOAD_HINT}")
    names = sorted((p.name for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png")),
                   key=lambda name: (len(name), name))
    return [f"{IMAGE_DIR}/{name}" for name in names]


def label_map(root: str | Path, index: int, size: int) -> np.ndarray:
    """(size, size) uint8 class ids of photo `index` at the photo's resolution `size`."""
    folder = Path(root) / MASK_DIR / str(index // 2000)
    labels = np.full((size, size), BACKGROUND, np.uint8)
    for parts, value in ((SKIN_PARTS, SKIN), (OCCLUDER_PARTS, OCCLUDER)):  # occluders drawn last, on top
        for part in parts:
            path = folder / f"{index:05d}_{part}.png"
            if path.is_file():
                mask = Image.open(path).convert("L").resize((size, size), Image.NEAREST)
                labels[np.asarray(mask) > 127] = value
    return labels


class CelebAMaskHQFaces(ImageFolderFaces):
    """Aligned CelebAMask-HQ crops with a "parsing" (H, W) int64 label map in the crop."""

    dataset_name = "CelebAMask-HQ"
    prepare_kind = "celebamask_hq"

    def __init__(self, root: str | Path, split: str = "train", crop_size: int = CROP_SIZE,
                 cache_path: str | Path | None = None, val_fraction: float = 0.1):
        files = list_celebamask_images(root)
        cut = int(len(files) * (1 - val_fraction))
        chosen = files[:cut] if split == "train" else files[cut:]
        super().__init__(root, chosen, crop_size=crop_size, cache_path=cache_path)
        self.split = split

    def extra_fields(self, index: int, relative_path: str, transform: np.ndarray) -> dict[str, Any]:
        photo_size = Image.open(self.root / relative_path).size[0]
        labels = label_map(self.root, int(Path(relative_path).stem), photo_size)
        one_hot = torch.from_numpy(np.eye(3, dtype=np.float32)[labels]).permute(2, 0, 1)
        warped = warp_to_crop(one_hot, transform, self.crop_size)
        parsing = warped.argmax(0)
        parsing[warped.sum(0) < 0.5] = BACKGROUND  # outside the photo
        return {"parsing": parsing, "split": self.split}
