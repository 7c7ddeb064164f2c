"""Face detection and 5 facial landmarks with MTCNN (facenet-pytorch 2.5.3).

The P-, R- and O-net weights ship inside the facenet-pytorch wheel
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``) and are read from there: constructing a
:class:`FaceDetector` never touches the network. It runs on the CPU unless told otherwise.

Coordinates are in pixels of the image passed in, x to the right and y down, in pixel-index
units (the centre of pixel ``image[i, j]`` is at x=j, y=i).

The 5 landmarks come in MTCNN's order, named by where they appear in the image (not the
subject's own left/right):

    0 left eye (image left), 1 right eye (image right), 2 nose tip,
    3 mouth left corner (image left), 4 mouth right corner (image right).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
MTCNN_WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")


class DetectorUnavailableError(RuntimeError):
    """facenet-pytorch or the MTCNN weight files it ships are missing."""


@dataclass(frozen=True)
class FaceDetection:
    """One detected face.

    box: (4,) float, x0, y0, x1, y1 in pixels.
    score: detection probability in [0, 1].
    landmarks5: (5, 2) float, (x, y) in pixels, in the order of ``LANDMARK_NAMES``.
    """

    box: np.ndarray
    score: float
    landmarks5: np.ndarray

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def mtcnn_weights_dir() -> Path:
    """The folder inside the installed facenet-pytorch package that holds the MTCNN weights."""
    try:
        spec = importlib.util.find_spec("facenet_pytorch")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise DetectorUnavailableError(
            "facenet-pytorch is not installed; run `pip install facenet-pytorch==2.5.3`")
    return Path(spec.origin).parent / "data"


def mtcnn_version() -> str:
    """The installed facenet-pytorch version, e.g. '2.5.3'."""
    try:
        return importlib.metadata.version("facenet-pytorch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class FaceDetector:
    """MTCNN face detector returning boxes, scores and 5 landmarks for every face.

    Args:
        device: torch device for the three small networks (CPU by default).
        min_face_size: smallest face searched for, in pixels of the (possibly downscaled)
            detection image. Images whose shorter side is below it have no detections.
        thresholds: MTCNN's three stage thresholds.
        max_side: images whose longer side exceeds this are downscaled (antialiased) before
            detection, which bounds time and memory on very large photos; results are
            mapped back to the input's pixels. Faces smaller than
            ``min_face_size * longer_side / max_side`` pixels are then missed.
        num_threads: torch CPU threads while detecting (restored afterwards); None leaves
            torch's setting. MTCNN runs many tiny convolutions that gain little from
            intra-op threads and slow down 3-9x when cores are shared (measured on 2 busy
            cores), hence 1.
    """

    def __init__(self, device: str | torch.device = "cpu", min_face_size: int = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 max_side: int = 1024, num_threads: int | None = 1):
        weights_dir = mtcnn_weights_dir()
        missing = [name for name in MTCNN_WEIGHT_FILES if not (weights_dir / name).is_file()]
        if missing:
            raise DetectorUnavailableError(
                f"{weights_dir}: MTCNN weights {', '.join(missing)} are missing; "
                "reinstall with `pip install --force-reinstall facenet-pytorch==2.5.3`")
        from facenet_pytorch import MTCNN  # the constructor loads the wheel's .pt files

        self.device = torch.device(device)
        self.min_face_size = int(min_face_size)
        self.max_side = int(max_side)
        self.num_threads = num_threads
        self._mtcnn = MTCNN(min_face_size=self.min_face_size, thresholds=list(thresholds),
                            keep_all=True, post_process=False, device=self.device)
        self._mtcnn.eval()

    @property
    def name(self) -> str:
        """Short description recorded next to cached results."""
        return f"facenet-pytorch {mtcnn_version()} MTCNN (min_face_size={self.min_face_size})"

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Detect all faces in one RGB image.

        image: (H, W, 3) uint8 RGB.
        Returns the detections sorted by box area, largest first; an empty list when there is
        no face or the image is smaller than ``min_face_size``.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} "
                             f"{image.dtype}")
        height, width = image.shape[:2]
        downscaled = max(height, width) > self.max_side
        if downscaled:
            scale = self.max_side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
            # Per-axis factors after rounding, as (x, y).
            factors = np.array([size[0] / width, size[1] / height])
        if min(image.shape[:2]) < self.min_face_size:
            return []
        previous_threads = torch.get_num_threads()
        limit_threads = self.num_threads is not None and self.device.type == "cpu"
        if limit_threads:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                boxes, scores, points = self._mtcnn.detect(np.ascontiguousarray(image),
                                                           landmarks=True)
        finally:
            if limit_threads:
                torch.set_num_threads(previous_threads)
        if boxes is None:
            return []
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
        if downscaled:
            # Pixel centres: index i in the small image sits at (i + 0.5) / factor - 0.5.
            boxes = ((boxes.reshape(-1, 2, 2) + 0.5) / factors - 0.5).reshape(-1, 4)
            points = (points + 0.5) / factors - 0.5
        detections = [FaceDetection(box=box, score=float(score), landmarks5=landmarks)
                      for box, score, landmarks in zip(boxes, scores, points)]
        return sorted(detections, key=lambda detection: detection.area, reverse=True)
