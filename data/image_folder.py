"""Any folder of photos as a data set of aligned faces (also the base of CelebA and AFLW2000).

Run ``python -m data.prepare folder DIR`` once: it detects and aligns every photo, predicts
its 68 landmarks with dlib, and caches the result (``data.align``). The data set then serves
only the photos with an aligned face, with their 68 landmarks where dlib gave them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from data.align import (ALIGNED, CROP_SIZE, AlignmentCache, AlignmentCacheError,
                        alignment_transform, apply_transform, existing_cache_path, warp_to_crop)
from data.images import is_image_file, read_rgb_image
from data.samples import FaceSample

log = logging.getLogger(__name__)


class DatasetLayoutError(ValueError):
    """A data set folder that is missing or does not have the expected files."""


class DatasetNotPreparedError(RuntimeError):
    """A data set whose photos have not been aligned yet (no alignment cache)."""


def list_image_files(root: str | Path, recursive: bool = True) -> list[str]:
    """Sorted POSIX paths, relative to root, of the image files under it.

    Hidden files and folders (name starting with ".") are left out.
    """
    root = Path(root)
    found: list[str] = []
    if recursive:
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
            relative_dir = Path(directory).relative_to(root)
            found.extend((relative_dir / name).as_posix() for name in files
                         if not name.startswith(".") and is_image_file(name))
    else:
        found = [entry.name for entry in root.iterdir()
                 if entry.is_file() and not entry.name.startswith(".") and is_image_file(entry)]
    return sorted(found)


class ImageFolderFaces(Dataset):
    """Aligned face crops from a folder of photos.

    Args:
        root: the folder.
        relative_paths: the photos to use, relative to root (default: every image file under
            root). Photos without an aligned face in the cache are left out.
        crop_size: side of the square crop in pixels.
        allow_rotation: fit rotation too (default) or, as Deep3D, scale + translation only.
        cache_path: alignment cache file (default: found next to the data or in the user cache).

    Samples (``data.samples``): image, path, landmarks5, transform, and landmarks68 (68, 2)
    float32 crop px (dlib's prediction, moved by the sample's transform) for photos prepare
    predicted them for; a photo without them has no landmarks68 key (never zeros).
    """

    dataset_name = "image folder"
    prepare_kind = "folder"
    # False for data sets whose annotations hold the 68 points (AFLW2000): their ground truth,
    # not dlib's prediction, is the sample's landmarks68.
    uses_predicted_landmarks68 = True

    def __init__(self, root: str | Path, relative_paths: list[str] | None = None,
                 crop_size: int = CROP_SIZE, allow_rotation: bool = True,
                 cache_path: str | Path | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetLayoutError(f"{self.root}: {self.dataset_name} folder not found; "
                                     "check the path")
        self.crop_size = int(crop_size)
        self.allow_rotation = allow_rotation
        wanted = list_image_files(self.root) if relative_paths is None else list(relative_paths)
        cache = self._load_cache(cache_path)
        self.cache_path = cache.path
        aligned = [path for path in wanted
                   if path in cache.entries and cache.entries[path].status == ALIGNED]
        not_prepared = sum(path not in cache.entries for path in wanted)
        if not_prepared:
            log.warning("%s: %d of %d photos are not aligned yet; run `%s` to add them",
                        self.root, not_prepared, len(wanted), self.prepare_command())
        if not aligned:
            counts = cache.counts(wanted)
            raise DatasetLayoutError(
                f"{self.root}: none of {len(wanted)} photos has an aligned face "
                f"({counts['no_face']} no face, {counts['unreadable']} unreadable, "
                f"{not_prepared} not prepared)")
        self.relative_paths = aligned
        self._landmarks5 = {path: cache.entries[path].landmarks5 for path in aligned}
        # One packed (K, 68, 2) array, not K small ones: CelebA has 200k photos, and data
        # loader workers share one array's pages but copy those that per-object refcounts touch.
        with_points = [path for path in aligned if self.uses_predicted_landmarks68
                       and cache.entries[path].landmarks68 is not None]
        self._landmarks68_row = {path: row for row, path in enumerate(with_points)}
        self._landmarks68 = np.stack([cache.entries[path].landmarks68 for path in with_points]) \
            if with_points else np.zeros((0, 68, 2), np.float32)
        if self.uses_predicted_landmarks68:
            not_predicted = sum(not cache.entries[path].landmarks68_attempted
                                for path in aligned)
            if not_predicted:
                log.warning("%s: %d of %d aligned photos have no 68-point landmarks yet; run "
                            "`%s` with dlib installed (pip install dlib-bin) to add them",
                            self.root, not_predicted, len(aligned), self.prepare_command())

    def prepare_command(self) -> str:
        """The shell command that builds this data set's alignment cache."""
        return f"python -m data.prepare {self.prepare_kind} {self.root}"

    def _load_cache(self, cache_path: str | Path | None) -> AlignmentCache:
        path = Path(cache_path) if cache_path is not None else existing_cache_path(self.root)
        if path is None or not path.is_file():
            raise DatasetNotPreparedError(f"{self.root}: photos not aligned yet; run "
                                          f"`{self.prepare_command()}` first")
        try:
            return AlignmentCache.load(path)
        except AlignmentCacheError as error:
            raise DatasetNotPreparedError(f"{error}; run `{self.prepare_command()}`") from None

    def __len__(self) -> int:
        return len(self.relative_paths)

    def transform_of(self, index: int) -> np.ndarray:
        """(2, 3) float64 transform photo px -> crop px of sample index."""
        return alignment_transform(self._landmarks5[self.relative_paths[index]],
                                   self.crop_size, self.allow_rotation)

    def __getitem__(self, index: int) -> FaceSample:
        relative_path = self.relative_paths[index]
        path = self.root / relative_path
        transform = self.transform_of(index)
        image = read_rgb_image(path)
        landmarks5 = apply_transform(transform, self._landmarks5[relative_path])
        sample: FaceSample = {
            "image": warp_to_crop(image, transform, self.crop_size).clamp_(0.0, 1.0),
            "path": str(path),
            "landmarks5": torch.from_numpy(landmarks5).float(),
            "transform": torch.from_numpy(transform).float(),
        }
        if relative_path in self._landmarks68_row:
            landmarks68 = apply_transform(
                transform, self._landmarks68[self._landmarks68_row[relative_path]])
            sample["landmarks68"] = torch.from_numpy(landmarks68).float()
        sample.update(self.extra_fields(index, relative_path, transform))
        return sample

    def extra_fields(self, index: int, relative_path: str,
                     transform: np.ndarray) -> dict[str, Any]:
        """Data-set specific keys of a sample (subclasses add annotations here)."""
        return {}
