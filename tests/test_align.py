"""data.align: template, similarity fit, warp, inverse and paste-back, per-photo records, cache."""
import json
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import data.align as align
import fileio.atomic
from data.align import (ALIGNED, CACHE_FILE_NAME, CROP_SIZE, NO_FACE, TEMPLATE_LANDMARKS5,
                        UNREADABLE, AlignmentCache, AlignmentCacheError, AlignmentRecord,
                        align_image_file, align_photo, alignment_transform, apply_transform,
                        compose_transforms, existing_cache_path, fit_similarity,
                        invert_transform, paste_back, template_landmarks5, transform_scale,
                        warp_to_crop, writable_cache_path)
from data.images import image_to_tensor, tensor_to_image
from perception.detect import FaceDetector


def _similarity(angle, scale, tx, ty):
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


def _resized(image, width, height):
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()  # (512, 512, 3) uint8, a real photo that ships with scikit-image


def test_template_is_a_level_symmetric_face_with_eyes_at_037_of_the_crop():
    left_eye, right_eye, nose, mouth_left, mouth_right = TEMPLATE_LANDMARKS5
    assert CROP_SIZE == 224
    assert abs(left_eye[1] - right_eye[1]) < 0.5
    assert 0.35 < left_eye[1] / CROP_SIZE < 0.40
    assert abs((left_eye[0] + right_eye[0]) / 2 - CROP_SIZE / 2) < 1.0
    assert 55 < right_eye[0] - left_eye[0] < 70
    assert left_eye[1] < nose[1] < mouth_left[1] and abs(mouth_left[1] - mouth_right[1]) < 0.5
    with pytest.raises(ValueError):
        TEMPLATE_LANDMARKS5[0, 0] = 0.0  # one source of truth, read-only


def test_template_scales_with_the_crop_size():
    half = template_landmarks5(112)
    np.testing.assert_allclose((half + 0.5) * 2 - 0.5, TEMPLATE_LANDMARKS5)
    np.testing.assert_allclose(template_landmarks5(CROP_SIZE), TEMPLATE_LANDMARKS5)


def test_fit_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 300, size=(5, 2))
    truth = _similarity(0.4, 1.7, -30.0, 12.5)
    fitted = fit_similarity(points, apply_transform(truth, points))
    np.testing.assert_allclose(fitted, truth, atol=1e-9)


def test_fit_without_rotation_has_no_rotation_and_recovers_scale_and_shift():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 300, size=(5, 2))
    truth = _similarity(0.0, 0.8, 5.0, -7.0)
    fitted = fit_similarity(points, apply_transform(truth, points), allow_rotation=False)
    np.testing.assert_allclose(fitted, truth, atol=1e-9)
    rotated_targets = apply_transform(_similarity(0.3, 1.0, 0, 0), points)
    no_rotation = fit_similarity(points, rotated_targets, allow_rotation=False)
    assert no_rotation[0, 1] == 0.0 and no_rotation[1, 0] == 0.0


def test_fit_never_reflects_even_for_mirrored_points():
    points = TEMPLATE_LANDMARKS5.copy()
    mirrored = points * [-1.0, 1.0]
    assert np.linalg.det(fit_similarity(points, mirrored)[:, :2]) > 0


def test_fit_rejects_coincident_landmarks():
    with pytest.raises(ValueError, match="degenerate"):
        fit_similarity(np.ones((5, 2)), TEMPLATE_LANDMARKS5)


def test_inverse_and_composition_round_trip_points():
    transform = _similarity(-0.7, 2.3, 40.0, -3.0)
    points = np.array([[0.0, 0.0], [10.0, -4.0], [123.4, 56.7]])
    back = apply_transform(invert_transform(transform), apply_transform(transform, points))
    np.testing.assert_allclose(back, points, atol=1e-10)
    np.testing.assert_allclose(compose_transforms(transform, invert_transform(transform)),
                               [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    assert transform_scale(transform) == pytest.approx(2.3)


def test_astronaut_eyes_land_on_the_template_and_the_inverse_returns_them(detector, astronaut):
    landmarks = detector.detect(astronaut)[0].landmarks5
    transform = alignment_transform(landmarks)
    in_crop = apply_transform(transform, landmarks)
    np.testing.assert_allclose(in_crop[:2], TEMPLATE_LANDMARKS5[:2], atol=5.0)
    np.testing.assert_allclose(apply_transform(invert_transform(transform), in_crop), landmarks,
                               atol=1e-9)

    crop = warp_to_crop(astronaut, transform)
    assert crop.shape == (3, CROP_SIZE, CROP_SIZE) and crop.dtype == torch.float32
    redetected = detector.detect(tensor_to_image(crop))
    assert len(redetected) == 1
    # The warp puts the face where the transform says it goes, and the eyes on the template
    # (eyes and nose: MTCNN's mouth corners move a few px with the face's scale).
    np.testing.assert_allclose(redetected[0].landmarks5[:3], in_crop[:3], atol=3.0)
    # The 5-point fit leaves the eyes ~3.5 px below the template (MTCNN's mouth corners sit
    # higher than Deep3D's 68-point ones); re-detection adds ~1 px.
    np.testing.assert_allclose(redetected[0].landmarks5[:2], TEMPLATE_LANDMARKS5[:2], atol=6.0)


def test_warp_with_an_integer_shift_copies_pixels_and_zero_fills_outside():
    image = np.random.default_rng(2).integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    shift = np.array([[1.0, 0.0, -5.0], [0.0, 1.0, -7.0]])  # crop (x, y) = photo (x+5, y+7)
    crop = warp_to_crop(image, shift, crop_size=48)
    expected = image_to_tensor(image)[:, 7:40, 5:50]
    torch.testing.assert_close(crop[:, :33, :45], expected, atol=1e-5, rtol=0)
    assert crop[:, 34:, :].abs().max() == 0 and crop[:, :, 46:].abs().max() == 0


def test_warp_antialiases_when_it_shrinks():
    checker = ((np.indices((256, 256)).sum(axis=0) % 2) * 255).astype(np.uint8)
    image = np.repeat(checker[:, :, None], 3, axis=2)
    quarter = np.array([[0.25, 0.0, 0.0], [0.0, 0.25, 0.0]])
    crop = warp_to_crop(image, quarter, crop_size=64)
    inner = crop[:, 2:-2, 2:-2]
    assert abs(inner.mean().item() - 0.5) < 0.02 and inner.std().item() < 0.05


def test_paste_back_with_an_empty_mask_returns_the_original(detector, astronaut):
    transform = alignment_transform(detector.detect(astronaut)[0].landmarks5)
    render = torch.rand(3, CROP_SIZE, CROP_SIZE)
    result = paste_back(render, torch.zeros(CROP_SIZE, CROP_SIZE), transform, astronaut)
    assert isinstance(result, np.ndarray) and result.dtype == np.uint8
    np.testing.assert_array_equal(result, astronaut)


def test_paste_back_of_the_crop_itself_restores_the_photo(detector, astronaut):
    transform = alignment_transform(detector.detect(astronaut)[0].landmarks5)
    original = image_to_tensor(astronaut)
    crop = warp_to_crop(original, transform)
    result = paste_back(crop, torch.ones(1, CROP_SIZE, CROP_SIZE), transform, original)
    assert isinstance(result, torch.Tensor) and result.shape == original.shape
    last = CROP_SIZE - 1
    corners = apply_transform(invert_transform(transform),
                              [[0, 0], [last, 0], [0, last], [last, last]])
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    # Inside the crop's footprint (the box of its central half): two bilinear resamplings.
    quarter_x, quarter_y = (x1 - x0) // 4, (y1 - y0) // 4
    inside = (result - original)[:, y0 + quarter_y:y1 - quarter_y, x0 + quarter_x:x1 - quarter_x]
    assert inside.abs().mean() < 0.02
    outside = (result - original).clone()
    outside[:, y0 - 2:y1 + 3, x0 - 2:x1 + 3] = 0
    assert outside.abs().max() == 0


def test_paste_back_puts_the_crop_centre_on_the_matching_photo_pixel(detector, astronaut):
    transform = alignment_transform(detector.detect(astronaut)[0].landmarks5)
    render = torch.zeros(3, CROP_SIZE, CROP_SIZE)
    render[0] = 1.0  # pure red
    mask = torch.zeros(CROP_SIZE, CROP_SIZE)
    mask[100:124, 100:124] = 1.0
    result = paste_back(render, mask, transform, astronaut)
    x, y = np.round(apply_transform(invert_transform(transform), [[111.5, 111.5]])[0]).astype(int)
    np.testing.assert_array_equal(result[y, x], (255, 0, 0))
    changed = np.any(result != astronaut, axis=-1)
    area_in_photo = 24 ** 2 / transform_scale(transform) ** 2
    assert 0.7 * area_in_photo < changed.sum() < 1.5 * area_in_photo


def test_align_photo_takes_the_largest_of_several_faces_and_says_so(detector, astronaut):
    face = _resized(astronaut, 250, 250)
    canvas = np.full((250, 420, 3), 200, np.uint8)
    canvas[:, :250] = face
    canvas[60:185, 270:395] = _resized(face, 125, 125)
    record = align_photo(canvas, detector)
    assert record.status == ALIGNED and record.faces == 2
    assert "2 faces" in record.reason and "largest" in record.reason
    assert record.landmarks5[:, 0].max() < 250
    np.testing.assert_allclose(record.transform, alignment_transform(record.landmarks5))


def test_align_photo_reports_tiny_and_faceless_images(detector):
    tiny = align_photo(np.zeros((1, 1, 3), np.uint8), detector)
    assert tiny.status == NO_FACE and "1x1" in tiny.reason
    flat = align_photo(np.full((100, 100, 3), 90, np.uint8), detector)
    assert flat.status == NO_FACE and flat.reason == "no face detected"


def test_align_image_file_records_a_bad_file_instead_of_raising(tmp_path, detector, caplog):
    path = tmp_path / "fake.jpg"
    path.write_text("not a photo")
    with caplog.at_level(logging.WARNING):
        record = align_image_file(path, detector)
    assert record.status == UNREADABLE and "not an image" in record.reason
    assert "fake.jpg" in caplog.text and "not an image" in caplog.text
    assert record.file_size == path.stat().st_size


def test_a_detector_crash_on_one_photo_is_recorded_not_raised(tmp_path):
    class BrokenDetector:
        min_face_size = 20

        def detect(self, image):
            raise RuntimeError("boom")

    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 64)).save(path)
    record = align_image_file(path, BrokenDetector())
    assert record.status == UNREADABLE and "boom" in record.reason


def test_record_json_round_trip_keeps_geometry():
    record = align.record_from_landmarks(TEMPLATE_LANDMARKS5 * 2 + 3, "mtcnn", score=0.99)
    record.image_size, record.file_size, record.mtime_ns = (500, 400), 1234, 5678
    restored = AlignmentRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert restored.status == ALIGNED and restored.image_size == (500, 400)
    np.testing.assert_allclose(restored.landmarks5, record.landmarks5, atol=1e-3)
    np.testing.assert_allclose(restored.transform, record.transform, atol=1e-6)


def test_cache_save_is_atomic_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / CACHE_FILE_NAME
    cache = AlignmentCache(path, {"a.jpg": AlignmentRecord(NO_FACE, reason="no face detected")})
    cache.save()
    before = path.read_bytes()

    def failing_sync(descriptor):  # the temporary file is written, then the disk fails
        raise OSError("disk full")

    cache.entries["b.jpg"] = AlignmentRecord(UNREADABLE, reason="empty file")
    monkeypatch.setattr(fileio.atomic.os, "fsync", failing_sync)
    with pytest.raises(OSError, match="disk full"):
        cache.save()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CACHE_FILE_NAME]
    monkeypatch.undo()
    assert list(AlignmentCache.load(path).entries) == ["a.jpg"]


def test_loading_a_corrupt_or_foreign_cache_fails_with_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"version": 1, "entries": {')
    with pytest.raises(AlignmentCacheError, match="corrupt") as error:
        AlignmentCache.load(corrupt)
    assert "\n" not in str(error.value)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"version": 0, "entries": {}}))
    with pytest.raises(AlignmentCacheError, match="version"):
        AlignmentCache.load(old)
    assert AlignmentCache.load(tmp_path / "absent.json").entries == {}


def test_cache_written_with_another_template_gets_fresh_transforms(tmp_path):
    path = tmp_path / "cache.json"
    record = align.record_from_landmarks(TEMPLATE_LANDMARKS5 + 10, "mtcnn")
    AlignmentCache(path, {"a.jpg": record}).save()
    payload = json.loads(path.read_text())
    payload["template"] = (TEMPLATE_LANDMARKS5 * 0.5).tolist()
    payload["entries"]["a.jpg"]["transform"] = [[9, 9, 9], [9, 9, 9]]
    path.write_text(json.dumps(payload))
    loaded = AlignmentCache.load(path).entries["a.jpg"]
    np.testing.assert_allclose(loaded.transform, alignment_transform(loaded.landmarks5))


def test_cache_goes_to_the_user_cache_when_the_data_folder_is_read_only(tmp_path, monkeypatch):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    monkeypatch.setenv("FAID_CACHE_DIR", str(tmp_path / "user_cache"))
    assert writable_cache_path(dataset) == dataset / CACHE_FILE_NAME
    monkeypatch.setattr(align, "directory_is_writable", lambda directory: False)
    fallback = writable_cache_path(dataset)
    assert fallback.parent.parent == tmp_path / "user_cache"
    assert fallback == writable_cache_path(dataset)  # stable per data set
    assert existing_cache_path(dataset) is None
    AlignmentCache(fallback).save()
    assert existing_cache_path(dataset) == fallback
