"""Face alignment: 5 landmarks -> similarity transform -> 224 crop, its inverse, and its cache.

Template (the one source of truth is ``perception.template.TEMPLATE_LANDMARKS5``). Deep3DFaceRecon aligns a photo by
fitting its 5 standard 3D landmarks (``similarity_Lm3D_all.mat``: eye centres, nose tip, mouth
corners, in model units) to the detected ones, rescaling so that one model unit spans 102 px,
and cropping 224 x 224 around the fitted centre. A landmark (X, Y) of that standard therefore
lands at ``112 + 102 * (X, -Y)`` in Deep3D's crop. We take exactly those 5 pixel positions as
a fixed 2D template: the eyes at y ~ 82 (0.37 of the height) and about 63 px apart, the mouth
at y ~ 151, so the face fills the crop as in Deep3D's training data. For other crop sizes the
template scales with ``crop_size / 224``.

Deep3D's own fit is scale + translation only; ``alignment_transform`` fits a full similarity
(rotation too) by least squares (Umeyama) unless ``allow_rotation=False``. Fitted to MTCNN's
5 points (as Deep3D does), a frontal face's eyes land ~3-4 px below the template eyes: MTCNN's
mouth corners sit higher than the 68-point ones the template comes from.

Conventions: points are (x, y) pixels, x right, y down, in pixel-index units (the centre of
``image[i, j]`` is x=j, y=i). A transform is a (2, 3) float matrix ``[A | t]`` mapping a point
p of the original photo to ``A @ p + t`` in the crop. Landmark order is MTCNN's (see
``perception.detect``): left eye, right eye, nose, mouth left, mouth right, image-left/right.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from coarse.coefficients import REFERENCE_IMAGE_SIZE
from data.images import UnreadableImageError, image_to_tensor, read_rgb_image, tensor_to_image
from fileio import write_json_atomically
from perception.landmarks import (NUM_LANDMARKS, LandmarkPredictorUnavailableError,
                                  disagreement_with_landmarks5)
from perception.template import TEMPLATE_LANDMARKS5

log = logging.getLogger(__name__)

CROP_SIZE = REFERENCE_IMAGE_SIZE  # 224: the regressor's input size


def template_landmarks5(crop_size: int = CROP_SIZE) -> np.ndarray:
    """(5, 2) template landmark positions in pixels of a crop_size x crop_size crop."""
    # Scale about the crop's continuous corner (-0.5, -0.5) so pixel centres stay centred.
    return (TEMPLATE_LANDMARKS5 + 0.5) * (crop_size / CROP_SIZE) - 0.5


# ---------------------------------------------------------------------------- transforms

def _as_matrix(transform: np.ndarray | torch.Tensor) -> np.ndarray:
    """(2, 3) or (3, 3) -> (3, 3) float64 homogeneous matrix."""
    if isinstance(transform, torch.Tensor):
        transform = transform.detach().cpu().numpy()
    matrix = np.asarray(transform, dtype=np.float64)
    if matrix.shape == (3, 3):
        return matrix
    if matrix.shape != (2, 3):
        raise ValueError(f"expected a (2, 3) transform, got {matrix.shape}")
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def fit_similarity(source: np.ndarray, target: np.ndarray,
                   allow_rotation: bool = True) -> np.ndarray:
    """Least-squares similarity (scale, rotation, translation; no reflection) source -> target.

    source, target: (N, 2) points, N >= 2. allow_rotation=False fits scale and translation only.
    Returns (2, 3). Raises ValueError when the source points coincide.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2:
        raise ValueError(f"expected two (N, 2) point sets, got {source.shape}, {target.shape}")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = float((source_centred ** 2).sum())
    if not np.isfinite(source_variance) or source_variance < 1e-12:
        raise ValueError("landmarks are degenerate (all at one point)")
    if allow_rotation:
        # Umeyama (1991): rotation from the SVD of the cross-covariance.
        u, singular, vt = np.linalg.svd(target_centred.T @ source_centred)
        sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
        rotation = u @ sign @ vt
        scale = float(np.trace(np.diag(singular) @ sign)) / source_variance
    else:
        rotation = np.eye(2)
        scale = float((source_centred * target_centred).sum()) / source_variance
    linear = scale * rotation
    translation = target_mean - linear @ source_mean
    return np.hstack([linear, translation[:, None]])


def alignment_transform(landmarks5: np.ndarray, crop_size: int = CROP_SIZE,
                        allow_rotation: bool = True) -> np.ndarray:
    """(5, 2) landmarks in the photo -> (2, 3) transform photo pixels -> crop pixels."""
    return fit_similarity(landmarks5, template_landmarks5(crop_size), allow_rotation)


def apply_transform(transform: np.ndarray | torch.Tensor, points: np.ndarray) -> np.ndarray:
    """points: (N, 2) -> (N, 2) ``A @ p + t``."""
    matrix = _as_matrix(transform)
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def invert_transform(transform: np.ndarray | torch.Tensor) -> np.ndarray:
    """(2, 3) -> (2, 3) inverse (crop pixels -> photo pixels)."""
    return np.linalg.inv(_as_matrix(transform))[:2]


def compose_transforms(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) matrices -> (2, 3) ``outer(inner(p))``."""
    return (_as_matrix(outer) @ _as_matrix(inner))[:2]


def transform_scale(transform: np.ndarray | torch.Tensor) -> float:
    """Isotropic scale of a transform: output pixels per input pixel."""
    return math.sqrt(abs(np.linalg.det(_as_matrix(transform)[:2, :2])))


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def _warp(source: np.ndarray | torch.Tensor, source_to_target: np.ndarray, out_height: int,
          out_width: int) -> torch.Tensor:
    """Resample source onto an (out_height, out_width) grid; outside the source is 0.

    source: (h, w, C) uint8 array or (C, h, w) float tensor. Returns (C, out_height,
    out_width) float. Only the part of source under the target is converted and touched, and
    it is downscaled with an antialiasing filter first when the transform shrinks, so large
    photos neither alias nor cost a full-size resample.
    """
    if isinstance(source, np.ndarray):
        if source.ndim != 3:
            raise ValueError(f"expected an (H, W, C) image, got {source.shape}")
        height, width, channels = source.shape
    else:
        if source.dim() != 3:
            raise ValueError(f"expected a (C, H, W) image, got {tuple(source.shape)}")
        channels, height, width = source.shape
    to_source = invert_transform(source_to_target)
    corners = np.array([[-0.5, -0.5], [out_width - 0.5, -0.5], [-0.5, out_height - 0.5],
                        [out_width - 0.5, out_height - 0.5]])
    footprint = apply_transform(to_source, corners)
    x0 = max(int(math.floor(footprint[:, 0].min())) - 2, 0)
    y0 = max(int(math.floor(footprint[:, 1].min())) - 2, 0)
    x1 = min(int(math.ceil(footprint[:, 0].max())) + 3, width)
    y1 = min(int(math.ceil(footprint[:, 1].max())) + 3, height)
    if x0 >= x1 or y0 >= y1:
        dtype = torch.float32 if isinstance(source, np.ndarray) else source.dtype
        return torch.zeros(channels, out_height, out_width, dtype=dtype)
    if isinstance(source, np.ndarray):
        region = image_to_tensor(source[y0:y1, x0:x1])
    else:
        region = source[:, y0:y1, x0:x1]
    matrix = compose_transforms(source_to_target, _translation(x0, y0))
    scale = transform_scale(matrix)
    if scale < 1.0:
        new_height = max(1, round(region.shape[1] * scale))
        new_width = max(1, round(region.shape[2] * scale))
        factor_x, factor_y = new_width / region.shape[2], new_height / region.shape[1]
        region = F.interpolate(region[None], size=(new_height, new_width), mode="bilinear",
                               align_corners=False, antialias=True)[0]
        # Resized index x' = factor * (x + 0.5) - 0.5.
        resize = np.array([[factor_x, 0.0, 0.5 * factor_x - 0.5],
                           [0.0, factor_y, 0.5 * factor_y - 0.5]])
        matrix = compose_transforms(matrix, invert_transform(resize))
    to_region = invert_transform(matrix)
    # Normalised grid_sample coordinates (align_corners=False): u = (2 x + 1) / size - 1.
    normalise = np.array([[2.0 / region.shape[2], 0.0, 1.0 / region.shape[2] - 1.0],
                          [0.0, 2.0 / region.shape[1], 1.0 / region.shape[1] - 1.0]])
    to_grid = torch.from_numpy(compose_transforms(normalise, to_region)).to(region)
    xs = torch.arange(out_width, dtype=region.dtype, device=region.device)
    ys = torch.arange(out_height, dtype=region.dtype, device=region.device)
    grid = (to_grid[:, 0, None, None] * xs[None, None, :] + to_grid[:, 1, None, None]
            * ys[None, :, None] + to_grid[:, 2, None, None])  # (2, out_h, out_w)
    return F.grid_sample(region[None], grid.permute(1, 2, 0)[None], mode="bilinear",
                         padding_mode="zeros", align_corners=False)[0]


def warp_to_crop(image: np.ndarray | torch.Tensor, transform: np.ndarray | torch.Tensor,
                 crop_size: int = CROP_SIZE) -> torch.Tensor:
    """Cut the aligned face out of a photo.

    image: (H, W, 3) uint8 or (C, H, W) float tensor. transform: (2, 3) photo -> crop.
    Returns (C, crop_size, crop_size) float; pixels outside the photo are 0.
    """
    if isinstance(image, torch.Tensor) and not image.is_floating_point():
        image = image.float()
    return _warp(image, _as_matrix(transform)[:2], crop_size, crop_size)


def paste_back(render: torch.Tensor, mask: torch.Tensor, transform: np.ndarray | torch.Tensor,
               original: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Composite a crop-space render onto the original photo.

    render: (3, S, S) float in [0, 1], in crop pixels. mask: (S, S) or (1, S, S) float in
    [0, 1], 1 where the render replaces the photo. transform: (2, 3) photo -> crop, as used to
    cut the crop. original: (H, W, 3) uint8 or (3, H, W) float in [0, 1].
    Returns a new composite in the type and layout of ``original``; only pixels under the
    crop's footprint can change.
    """
    if mask.dim() == 2:
        mask = mask[None]
    crop_size = render.shape[-1]
    if render.shape[-2:] != mask.shape[-2:] or render.shape[-2] != crop_size:
        raise ValueError(f"render {tuple(render.shape)} and mask {tuple(mask.shape)} must be "
                         "square crops of one size")
    is_array = isinstance(original, np.ndarray)
    height, width = original.shape[:2] if is_array else original.shape[1:]
    to_photo = _as_matrix(invert_transform(transform))
    corners = np.array([[-0.5, -0.5], [crop_size - 0.5, -0.5], [-0.5, crop_size - 0.5],
                        [crop_size - 0.5, crop_size - 0.5]])
    footprint = apply_transform(to_photo, corners)
    x0 = max(int(math.floor(footprint[:, 0].min())), 0)
    y0 = max(int(math.floor(footprint[:, 1].min())), 0)
    x1 = min(int(math.ceil(footprint[:, 0].max())) + 1, width)
    y1 = min(int(math.ceil(footprint[:, 1].max())) + 1, height)
    composite = original.copy() if is_array else original.clone()
    if x0 >= x1 or y0 >= y1:
        return composite
    crop_to_box = compose_transforms(_translation(-x0, -y0), to_photo)
    layers = torch.cat([render.detach().float(), mask.detach().float()], dim=0).cpu()
    warped = _warp(layers, crop_to_box, y1 - y0, x1 - x0)
    alpha = warped[3:4].clamp(0.0, 1.0)
    if is_array:
        box = image_to_tensor(original[y0:y1, x0:x1])
        composite[y0:y1, x0:x1] = tensor_to_image(box * (1.0 - alpha) + warped[:3] * alpha)
    else:
        alpha, colour = alpha.to(original), warped[:3].to(original)
        box = composite[:, y0:y1, x0:x1]
        composite[:, y0:y1, x0:x1] = box * (1.0 - alpha) + colour * alpha
    return composite


# ---------------------------------------------------------------------------- per-photo alignment

ALIGNED, NO_FACE, UNREADABLE = "aligned", "no_face", "unreadable"
STATUSES = (ALIGNED, NO_FACE, UNREADABLE)
# 68 points whose eyes, nose tip and mouth corners stray further than this from MTCNN's 5,
# as a fraction of sqrt(box area), are recorded as missing: good predictions measure 0.01-0.08
# (LFW faces, the astronaut up to 30 degrees of roll), collapsed ones 0.2 (perception.landmarks).
MAX_LANDMARKS68_DISAGREEMENT = 0.12


def encode_points(points: np.ndarray) -> str:
    """(N, 2) -> base64 of N*2 little-endian float32 (x0, y0, x1, ...): exact, 11 characters a
    point (a JSON list takes 13-17), and one string to parse instead of 2N numbers when a cache
    of 200k photos loads."""
    return base64.b64encode(np.asarray(points, dtype="<f4").tobytes()).decode("ascii")


def decode_points(text: str, count: int) -> np.ndarray:
    """Inverse of encode_points: (count, 2) float32. Raises ValueError on a wrong length."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != count * 2 * 4:
        raise ValueError(f"expected {count} encoded points, got {len(raw)} bytes")
    return np.frombuffer(raw, dtype="<f4").reshape(count, 2).astype(np.float32)


@dataclass
class AlignmentRecord:
    """The alignment of one photo, as cached.

    landmarks5: (5, 2) photo pixels; box: (4,) x0, y0, x1, y1 photo pixels; transform: (2, 3)
    photo -> CROP_SIZE crop. They are None unless status is "aligned". reason says why a
    photo was skipped, or notes something about an aligned one (several faces).

    landmarks68: (68, 2) float32 photo pixels, dlib's prediction (``perception.landmarks``), or
    None. Kept in photo pixels like landmarks5, so that a data set maps them with the transform
    it uses (its crop size, with or without rotation). landmarks68_missing says why an aligned
    photo has none. Both empty means not predicted yet (a cache written before the 68 points
    existed, or a run without dlib): the next prepare run with dlib adds them.
    """

    status: str
    reason: str = ""
    landmarks5: np.ndarray | None = None
    box: np.ndarray | None = None
    score: float | None = None
    transform: np.ndarray | None = None
    faces: int = 0
    image_size: tuple[int, int] | None = None  # (width, height)
    landmarks_source: str = ""  # "mtcnn" or "annotation"
    file_size: int | None = None
    mtime_ns: int | None = None
    landmarks68: np.ndarray | None = None
    landmarks68_missing: str = ""

    @property
    def landmarks68_attempted(self) -> bool:
        """True once a prepare run has predicted the 68 points or recorded why they are missing."""
        return self.landmarks68 is not None or bool(self.landmarks68_missing)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict; arrays become nested lists rounded to 1/1000 px."""
        def rounded(array, digits=3):
            return None if array is None else np.round(np.asarray(array), digits).tolist()

        entry: dict[str, Any] = {"status": self.status}
        if self.reason:
            entry["reason"] = self.reason
        if self.status == ALIGNED:
            entry.update(landmarks5=rounded(self.landmarks5), box=rounded(self.box),
                         score=None if self.score is None else round(float(self.score), 5),
                         transform=rounded(self.transform, 6),
                         landmarks_source=self.landmarks_source)
            if self.landmarks68 is not None:
                entry["landmarks68"] = encode_points(self.landmarks68)
            elif self.landmarks68_missing:
                entry["landmarks68_missing"] = self.landmarks68_missing
        entry.update(faces=self.faces, image_size=self.image_size, file_size=self.file_size,
                     mtime_ns=self.mtime_ns)
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> AlignmentRecord:
        def array(key, shape):
            value = entry.get(key)
            return None if value is None else np.asarray(value, dtype=np.float64).reshape(shape)

        status = entry["status"]
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        if status == ALIGNED and entry.get("landmarks5") is None:
            raise ValueError("an aligned entry without landmarks5")
        image_size = entry.get("image_size")
        landmarks68 = entry.get("landmarks68")  # absent in caches written before the 68 points
        if isinstance(landmarks68, str):
            landmarks68 = decode_points(landmarks68, NUM_LANDMARKS)
        elif landmarks68 is not None:
            landmarks68 = np.asarray(landmarks68, dtype=np.float32).reshape(NUM_LANDMARKS, 2)
        return cls(status=status, reason=entry.get("reason", ""),
                   landmarks5=array("landmarks5", (5, 2)), box=array("box", (4,)),
                   score=entry.get("score"), transform=array("transform", (2, 3)),
                   faces=int(entry.get("faces", 0)),
                   image_size=None if image_size is None else tuple(image_size),
                   landmarks_source=entry.get("landmarks_source", ""),
                   file_size=entry.get("file_size"), mtime_ns=entry.get("mtime_ns"),
                   landmarks68=landmarks68,
                   landmarks68_missing=entry.get("landmarks68_missing", ""))

    def matches_file(self, path: Path) -> bool:
        """True when path still has the size and modification time recorded here."""
        try:
            stat = path.stat()
        except OSError:
            return self.file_size is None  # recorded as missing, still missing
        return stat.st_size == self.file_size and stat.st_mtime_ns == self.mtime_ns


def record_from_landmarks(landmarks5: np.ndarray, source: str, reason: str = "",
                          box: np.ndarray | None = None, score: float | None = None,
                          faces: int = 1) -> AlignmentRecord:
    """An "aligned" record from 5 landmarks (or "no_face" when they are degenerate)."""
    landmarks5 = np.asarray(landmarks5, dtype=np.float64).reshape(5, 2)
    try:
        transform = alignment_transform(landmarks5)
    except ValueError as error:
        return AlignmentRecord(NO_FACE, reason=f"{source} landmarks unusable: {error}",
                               faces=faces)
    if box is None:
        box = np.concatenate([landmarks5.min(axis=0), landmarks5.max(axis=0)])
    return AlignmentRecord(ALIGNED, reason=reason, landmarks5=landmarks5, box=np.asarray(box),
                           score=score, transform=transform, faces=faces,
                           landmarks_source=source)


def align_photo(image: np.ndarray, detector) -> AlignmentRecord:
    """Detect faces in one photo and align the largest.

    image: (H, W, 3) uint8. detector: anything with ``detect(image) -> list[FaceDetection]``
    sorted largest first (``perception.detect.FaceDetector``).
    """
    height, width = image.shape[:2]
    min_side = getattr(detector, "min_face_size", 20)
    if min(height, width) < min_side:
        return AlignmentRecord(NO_FACE, reason=f"image is {width}x{height} px, too small to "
                                               f"hold a face (needs {min_side} px)",
                               image_size=(width, height))
    detections = detector.detect(image)
    if not detections:
        return AlignmentRecord(NO_FACE, reason="no face detected", image_size=(width, height))
    largest = detections[0]
    reason = f"{len(detections)} faces detected; aligned the largest" if len(detections) > 1 \
        else ""
    record = record_from_landmarks(largest.landmarks5, "mtcnn", reason, box=largest.box,
                                   score=largest.score, faces=len(detections))
    record.image_size = (width, height)
    return record


def add_landmarks68(record: AlignmentRecord, image: np.ndarray, predictor) -> None:
    """Predict the 68 points of an aligned record's face, in place.

    image: (H, W, 3) uint8, the photo the record was aligned on. predictor:
    ``perception.landmarks.Landmarks68Predictor`` (or anything with its ``predict``). A failure
    or a prediction that disagrees with the detector's 5 landmarks leaves landmarks68 None and
    says why in landmarks68_missing; only LandmarkPredictorUnavailableError is raised.
    """
    if record.status != ALIGNED:
        return
    record.landmarks68, record.landmarks68_missing = None, ""
    if record.landmarks_source != "mtcnn" or record.box is None:
        # A box around annotated points is not a face box; dlib's first guess would be off.
        record.landmarks68_missing = "no detector box (aligned from annotated landmarks)"
        return
    try:
        points = np.asarray(predictor.predict(image, record.box), dtype=np.float32)
    except LandmarkPredictorUnavailableError:
        raise
    except Exception as error:  # noqa: BLE001 - one odd photo must not stop a whole run
        record.landmarks68_missing = f"dlib failed: {type(error).__name__}: {error}"
        return
    if points.shape != (NUM_LANDMARKS, 2) or not np.isfinite(points).all():
        record.landmarks68_missing = f"dlib returned {points.shape} points, not 68 finite ones"
        return
    disagreement = disagreement_with_landmarks5(points, record.landmarks5, record.box)
    if disagreement > MAX_LANDMARKS68_DISAGREEMENT:
        record.landmarks68_missing = (
            f"dlib's 68 points disagree with the detector's 5 landmarks ({disagreement:.2f} of "
            f"the face size, over {MAX_LANDMARKS68_DISAGREEMENT}; face tilted over ~30 degrees "
            "or in profile?)")
        return
    record.landmarks68 = points


def add_landmarks68_to_file(path: str | Path, record: AlignmentRecord, predictor) -> None:
    """Read a photo again and add the 68 points to its aligned record (a cache written without
    them). An unreadable photo is recorded as missing its 68 points, never raised."""
    try:
        image = read_rgb_image(path)
    except UnreadableImageError as error:
        record.landmarks68, record.landmarks68_missing = None, f"unreadable: {error.reason}"
        return
    add_landmarks68(record, image, predictor)


def align_image_file(path: str | Path, detector, landmark_predictor=None) -> AlignmentRecord:
    """Read, detect and align one file, and with landmark_predictor, predict the 68 points of
    the aligned face (``add_landmarks68``). Never raises for a bad file: it returns an
    "unreadable" or "no_face" record with the reason (logged) instead."""
    path = Path(path)
    try:
        stat = path.stat()
        file_size, mtime_ns = stat.st_size, stat.st_mtime_ns
    except OSError:
        file_size = mtime_ns = None
    try:
        image = read_rgb_image(path)
    except UnreadableImageError as error:
        log.warning("skipped %s: %s", path, error.reason)
        record = AlignmentRecord(UNREADABLE, reason=error.reason)
    else:
        try:
            record = align_photo(image, detector)
        except Exception as error:  # noqa: BLE001 - one odd photo must not stop a whole run
            reason = f"face detector failed: {type(error).__name__}: {error}"
            log.warning("skipped %s: %s", path, reason)
            record = AlignmentRecord(UNREADABLE, reason=reason,
                                     image_size=(image.shape[1], image.shape[0]))
        else:
            if record.reason:
                log.info("%s: %s", path, record.reason)
            if landmark_predictor is not None:
                add_landmarks68(record, image, landmark_predictor)
                if record.landmarks68_missing:
                    log.info("%s: no 68 landmarks: %s", path, record.landmarks68_missing)
    record.file_size, record.mtime_ns = file_size, mtime_ns
    return record


# ---------------------------------------------------------------------------- cache

CACHE_FILE_NAME = ".faid_alignment.json"
CACHE_VERSION = 1


class AlignmentCacheError(ValueError):
    """A cache file that exists but cannot be used (corrupt, or another format version)."""


def user_cache_root() -> Path:
    """$FAID_CACHE_DIR, else $XDG_CACHE_HOME/faid_recon, else ~/.cache/faid_recon."""
    if os.environ.get("FAID_CACHE_DIR"):
        return Path(os.environ["FAID_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "faid_recon"


def fallback_cache_path(root: str | Path) -> Path:
    """The cache location used when the data set folder is read-only."""
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return user_cache_root() / key / "alignment.json"


def directory_is_writable(directory: Path) -> bool:
    """True when a file can be created in directory (tried, not guessed from permissions)."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def writable_cache_path(root: str | Path) -> Path:
    """Where a prepare run writes: next to the data, else the user cache."""
    root = Path(root)
    return root / CACHE_FILE_NAME if directory_is_writable(root) else fallback_cache_path(root)


def existing_cache_path(root: str | Path) -> Path | None:
    """The newest existing cache for a data set folder, or None."""
    candidates = [path for path in (Path(root) / CACHE_FILE_NAME, fallback_cache_path(root))
                  if path.is_file()]
    return max(candidates, key=lambda path: path.stat().st_mtime_ns) if candidates else None


@dataclass
class AlignmentCache:
    """Alignment records of one data set, keyed by POSIX path relative to the data set root.

    The file is JSON: version, crop_size, template, detector, landmarks68_predictor and entries
    (``AlignmentRecord.to_json``). The 68 points were added within version 1: an aligned entry
    holds "landmarks68" (base64 float32, see ``encode_points``) or "landmarks68_missing" (the
    reason), and an entry with neither (an older cache) loads as "not predicted yet". Older
    code ignores both keys, so caches stay readable both ways.
    """

    path: Path
    entries: dict[str, AlignmentRecord] = field(default_factory=dict)
    detector_name: str = ""
    landmark_predictor_name: str = ""

    @classmethod
    def load(cls, path: str | Path) -> AlignmentCache:
        """Read a cache file; an absent file gives an empty cache.

        Raises AlignmentCacheError when the file is corrupt or of another version.
        """
        path = Path(path)
        if not path.is_file():
            return cls(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise AlignmentCacheError(f"{path}: alignment cache is corrupt ({error}); "
                                      "delete it and prepare again") from None
        if not isinstance(payload, dict) or payload.get("version") != CACHE_VERSION:
            version = payload.get("version") if isinstance(payload, dict) else None
            raise AlignmentCacheError(f"{path}: alignment cache version {version!r}, expected "
                                      f"{CACHE_VERSION}; prepare again to rebuild it")
        try:
            entries = {key: AlignmentRecord.from_json(value)
                       for key, value in payload.get("entries", {}).items()}
        except (KeyError, TypeError, ValueError) as error:
            raise AlignmentCacheError(f"{path}: alignment cache has a bad entry ({error}); "
                                      "delete it and prepare again") from None
        template = np.asarray(payload.get("template", []), dtype=np.float64)
        if template.shape != (5, 2) or not np.allclose(template, TEMPLATE_LANDMARKS5,
                                                      atol=1e-3):
            # Written with another template: the landmarks still hold, the transforms don't.
            for record in entries.values():
                if record.status == ALIGNED:
                    record.transform = alignment_transform(record.landmarks5)
        return cls(path, entries, payload.get("detector", ""),
                   payload.get("landmarks68_predictor", ""))

    def save(self, path: Path | None = None) -> None:
        """Write atomically to path (default: self.path)."""
        payload = {"version": CACHE_VERSION, "crop_size": CROP_SIZE,
                   "template": TEMPLATE_LANDMARKS5.tolist(), "detector": self.detector_name,
                   "landmarks68_predictor": self.landmark_predictor_name,
                   "entries": {key: record.to_json() for key, record in self.entries.items()}}
        write_json_atomically(Path(path or self.path), payload)

    def counts(self, keys=None) -> dict[str, int]:
        """Number of records per status, over keys (default: all)."""
        keys = self.entries.keys() if keys is None else keys
        counts = dict.fromkeys(STATUSES, 0)
        for key in keys:
            record = self.entries.get(key)
            if record is not None:
                counts[record.status] += 1
        return counts
