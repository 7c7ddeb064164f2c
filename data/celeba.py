"""CelebA (aligned-and-cropped release) as a data set of aligned faces.

Expected layout (the files of https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html):

    CELEBA_DIR/img_align_celeba/000001.jpg ...   (img_align_celeba.zip; the doubly nested
                                                  img_align_celeba/img_align_celeba/ of some
                                                  mirrors works too)
    CELEBA_DIR/list_eval_partition.txt           "000001.jpg 0" (0 train, 1 val, 2 test)
    CELEBA_DIR/list_attr_celeba.txt              count line, 40 names line, then
                                                 "000001.jpg -1 1 ..." (optional)

The photos are re-aligned to our template (``data.align``) from MTCNN landmarks, cached by
``python -m data.prepare celeba CELEBA_DIR``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.align import CROP_SIZE
from data.image_folder import DatasetLayoutError, ImageFolderFaces

log = logging.getLogger(__name__)

IMAGE_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
SPLITS = {"0": "train", "1": "val", "2": "test"}
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
DOWNLOAD_HINT = (
    "CelebA: download img_align_celeba.zip, list_eval_partition.txt and list_attr_celeba.txt "
    "from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into one folder, unzip the images "
    "there, and pass that folder (make prepare-celeba CELEBA_DIR=/path/to/celeba)")


def find_image_dir(root: str | Path) -> str:
    """The images folder relative to root: "img_align_celeba" or its doubly nested form."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: CelebA folder not found; {DOWNLOAD_HINT}")
    for candidate in (f"{IMAGE_DIR}/{IMAGE_DIR}", IMAGE_DIR):
        directory = root / candidate
        if directory.is_dir() and any(path.suffix.lower() == ".jpg"
                                      for path in directory.iterdir()):
            return candidate
    if (root / "000001.jpg").is_file():
        raise DatasetLayoutError(f"{root}: this is the images folder itself; pass its parent, "
                                 f"which holds {IMAGE_DIR}/ and {PARTITION_FILE}")
    raise DatasetLayoutError(f"{root}: no {IMAGE_DIR}/ folder with .jpg photos; "
                             f"{DOWNLOAD_HINT}")


def read_partition(path: str | Path) -> dict[str, str]:
    """list_eval_partition.txt -> {file name: "train" | "val" | "test"}."""
    path = Path(path)
    partition: dict[str, str] = {}
    for line_number, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in SPLITS:
            raise DatasetLayoutError(f"{path}:{line_number}: expected '<name>.jpg <0|1|2>', "
                                     f"got {line.strip()!r}; re-download the file")
        partition[fields[0]] = SPLITS[fields[1]]
    return partition


def read_attributes(path: str | Path) -> dict[str, np.ndarray]:
    """list_attr_celeba.txt -> {file name: (40,) uint8 0/1 in CELEBA_ATTRIBUTES order}."""
    path = Path(path)
    lines = _read_lines(path)
    if len(lines) < 2:
        raise DatasetLayoutError(f"{path}: too short for a CelebA attribute file; "
                                 "re-download it")
    names = tuple(lines[1].split())
    if names != CELEBA_ATTRIBUTES:
        raise DatasetLayoutError(f"{path}: line 2 does not list CelebA's 40 attribute names; "
                                 "re-download it")
    attributes: dict[str, np.ndarray] = {}
    for line_number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        values = fields[1:]
        if len(values) != len(CELEBA_ATTRIBUTES) or any(v not in ("1", "-1") for v in values):
            raise DatasetLayoutError(f"{path}:{line_number}: expected a name and 40 values of "
                                     "1 or -1; re-download the file")
        attributes[fields[0]] = (np.array(values, dtype=np.int8) > 0).astype(np.uint8)
    return attributes


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="strict").splitlines()
    except FileNotFoundError:
        raise DatasetLayoutError(f"{path}: file not found; {DOWNLOAD_HINT}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetLayoutError(f"{path}: cannot read ({error}); re-download it") from None


def list_celeba_images(root: str | Path) -> list[str]:
    """Relative paths of every CelebA photo: those on disk plus those the partition lists
    (so a photo missing from disk is reported as unreadable, not silently dropped)."""
    root = Path(root)
    image_dir = find_image_dir(root)
    names = {path.name for path in (root / image_dir).iterdir()
             if path.suffix.lower() == ".jpg" and not path.name.startswith(".")}
    if (root / PARTITION_FILE).is_file():
        names.update(read_partition(root / PARTITION_FILE))
    return [f"{image_dir}/{name}" for name in sorted(names)]


class CelebAFaces(ImageFolderFaces):
    """CelebA photos aligned to the 224 template.

    Args:
        root: CELEBA_DIR (see the module docstring).
        split: "train", "val", "test" (needs list_eval_partition.txt) or "all".
        crop_size, allow_rotation, cache_path: as ``ImageFolderFaces``.

    Samples: image, path, landmarks5, transform, split (when the partition file is there),
    attributes (when list_attr_celeba.txt is there and lists the photo), landmarks68 (dlib's,
    when prepare predicted them; see ``ImageFolderFaces``).
    """

    dataset_name = "CelebA"
    prepare_kind = "celeba"

    def __init__(self, root: str | Path, split: str = "train", crop_size: int = CROP_SIZE,
                 allow_rotation: bool = True, cache_path: str | Path | None = None):
        root = Path(root)
        if split not in (*SPLITS.values(), "all"):
            raise ValueError(f"split must be train, val, test or all, got {split!r}")
        image_dir = find_image_dir(root)
        partition_path = root / PARTITION_FILE
        self._partition = read_partition(partition_path) if partition_path.is_file() else {}
        if split == "all":
            relative_paths = list_celeba_images(root)
        elif not self._partition:
            raise DatasetLayoutError(f"{partition_path}: file not found, needed for the "
                                     f"{split!r} split; {DOWNLOAD_HINT}")
        else:
            relative_paths = [f"{image_dir}/{name}"
                              for name, name_split in sorted(self._partition.items())
                              if name_split == split]
        attribute_path = root / ATTRIBUTE_FILE
        if attribute_path.is_file():
            self._attributes = read_attributes(attribute_path)
        else:
            self._attributes = {}
            log.warning("%s: not found; CelebA samples will have no attributes", attribute_path)
        self.split = split
        super().__init__(root, relative_paths, crop_size, allow_rotation, cache_path)

    def extra_fields(self, index: int, relative_path: str,
                     transform: np.ndarray) -> dict[str, Any]:
        name = relative_path.rsplit("/", 1)[-1]
        fields: dict[str, Any] = {}
        if name in self._partition:
            fields["split"] = self._partition[name]
        if name in self._attributes:
            fields["attributes"] = torch.from_numpy(self._attributes[name]).float()
        return fields
