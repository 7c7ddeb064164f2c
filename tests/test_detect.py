"""perception.detect: MTCNN from the wheel's weights; boxes, scores, 5 landmarks in MTCNN order."""
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from perception.detect import (LANDMARK_NAMES, MTCNN_WEIGHT_FILES, FaceDetector,
                               mtcnn_weights_dir)


def _resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def astronaut_250():
    return _resized(data.astronaut(), 250, 250)


def test_weights_ship_inside_the_installed_package():
    weights_dir = mtcnn_weights_dir()
    assert "facenet_pytorch" in weights_dir.parts
    for name in MTCNN_WEIGHT_FILES:
        assert (weights_dir / name).stat().st_size > 10_000


def test_detector_is_built_and_runs_without_network(monkeypatch, astronaut_250):
    def refuse(*args, **kwargs):
        raise AssertionError("the detector tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    offline_detector = FaceDetector()
    assert offline_detector.device.type == "cpu"
    assert len(offline_detector.detect(astronaut_250)) == 1


def test_landmarks_come_in_mtcnn_order_inside_the_box(detector, astronaut_250):
    detections = detector.detect(astronaut_250)
    assert len(detections) == 1
    face = detections[0]
    assert face.score > 0.95
    assert face.landmarks5.shape == (5, 2) and face.box.shape == (4,)
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks5
    assert LANDMARK_NAMES == ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
    assert left_eye[0] < nose[0] < right_eye[0]          # image-left / image-right
    assert mouth_left[0] < nose[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    x0, y0, x1, y1 = face.box
    assert np.all((face.landmarks5[:, 0] > x0) & (face.landmarks5[:, 0] < x1))
    assert np.all((face.landmarks5[:, 1] > y0) & (face.landmarks5[:, 1] < y1))
    # The astronaut's face sits about 205..247 px (eyes) in the 512 px original.
    np.testing.assert_allclose(left_eye * 512 / 250, [205, 102], atol=6)


def test_no_face_in_a_flat_image_or_one_smaller_than_the_minimum_face(detector):
    ys, xs = np.mgrid[0:120, 0:160]
    flat = np.stack([xs, ys, xs + ys], axis=-1).astype(np.uint8)
    assert detector.detect(flat) == []
    assert detector.detect(np.zeros((1, 1, 3), np.uint8)) == []
    assert detector.detect(np.zeros((10, 400, 3), np.uint8)) == []


def test_several_faces_are_sorted_largest_first(detector, astronaut_250):
    canvas = np.full((250, 420, 3), 200, np.uint8)
    canvas[:, :250] = astronaut_250
    canvas[60:185, 270:395] = _resized(astronaut_250, 125, 125)
    detections = detector.detect(canvas)
    assert len(detections) == 2
    assert detections[0].area > 2.5 * detections[1].area
    assert detections[0].landmarks5[:, 0].max() < 250 < detections[1].landmarks5[:, 0].min()


def test_large_images_are_downscaled_and_landmarks_mapped_back(detector):
    large = _resized(data.astronaut(), 1000, 1000)
    reference = detector.detect(_resized(large, 250, 250))[0].landmarks5
    scaled = FaceDetector(max_side=250).detect(large)[0].landmarks5
    # Same pixels seen by MTCNN, so the only difference is the mapping back (pixel centres).
    np.testing.assert_allclose(scaled, (reference + 0.5) * 4 - 0.5, atol=0.05)


def test_detect_rejects_non_uint8_rgb(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((50, 50), np.uint8))


def test_detection_leaves_torch_thread_setting_as_it_was(detector, astronaut_250):
    before = torch.get_num_threads()
    detector.detect(astronaut_250)
    assert torch.get_num_threads() == before
