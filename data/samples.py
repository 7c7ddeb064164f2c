"""The one sample structure every data set returns, and a collate function for it.

A sample is a plain dict with the keys below. Each key is optional: a data set leaves out what
it does not know (a photo folder has no attributes), and never fills it with zeros. All image
tensors are aligned 224 x 224 crops (see ``data.align``), and all pixel coordinates are in
that crop, (x, y), x right and y down.

Keys of real photos (CelebA, AFLW2000, image folders):
    image        (3, 224, 224) float32 in [0, 1]
    path         str, the source file
    landmarks5   (5, 2) float32 px; left eye, right eye, nose, mouth left, mouth right
                 (image-left/right, MTCNN's order)
    transform    (2, 3) float32, original photo px -> crop px (``data.align.paste_back``);
                 the photo as ``data.images.read_rgb_image`` reads it (EXIF-upright)
    split        str: "train", "val" or "test"
    attributes   (40,) float32 0/1, CelebA's attributes in ``data.celeba.CELEBA_ATTRIBUTES``
                 order
    landmarks68  (68, 2) float32 px, iBUG order (AFLW2000: the x, y of pt3d_68; SynthFaces:
                 projected; CelebA and folders: dlib's prediction, cached by data.prepare,
                 absent for a photo dlib gave none)
    head_pose    (3,) float32 radians: pitch, yaw, roll (AFLW2000's Pose_Para)

SynthFaces adds its ground truth, e.g. clean_image, face_mask, occluder_mask, coeffs, albedo
and attribute labels; the collate function batches any key the same way.
"""
from __future__ import annotations

from numbers import Number
from typing import Any, TypedDict

import numpy as np
import torch


class FaceSample(TypedDict, total=False):
    """Keys of a sample; every key may be absent. See the module docstring for units."""

    image: torch.Tensor
    path: str
    landmarks5: torch.Tensor
    transform: torch.Tensor
    split: str
    attributes: torch.Tensor
    landmarks68: torch.Tensor
    head_pose: torch.Tensor


def _stack(values: list[Any]) -> Any:
    """Batch one key's values that all samples have."""
    first = values[0]
    if isinstance(first, np.ndarray):
        values = [torch.from_numpy(np.asarray(value)) for value in values]
        first = values[0]
    if isinstance(first, torch.Tensor):
        if all(isinstance(value, torch.Tensor) and value.shape == first.shape
               and value.dtype == first.dtype for value in values):
            return torch.stack(values)
        return values
    if isinstance(first, Number) and not isinstance(first, bool) and all(
            isinstance(value, Number) and not isinstance(value, bool) for value in values):
        return torch.tensor(values)
    if isinstance(first, dict) and all(isinstance(value, dict) for value in values):
        return collate_face_samples(values)
    return list(values)


def collate_face_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples that may carry different keys (for a DataLoader's collate_fn).

    A key every sample has becomes a stacked (B, ...) tensor when its tensors share shape
    and dtype, a (B,) tensor for numbers, and a list of length B otherwise (strings, ragged
    tensors). A key only some samples have becomes a list of length B holding None where a
    sample lacks it, so nothing absent is mistaken for a real zero.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    keys: list[str] = []
    for sample in samples:
        keys.extend(key for key in sample if key not in keys)
    batch: dict[str, Any] = {}
    for key in keys:
        if all(key in sample for sample in samples):
            batch[key] = _stack([sample[key] for sample in samples])
        else:
            batch[key] = [sample.get(key) for sample in samples]
    return batch
