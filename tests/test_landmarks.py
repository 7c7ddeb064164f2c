"""perception.landmarks: dlib's 68 points on the astronaut sit where a face's parts are, in the
photo's pixels; the MTCNN box is reshaped into the box dlib expects; missing pieces give one line."""
import pickle
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data

from perception.detect import FaceDetector
from perception.landmarks import (JAW, LEFT_EYE, MOUTH, NOSE_TIP, RIGHT_EYE,
                                  LandmarkPredictorUnavailableError, Landmarks68Predictor,
                                  disagreement_with_landmarks5, dlib_box_from_mtcnn,
                                  landmarks5_from_68)


@pytest.fixture(scope="module")
def astronaut():
    """(image, MTCNN detection, 68 points): one detector run for the whole module."""
    image = data.astronaut()
    detection = FaceDetector().detect(image)[0]
    points = Landmarks68Predictor().predict(image, detection.box)
    return image, detection, points


def _inter_ocular(points):
    return float(np.linalg.norm(points[LEFT_EYE].mean(axis=0) - points[RIGHT_EYE].mean(axis=0)))


def test_prediction_is_68_float32_points_inside_the_face_box(astronaut):
    _, detection, points = astronaut
    assert points.shape == (68, 2) and points.dtype == np.float32
    x0, y0, x1, y1 = detection.box
    margin = 0.15 * (x1 - x0)
    assert (points[:, 0] > x0 - margin).all() and (points[:, 0] < x1 + margin).all()
    assert (points[:, 1] > y0 - margin).all() and (points[:, 1] < y1 + margin).all()
    assert _inter_ocular(points) > 0.3 * (x1 - x0)  # a face, not a collapsed cluster


def test_eyes_lie_above_the_nose_tip_and_the_nose_above_the_mouth(astronaut):
    _, _, points = astronaut
    eyes, nose, mouth = np.r_[points[LEFT_EYE], points[RIGHT_EYE]], points[NOSE_TIP], points[MOUTH]
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
    assert points[17:22, 1].mean() < points[LEFT_EYE, 1].min()  # each brow above its eye
    assert points[22:27, 1].mean() < points[RIGHT_EYE, 1].min()
    assert eyes[:, 0].min() < nose[0] < eyes[:, 0].max()  # nose between the eyes


def test_jaw_frames_the_eyes_and_the_mouth(astronaut):
    _, _, points = astronaut
    jaw = points[JAW]
    inner = np.r_[points[LEFT_EYE], points[RIGHT_EYE], points[MOUTH]]
    assert jaw[:, 0].min() < inner[:, 0].min() and inner[:, 0].max() < jaw[:, 0].max()
    assert jaw[8, 1] > points[MOUTH, 1].max()  # the chin is below the mouth
    assert jaw[[0, 16], 1].max() < points[MOUTH, 1].min()  # the jaw starts level with the eyes
    # The jaw goes down from each end to the chin.
    assert (np.diff(jaw[:9, 1]) >= 0).all() and (np.diff(jaw[8:, 1]) <= 0).all()


def test_left_and_right_are_named_by_the_image(astronaut):
    _, detection, points = astronaut
    assert points[LEFT_EYE, 0].max() < points[RIGHT_EYE, 0].min()
    assert points[17:22, 0].max() < points[22:27, 0].min()  # brows
    assert points[48, 0] < points[54, 0] and points[0, 0] < points[16, 0]
    assert (np.diff(points[JAW, 0]) >= 0).all()  # the jaw runs from image left to image right
    # Same order as MTCNN's 5: each derived point is nearest its own MTCNN point.
    five = landmarks5_from_68(points)
    distances = np.linalg.norm(five[:, None] - detection.landmarks5[None], axis=2)
    np.testing.assert_array_equal(distances.argmin(axis=1), np.arange(5))


def test_points_agree_with_the_detectors_five(astronaut):
    _, detection, points = astronaut
    disagreement = disagreement_with_landmarks5(points, detection.landmarks5, detection.box)
    assert disagreement < 0.05
    # Turning the points by 60 degrees about the face centre is caught.
    centre = points.mean(axis=0)
    angle = np.deg2rad(60.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned = (points - centre) @ rotation.T + centre
    assert disagreement_with_landmarks5(turned, detection.landmarks5, detection.box) > 0.12


def test_points_are_in_the_pixels_of_the_image_given(astronaut):
    image, detection, points = astronaut
    half = np.asarray(Image.fromarray(image).resize((256, 256), Image.Resampling.BILINEAR))
    # Pixel-index units: index i of the half-size image sits at 2 i + 0.5 of the full one.
    half_box = (detection.box + 0.5) / 2 - 0.5
    from_half = (Landmarks68Predictor().predict(half, half_box) + 0.5) * 2 - 0.5
    error = np.linalg.norm(from_half - points, axis=1).mean()
    assert error < 0.06 * _inter_ocular(points)


def test_the_mtcnn_box_becomes_a_square_like_dlibs_own_detector(astronaut):
    import dlib

    image, detection, _ = astronaut
    box = dlib_box_from_mtcnn(detection.box)
    assert box[2] - box[0] == pytest.approx(box[3] - box[1])
    rectangles = dlib.get_frontal_face_detector()(image, 1)
    hog = max(([r.left(), r.top(), r.right(), r.bottom()] for r in rectangles),
              key=lambda b: _iou(b, detection.box))

    assert _iou(box, hog) > 0.8
    assert _iou(box, hog) > _iou(detection.box, hog) + 0.05


def _iou(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    width = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    height = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_bad_box_or_image_is_refused():
    with pytest.raises(ValueError, match="box"):
        dlib_box_from_mtcnn([10.0, 10.0, 5.0, 40.0])
    with pytest.raises(ValueError, match="uint8 RGB"):
        Landmarks68Predictor().predict(np.zeros((50, 50), np.uint8), (5, 5, 40, 40))


def test_a_missing_or_wrong_model_file_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "nowhere.dat"
    with pytest.raises(LandmarkPredictorUnavailableError) as error:
        Landmarks68Predictor(missing).load()
    assert str(missing) in str(error.value) and "\n" not in str(error.value)
    assert "shape_predictor_68_face_landmarks.dat" in str(error.value)
    wrong = tmp_path / "wrong.dat"
    wrong.write_bytes(b"not a shape predictor")
    with pytest.raises(LandmarkPredictorUnavailableError, match="not a dlib shape predictor") as error:
        Landmarks68Predictor(wrong).predict(np.zeros((50, 50, 3), np.uint8), (5, 5, 40, 40))
    assert "\n" not in str(error.value)


def test_without_dlib_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(LandmarkPredictorUnavailableError, match="pip install dlib-bin") as error:
        Landmarks68Predictor().load()
    assert "\n" not in str(error.value)


def test_constructing_and_pickling_leave_the_model_unloaded(astronaut):
    image, detection, points = astronaut
    predictor = Landmarks68Predictor()
    assert predictor._predictor is None and "shape_predictor_68" in predictor.name
    predictor.load()
    copy = pickle.loads(pickle.dumps(predictor))
    assert copy._predictor is None
    np.testing.assert_array_equal(copy.predict(image, detection.box), points)
