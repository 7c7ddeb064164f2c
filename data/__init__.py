"""Data sets (SynthFaces, CelebA, CelebAMask-HQ, AFLW2000, image folders), alignment and the sample structure.

Public API (loaded lazily so `import data.align` stays light):
    SynthFaces, SynthFacesConfig, SYNTHFACES_ATTRIBUTES      the embedded default (data.synthfaces)
    CelebAFaces, AFLW2000Faces, ImageFolderFaces, CelebAMaskHQFaces
    alignment_transform, warp_to_crop, paste_back            (data.align)
    read_rgb_image, UnreadableImageError                     (data.images)
    collate_face_samples, FaceSample                         (data.samples)
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SynthFaces": "synthfaces", "SynthFacesConfig": "synthfaces", "SYNTHFACES_ATTRIBUTES": "synthfaces",
    "CelebAFaces": "celeba", "CELEBA_ATTRIBUTES": "celeba", "AFLW2000Faces": "aflw2000",
    "ImageFolderFaces": "image_folder", "DatasetLayoutError": "image_folder", "DatasetNotPreparedError": "image_folder",
    "CelebAMaskHQFaces": "celebamask_hq",
    "alignment_transform": "align", "warp_to_crop": "align", "paste_back": "align", "template_landmarks5": "align",
    "read_rgb_image": "images", "UnreadableImageError": "images",
    "collate_face_samples": "samples", "FaceSample": "samples",
    "sample_detail": "face_detail", "DetailConfig": "face_detail",
    "prepare_alignment": "prepare",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'data' has no attribute '{name}'")
