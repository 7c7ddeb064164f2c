"""data.aflw2000: jpg + mat pairs, annotated 68 points and pose, fallback alignment.

Runs on a tiny fake AFLW2000-3D tree made of astronaut crops and scipy-written .mat files.
"""
import logging

import numpy as np
import pytest
import scipy.io
from PIL import Image
from skimage import data

from data.aflw2000 import (AFLW2000Faces, annotated_landmarks5, find_image_dir,
                           landmarks5_from_68, list_aflw_images, read_annotation)
from data.align import ALIGNED, CROP_SIZE, AlignmentCache, apply_transform
from data.image_folder import DatasetLayoutError
from data.images import read_rgb_image
from data.prepare import prepare_alignment
from perception.detect import FaceDetector

POSE = np.array([[0.1, -0.6, 0.05, 200.0, 210.0, 0.0, 0.0012]])  # pitch, yaw, roll, t, scale


def _face_photo(shift: int) -> np.ndarray:
    crop = data.astronaut()[0 + shift:300 + shift, 75 + shift:375 + shift]
    return np.asarray(Image.fromarray(crop).resize((240, 240), Image.Resampling.BILINEAR))


def _landmarks68_around(landmarks5: np.ndarray) -> np.ndarray:
    """68 points whose eye rings, nose tip and mouth corners reproduce landmarks5."""
    points = np.tile(landmarks5[2], (68, 1))
    ring = np.array([[-6, 0], [-3, -2], [3, -2], [6, 0], [3, 2], [-3, 2]], dtype=float)
    points[36:42] = landmarks5[0] + ring
    points[42:48] = landmarks5[1] + ring
    points[48], points[54] = landmarks5[3], landmarks5[4]
    points[0:17, 1] += np.linspace(-40, 40, 17)  # a jaw line, so the set is not degenerate
    return points


def _write_mat(path, landmarks68):
    pt3d = np.vstack([landmarks68.T, np.zeros((1, 68))])
    scipy.io.savemat(path, {"pt3d_68": pt3d, "Pose_Para": POSE})


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def _write_aflw(root, detector):
    """Two faces with annotations, a faceless photo with an annotation, a face whose .mat is
    corrupt, and a photo without a .mat."""
    root.mkdir(parents=True, exist_ok=True)
    truth = {}
    for name, shift in (("image00002", 0), ("image00004", 10)):
        photo = _face_photo(shift)
        Image.fromarray(photo).save(root / f"{name}.jpg", quality=95)
        truth[name] = detector.detect(read_rgb_image(root / f"{name}.jpg"))[0].landmarks5
        _write_mat(root / f"{name}.mat", _landmarks68_around(truth[name]))
    Image.new("RGB", (240, 240), (120, 110, 100)).save(root / "image00006.jpg")
    truth["image00006"] = np.array([[90.0, 100], [150, 100], [120, 130], [95, 160], [145, 160]])
    _write_mat(root / "image00006.mat", _landmarks68_around(truth["image00006"]))
    Image.fromarray(_face_photo(5)).save(root / "image00008.jpg")
    (root / "image00008.mat").write_text("corrupt")
    Image.fromarray(_face_photo(5)).save(root / "image00010.jpg")
    return truth


@pytest.fixture(scope="module")
def aflw(tmp_path_factory, detector):
    root = tmp_path_factory.mktemp("aflw")
    truth = _write_aflw(root, detector)
    summary = prepare_alignment(
        root, list_aflw_images(root), detector, progress=False, dataset_name="AFLW2000",
        fallback_landmarks5=lambda path: annotated_landmarks5(root, path))
    return root, truth, summary


def test_landmarks5_from_68_follow_mtcnn_order():
    landmarks5 = np.array([[80.0, 90], [140, 90], [110, 120], [85, 150], [135, 150]])
    np.testing.assert_allclose(landmarks5_from_68(_landmarks68_around(landmarks5)), landmarks5)


def test_annotation_reads_points_and_pose_in_radians(tmp_path):
    landmarks68 = _landmarks68_around(np.array([[80.0, 90], [140, 90], [110, 120], [85, 150],
                                                [135, 150]]))
    _write_mat(tmp_path / "image00001.mat", landmarks68)
    annotation = read_annotation(tmp_path / "image00001.mat")
    np.testing.assert_allclose(annotation.landmarks68, landmarks68)
    np.testing.assert_allclose(annotation.head_pose, POSE[0, :3])


def test_bad_mat_files_raise_one_line_errors(tmp_path):
    (tmp_path / "text.mat").write_text("corrupt")
    with pytest.raises(DatasetLayoutError, match="cannot read annotation"):
        read_annotation(tmp_path / "text.mat")
    scipy.io.savemat(tmp_path / "keys.mat", {"Pose_Para": POSE})
    with pytest.raises(DatasetLayoutError, match="pt3d_68"):
        read_annotation(tmp_path / "keys.mat")
    scipy.io.savemat(tmp_path / "shape.mat", {"pt3d_68": np.zeros((2, 68)), "Pose_Para": POSE})
    with pytest.raises(DatasetLayoutError, match=r"\(3, 68\)"):
        read_annotation(tmp_path / "shape.mat")


def test_listing_keeps_only_photos_with_annotations(aflw):
    root, _, _ = aflw
    assert list_aflw_images(root) == ["image00002.jpg", "image00004.jpg", "image00006.jpg",
                                      "image00008.jpg"]


def test_nested_folder_and_wrong_folder(tmp_path):
    nested = tmp_path / "AFLW2000"
    nested.mkdir()
    Image.new("RGB", (30, 30)).save(nested / "image00001.jpg")
    _write_mat(nested / "image00001.mat", np.zeros((68, 2)))
    assert find_image_dir(tmp_path) == "AFLW2000"
    assert list_aflw_images(tmp_path) == ["AFLW2000/image00001.jpg"]
    with pytest.raises(DatasetLayoutError, match="AFLW2000-3D.zip"):
        find_image_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no image"):
        find_image_dir(tmp_path / "empty")


def test_mtcnn_misses_fall_back_to_annotated_landmarks(aflw):
    root, truth, summary = aflw
    assert (summary.aligned, summary.no_face, summary.unreadable) == (4, 0, 0)
    assert summary.from_annotation == 1
    record = AlignmentCache.load(root / ".faid_alignment.json").entries["image00006.jpg"]
    assert record.status == ALIGNED and record.landmarks_source == "annotation"
    assert "no face detected" in record.reason
    np.testing.assert_allclose(record.landmarks5, truth["image00006"])


def test_samples_carry_landmarks68_and_pose_in_the_crop(aflw, caplog):
    root, truth, _ = aflw
    with caplog.at_level(logging.WARNING):
        dataset = AFLW2000Faces(root)
    assert "image00008.mat" in caplog.text  # corrupt annotation: left out, with the reason
    assert dataset.relative_paths == ["image00002.jpg", "image00004.jpg",
                                                   "image00006.jpg"]
    sample = dataset[1]
    assert set(sample) == {"image", "path", "landmarks5", "transform", "split", "landmarks68",
                           "head_pose"}
    assert sample["split"] == "test" and sample["image"].shape == (3, CROP_SIZE, CROP_SIZE)
    assert sample["landmarks68"].shape == (68, 2)
    np.testing.assert_allclose(sample["head_pose"].numpy(), POSE[0, :3], atol=1e-6)
    # Annotated and detected points go through one transform, so they agree in the crop.
    eye_centres = sample["landmarks68"][36:48].reshape(2, 6, 2).mean(dim=1).numpy()
    np.testing.assert_allclose(eye_centres, sample["landmarks5"][:2].numpy(), atol=1e-3)
    np.testing.assert_allclose(apply_transform(sample["transform"], truth["image00004"]),
                               sample["landmarks5"].numpy(), atol=1e-3)


def test_samples_keep_the_annotated_68_points_not_dlibs(aflw):
    root, truth, _ = aflw
    entries = AlignmentCache.load(root / ".faid_alignment.json").entries
    predicted = entries["image00004.jpg"].landmarks68  # dlib ran on the detected face
    assert predicted is not None
    assert entries["image00006.jpg"].landmarks68 is None  # aligned from the annotation
    assert "no detector box" in entries["image00006.jpg"].landmarks68_missing
    dataset = AFLW2000Faces(root)
    sample = dataset[dataset.relative_paths.index("image00004.jpg")]
    annotated = read_annotation(root / "image00004.mat").landmarks68
    np.testing.assert_allclose(sample["landmarks68"].numpy(),
                               apply_transform(sample["transform"], annotated), atol=1e-3)
    assert not np.allclose(sample["landmarks68"].numpy(),
                           apply_transform(sample["transform"], predicted), atol=1.0)
