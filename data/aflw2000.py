"""AFLW2000-3D as a data set of aligned faces (evaluation only, split "test").

Expected layout (AFLW2000-3D.zip from the 3DDFA project page):

    AFLW_DIR/image00002.jpg, AFLW_DIR/image00002.mat, ...   (or AFLW_DIR/AFLW2000/...)

Each .mat holds ``pt3d_68`` (3, 68): x, y in photo pixels (as stored) and z, and ``Pose_Para``
(1, 7): pitch, yaw, roll in radians, then translation and scale.

Alignment uses MTCNN's landmarks like every data set. AFLW2000 has many profile faces MTCNN
misses; for those, ``python -m data.prepare aflw2000`` aligns from the annotated 68 points
instead (eye centres, nose tip, mouth corners) and records ``landmarks_source="annotation"``.
A sample's landmarks68 are the annotated ones; dlib's predictions, which ``data.prepare``
caches for every data set, are not used here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch

from data.align import CROP_SIZE, apply_transform
from data.image_folder import DatasetLayoutError, ImageFolderFaces
from perception.landmarks import landmarks5_from_68

log = logging.getLogger(__name__)

NESTED_DIR = "AFLW2000"
DOWNLOAD_HINT = (
    "AFLW2000-3D: download AFLW2000-3D.zip from "
    "http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm, unzip it, and pass "
    "the AFLW2000 folder of .jpg and .mat files (make prepare-aflw AFLW_DIR=/path/to/AFLW2000)")


@dataclass(frozen=True)
class AFLWAnnotation:
    """landmarks68: (68, 2) photo px (x, y of pt3d_68). head_pose: (3,) radians, pitch yaw roll."""

    landmarks68: np.ndarray
    head_pose: np.ndarray


def find_image_dir(root: str | Path) -> str:
    """"" when root holds the .jpg/.mat pairs, "AFLW2000" when they sit one folder down."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: AFLW2000 folder not found; {DOWNLOAD_HINT}")
    for candidate in ("", NESTED_DIR):
        directory = root / candidate
        if directory.is_dir() and any(directory.glob("image*.mat")):
            return candidate
    raise DatasetLayoutError(f"{root}: no image*.jpg / image*.mat pairs; {DOWNLOAD_HINT}")


def list_aflw_images(root: str | Path) -> list[str]:
    """Relative paths of the photos that have a .mat annotation next to them, sorted."""
    root = Path(root)
    image_dir = find_image_dir(root)
    directory = root / image_dir
    photos = sorted(path for path in directory.iterdir()
                    if path.suffix.lower() == ".jpg" and not path.name.startswith("."))
    paired = [path for path in photos if path.with_suffix(".mat").is_file()]
    if len(paired) < len(photos):
        log.warning("%s: %d photos have no .mat annotation and are left out", directory,
                    len(photos) - len(paired))
    return [path.relative_to(root).as_posix() for path in paired]


def read_annotation(mat_path: str | Path) -> AFLWAnnotation:
    """Read one AFLW2000-3D .mat. Raises DatasetLayoutError (one line) when it is unusable."""
    mat_path = Path(mat_path)
    try:
        content = scipy.io.loadmat(mat_path)
        points = np.asarray(content["pt3d_68"], dtype=np.float64)
        pose = np.asarray(content["Pose_Para"], dtype=np.float64).reshape(-1)
    except FileNotFoundError:
        raise DatasetLayoutError(f"{mat_path}: annotation not found") from None
    except KeyError as error:
        raise DatasetLayoutError(f"{mat_path}: no {error} entry; re-download AFLW2000-3D") \
            from None
    except Exception as error:  # noqa: BLE001 - scipy raises many types for corrupt files
        raise DatasetLayoutError(f"{mat_path}: cannot read annotation ({error}); "
                                 "re-download AFLW2000-3D") from None
    if points.shape != (3, 68) or pose.size < 3:
        raise DatasetLayoutError(f"{mat_path}: pt3d_68 is {points.shape} and Pose_Para has "
                                 f"{pose.size} values, expected (3, 68) and 7")
    landmarks68, head_pose = points[:2].T.copy(), pose[:3].copy()
    if not (np.isfinite(landmarks68).all() and np.isfinite(head_pose).all()):
        raise DatasetLayoutError(f"{mat_path}: annotation holds NaN or inf values")
    return AFLWAnnotation(landmarks68=landmarks68, head_pose=head_pose)


def annotated_landmarks5(root: str | Path, relative_path: str) -> np.ndarray | None:
    """5 landmarks from a photo's .mat, or None (logged) when it cannot be read."""
    mat_path = (Path(root) / relative_path).with_suffix(".mat")
    try:
        return landmarks5_from_68(read_annotation(mat_path).landmarks68)
    except DatasetLayoutError as error:
        log.warning("%s", error)
        return None


class AFLW2000Faces(ImageFolderFaces):
    """AFLW2000-3D photos aligned to the 224 template.

    Args:
        root: AFLW_DIR (see the module docstring).
        crop_size, allow_rotation, cache_path: as ``ImageFolderFaces``.

    Samples: image, path, landmarks5, transform, split ("test"), landmarks68 (68, 2) crop px,
    head_pose (3,) radians (pitch, yaw, roll). Photos whose .mat is unreadable are left out.
    """

    dataset_name = "AFLW2000"
    prepare_kind = "aflw2000"
    uses_predicted_landmarks68 = False  # pt3d_68 is the ground truth

    def __init__(self, root: str | Path, crop_size: int = CROP_SIZE,
                 allow_rotation: bool = True, cache_path: str | Path | None = None):
        root = Path(root)
        super().__init__(root, list_aflw_images(root), crop_size, allow_rotation, cache_path)
        self._annotations: dict[str, AFLWAnnotation] = {}
        for relative_path in self.relative_paths:
            try:
                self._annotations[relative_path] = read_annotation(
                    (root / relative_path).with_suffix(".mat"))
            except DatasetLayoutError as error:
                log.warning("left out: %s", error)
        self.relative_paths = [path for path in self.relative_paths
                               if path in self._annotations]
        if not self.relative_paths:
            raise DatasetLayoutError(f"{root}: no aligned photo has a readable .mat annotation; "
                                     "re-download AFLW2000-3D")

    def extra_fields(self, index: int, relative_path: str,
                     transform: np.ndarray) -> dict[str, Any]:
        annotation = self._annotations[relative_path]
        landmarks68 = apply_transform(transform, annotation.landmarks68)
        return {"split": "test", "landmarks68": torch.from_numpy(landmarks68).float(),
                "head_pose": torch.from_numpy(annotation.head_pose).float()}
