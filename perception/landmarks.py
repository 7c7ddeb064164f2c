"""68 facial landmarks on real photos with dlib's shape predictor (iBUG 300-W scheme).

The model is ``shape_predictor_68_face_landmarks.dat`` from the `face_recognition_models` PyPI package,
run by dlib (the `dlib-bin` wheel, imported as ``dlib``). Both are needed only when points are predicted:
importing this module and constructing :class:`Landmarks68Predictor` touch neither.

The 68 points, 0-based, named by where they appear in the image (as ``perception.detect`` does):

    0-16 jaw line, image left to image right      17-21, 22-26 brows (image left, image right)
    27-30 nose bridge down to the tip (30)         31-35 nostrils, image left to right
    36-41 eye on the image's left                  42-47 eye on the image's right
    48-59 outer lip (48, 54 the image-left and image-right corners)   60-67 inner lip

Which box dlib expects. The predictor (Kazemi & Sullivan's regression trees) starts from a mean shape
placed in the face box, and was trained with the boxes of dlib's HOG face detector: square, from the brows
to just under the lower lip. MTCNN's boxes are taller (about 1.3 x their width, from the forehead to the
chin). Measured on the 100 faces of ``skimage.data.lfw_subset()`` (upscaled 5x, MTCNN and HOG both found 94)
and the astronaut: the HOG box is square, its side 0.96 x sqrt(MTCNN width x height) (spread 6 %), its
centre 0.065 x MTCNN height below MTCNN's centre (HOG's top edge 0.15 x height lower, its bottom edge about
the same). :func:`dlib_box_from_mtcnn` applies that; a grid search over both numbers confirms them as the
minimum. With it, the 68 points differ from those predicted from the HOG box by 1.6 % of the inter-ocular
distance on average (p90 2.6 %), against 4.2 % (p90 5.7 %) with the raw MTCNN box. It matters because the
trees' first guess is the mean shape in the box: a box shifted up by the forehead starts the eyes on the
brows.

Limits (measured on the astronaut turned in the image plane): the points follow the face up to about 30
degrees of roll, and collapse beyond (0.66 x the inter-ocular distance off at 40 degrees), because the
training faces were upright and the box is axis-aligned. :func:`disagreement_with_landmarks5` catches
that case: 0.012-0.019 up to 30 degrees, 0.2 beyond, 0.026 on average (max 0.082) over the LFW faces.

Coordinates are pixels of the image passed in, x right, y down, in pixel-index units (the centre of
``image[i, j]`` is x=j, y=i), the convention of ``perception.detect`` and dlib alike. dlib returns whole
pixels (its ``full_object_detection`` holds integer points), so the points are quantised to 1 px: about
1 % of the inter-ocular distance on a CelebA photo, a fifth of the predictor's own error.
"""
from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

import numpy as np

SHAPE_PREDICTOR_FILENAME = "shape_predictor_68_face_landmarks.dat"
NUM_LANDMARKS = 68
INSTALL_DLIB = "run `pip install dlib-bin`"
INSTALL_MODELS = "run `pip install face_recognition_models==0.3.0`"

# The HOG-shaped box from an MTCNN box (see the module docstring for the measurements).
HOG_BOX_SIDE_PER_MTCNN_SIZE = 0.96      # square side / sqrt(MTCNN width * height)
HOG_BOX_DROP_PER_MTCNN_HEIGHT = 0.065   # centre moves down by this fraction of the MTCNN height

# 0-based iBUG indices of the points MTCNN's 5 correspond to (eye centres are ring means).
JAW = slice(0, 17)
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)
NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = 30, 48, 54
MOUTH = slice(48, 68)


class LandmarkPredictorUnavailableError(RuntimeError):
    """dlib or the 68-point model file is missing or unreadable."""


def landmarks5_from_68(points68: np.ndarray) -> np.ndarray:
    """(68, 2) -> (5, 2) float64 in MTCNN's order: eye centres, nose tip, mouth corners (image left first)."""
    points68 = np.asarray(points68, dtype=np.float64)
    if points68.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points68.shape}")
    return np.stack([points68[LEFT_EYE].mean(axis=0), points68[RIGHT_EYE].mean(axis=0),
                     points68[NOSE_TIP], points68[MOUTH_LEFT], points68[MOUTH_RIGHT]])


def dlib_box_from_mtcnn(box: np.ndarray | tuple[float, float, float, float]) -> np.ndarray:
    """The box dlib's HOG detector would give for a face MTCNN boxed.

    box: (4,) x0, y0, x1, y1 pixels (``perception.detect.FaceDetection.box``).
    Returns (4,) float64 x0, y0, x1, y1 of a square box.
    """
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64).reshape(4)
    width, height = x1 - x0, y1 - y0
    if not (np.isfinite([x0, y0, x1, y1]).all() and width > 0 and height > 0):
        raise ValueError(f"expected a box x0 < x1, y0 < y1, got {[x0, y0, x1, y1]}")
    half = 0.5 * HOG_BOX_SIDE_PER_MTCNN_SIZE * np.sqrt(width * height)
    centre_x = 0.5 * (x0 + x1)
    centre_y = 0.5 * (y0 + y1) + HOG_BOX_DROP_PER_MTCNN_HEIGHT * height
    return np.array([centre_x - half, centre_y - half, centre_x + half, centre_y + half])


def disagreement_with_landmarks5(points68: np.ndarray, landmarks5: np.ndarray,
                                 box: np.ndarray | tuple[float, float, float, float]) -> float:
    """How far the 68 points stray from the detector's 5 landmarks, as a fraction of the face size.

    points68: (68, 2); landmarks5: (5, 2) in MTCNN's order; box: (4,) the detector's box, all in the same
    pixels. Returns the mean distance between ``landmarks5_from_68(points68)`` and landmarks5, over
    sqrt(box width x box height). Good predictions give about 0.01-0.05, collapsed ones about 0.2.
    """
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64).reshape(4)
    size = np.sqrt(max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6))
    distances = np.linalg.norm(landmarks5_from_68(points68) - np.asarray(landmarks5, dtype=np.float64),
                               axis=1)
    return float(distances.mean() / size)


def default_shape_predictor_path() -> Path:
    """``shape_predictor_68_face_landmarks.dat`` inside the installed `face_recognition_models` package."""
    from perception.dlib_resnet import DlibModelError, default_dlib_model_path

    try:
        return default_dlib_model_path(SHAPE_PREDICTOR_FILENAME)
    except DlibModelError:
        raise LandmarkPredictorUnavailableError(
            f"{SHAPE_PREDICTOR_FILENAME}: the face_recognition_models package is not installed; "
            f"{INSTALL_MODELS}") from None


@functools.lru_cache(maxsize=2)
def _load_shape_predictor(path: str):
    """One dlib.shape_predictor per file and process (the file is 100 MB; loading takes ~0.5 s)."""
    import dlib

    return dlib.shape_predictor(path)


class Landmarks68Predictor:
    """dlib's 68-point shape predictor, loaded on first use.

    Args:
        model_path: the ``.dat`` file (default: the one in `face_recognition_models`).

    Pickles without the loaded model (data loader workers load their own).
    """

    def __init__(self, model_path: str | Path | None = None):
        self.model_path = None if model_path is None else Path(model_path)
        self._predictor = None

    @property
    def name(self) -> str:
        """Short description recorded next to cached results."""
        try:
            version = importlib.metadata.version("dlib-bin")
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        file_name = self.model_path.name if self.model_path is not None else SHAPE_PREDICTOR_FILENAME
        return f"dlib {version} {file_name}"

    def load(self) -> Landmarks68Predictor:
        """Load dlib and the model file now. Raises LandmarkPredictorUnavailableError (one line) when
        either is missing or the file is not a shape predictor."""
        if self._predictor is not None:
            return self
        try:
            import dlib  # noqa: F401 - checked here so the error names what to install
        except ImportError:
            raise LandmarkPredictorUnavailableError(
                f"dlib is not installed, needed for 68-point landmarks on photos; {INSTALL_DLIB}") from None
        path = self.model_path if self.model_path is not None else default_shape_predictor_path()
        hint = INSTALL_MODELS if self.model_path is None else \
            f"pass the path of dlib's {SHAPE_PREDICTOR_FILENAME} ({INSTALL_MODELS})"
        if not path.is_file():
            raise LandmarkPredictorUnavailableError(f"{path}: file not found; {hint}")
        try:
            self._predictor = _load_shape_predictor(str(path.resolve()))
        except RuntimeError as error:  # dlib's serialization_error derives from RuntimeError
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise LandmarkPredictorUnavailableError(
                f"{path}: not a dlib shape predictor ({message}); {hint}") from None
        return self

    def predict(self, image: np.ndarray, box: np.ndarray | tuple[float, float, float, float],
                box_from_mtcnn: bool = True) -> np.ndarray:
        """The 68 landmarks of the face in box.

        image: (H, W, 3) uint8 RGB. box: (4,) x0, y0, x1, y1 pixels, MTCNN's box of the face
            (``perception.detect.FaceDetection.box``); box_from_mtcnn=False takes it as a dlib-HOG-shaped
            box as is.
        Returns (68, 2) float32 (x, y) pixels of image, in the order of the module docstring. dlib always
        returns 68 points; check them against the detector with ``disagreement_with_landmarks5``.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        box = dlib_box_from_mtcnn(box) if box_from_mtcnn else np.asarray(box, dtype=np.float64).reshape(4)
        self.load()
        import dlib

        rectangle = dlib.rectangle(*(int(round(value)) for value in box))
        shape = self._predictor(np.ascontiguousarray(image), rectangle)
        return np.array([(point.x, point.y) for point in shape.parts()], dtype=np.float32)

    def __getstate__(self) -> dict:
        return {"model_path": self.model_path, "_predictor": None}
