"""data.prepare: bad photos never crash a run, are counted and explained; the cache is atomic and
a second run reuses it; the command line gives one-line errors and exit code 2."""
import json
import logging

import numpy as np
import pytest
import scipy.io
from PIL import Image
from skimage import data

import data.align as align
import data.prepare as prepare
from data.align import CACHE_FILE_NAME, NO_FACE, UNREADABLE, AlignmentCache
from data.image_folder import DatasetLayoutError, ImageFolderFaces, list_image_files
from data.prepare import main, prepare_alignment
from perception.detect import FaceDetector
from perception.landmarks import Landmarks68Predictor


def _face_photo(width: int, height: int, shift: int = 0) -> np.ndarray:
    crop = data.astronaut()[20 + shift:260 + shift, 125 + shift:325 + shift]
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.BILINEAR))


class CountingDetector:
    """Wraps the real detector, counts calls, optionally raises on one call."""

    def __init__(self, inner, fail_on_call=None, on_call=None):
        self.inner, self.calls = inner, 0
        self.fail_on_call, self.on_call = fail_on_call, on_call
        self.min_face_size, self.name = inner.min_face_size, inner.name

    def detect(self, image):
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        return self.inner.detect(image)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def _write_faces(root, count):
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(_face_photo(150, 180, shift=3 * index)).save(root / f"face{index}.jpg")
    return root


def _write_bad_inputs(root):
    """One photo per kind of awkward input. Returns the expected status of each."""
    root.mkdir(parents=True, exist_ok=True)
    face = _face_photo(200, 240)
    Image.fromarray(face).save(root / "good.jpg", quality=95)
    Image.fromarray(face).convert("L").save(root / "gray.png")
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    rgba[:10, :, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    Image.fromarray(face).convert("CMYK").save(root / "cmyk.jpg")
    gray16 = np.asarray(Image.fromarray(face).convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray16).save(root / "gray16.png")
    Image.fromarray(_face_photo(1600, 1920)).save(root / "large.jpg")
    pair = np.full((240, 420, 3), 200, np.uint8)
    pair[:, :200] = face
    pair[60:180, 280:380] = _face_photo(100, 120)
    Image.fromarray(pair).save(root / "two_faces.jpg", quality=95)
    Image.new("RGB", (1, 1), (200, 150, 120)).save(root / "tiny.png")
    Image.new("RGB", (160, 160), (90, 120, 150)).save(root / "wall.jpg")
    (root / "text.jpg").write_text("I am not a photo")
    Image.fromarray(face).save(root / "whole.jpg")
    whole = (root / "whole.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (root / "whole.jpg").unlink()
    (root / "empty.png").write_bytes(b"")
    Image.new("1", (12000, 12000)).save(root / "huge.png")
    aligned = ["good.jpg", "gray.png", "rgba.png", "cmyk.jpg", "gray16.png", "large.jpg",
               "two_faces.jpg"]
    return ({name: "aligned" for name in aligned}
            | {"tiny.png": NO_FACE, "wall.jpg": NO_FACE}
            | {name: UNREADABLE for name in ("text.jpg", "truncated.jpg", "empty.png",
                                             "huge.png")})


def test_bad_inputs_are_converted_or_skipped_with_a_reason_and_counted(tmp_path, detector,
                                                                       caplog):
    root = tmp_path / "photos"
    expected = _write_bad_inputs(root)
    with caplog.at_level(logging.INFO):
        summary = prepare_alignment(root, list_image_files(root), detector, progress=False)
    entries = AlignmentCache.load(root / CACHE_FILE_NAME).entries
    assert {name: record.status for name, record in entries.items()} == expected
    assert (summary.aligned, summary.no_face, summary.unreadable) == (7, 2, 4)
    assert summary.several_faces == 1 and "several faces" in summary.line()
    assert "2 faces detected; aligned the largest" in entries["two_faces.jpg"].reason
    assert entries["two_faces.jpg"].landmarks5[:, 0].max() < 200  # the big face on the left
    assert "1x1" in entries["tiny.png"].reason
    assert "not an image" in entries["text.jpg"].reason
    assert "truncated" in entries["truncated.jpg"].reason
    assert "too large" in entries["huge.png"].reason
    for name in ("text.jpg", "truncated.jpg", "empty.png", "huge.png", "two_faces.jpg"):
        assert name in caplog.text
    assert [p.name for p in root.iterdir() if p.suffix == ".tmp"] == []
    payload = json.loads((root / CACHE_FILE_NAME).read_text())
    assert payload["version"] == align.CACHE_VERSION and "MTCNN" in payload["detector"]
    # Every converted photo gives a usable crop.
    dataset = ImageFolderFaces(root)
    assert sorted(dataset.relative_paths) == sorted(n for n, s in expected.items()
                                                    if s == "aligned")
    for index in range(len(dataset)):
        assert dataset[index]["image"].std() > 0.05


def test_a_second_run_reuses_the_cache_and_redoes_only_changed_files(tmp_path, detector):
    root = _write_faces(tmp_path / "faces", 3)
    paths = list_image_files(root)
    first = CountingDetector(detector)
    prepare_alignment(root, paths, first, progress=False)
    assert first.calls == 3
    before = (root / CACHE_FILE_NAME).read_text()

    second = CountingDetector(detector)
    summary = prepare_alignment(root, paths, second, progress=False)
    assert second.calls == 0 and summary.from_cache == 3 and summary.aligned == 3
    assert json.loads((root / CACHE_FILE_NAME).read_text()) == json.loads(before)

    Image.new("RGB", (100, 100), (50, 60, 70)).save(root / "face1.jpg")  # replaced photo
    third = CountingDetector(detector)
    summary = prepare_alignment(root, paths, third, progress=False)
    assert third.calls == 1 and (summary.aligned, summary.no_face) == (2, 1)


def test_an_interrupted_run_keeps_finished_photos_and_resumes(tmp_path, detector):
    root = _write_faces(tmp_path / "faces", 4)
    paths = list_image_files(root)
    with pytest.raises(KeyboardInterrupt):
        prepare_alignment(root, paths, CountingDetector(detector, fail_on_call=3),
                          progress=False)
    cache = AlignmentCache.load(root / CACHE_FILE_NAME)  # a whole, valid file
    assert sorted(cache.entries) == ["face0.jpg", "face1.jpg"]
    assert [p.name for p in root.iterdir() if p.suffix == ".tmp"] == []
    resumed = CountingDetector(detector)
    summary = prepare_alignment(root, paths, resumed, progress=False)
    assert resumed.calls == 2 and summary.aligned == 4 and summary.from_cache == 2


def test_checkpoints_write_the_cache_during_the_run(tmp_path, detector, monkeypatch):
    root = _write_faces(tmp_path / "faces", 3)
    clock = [0.0]
    monkeypatch.setattr(prepare.time, "monotonic", lambda: clock[0])
    seen_on_disk = []

    def look_then_take_two_minutes(call):
        path = root / CACHE_FILE_NAME
        seen_on_disk.append(len(AlignmentCache.load(path).entries) if path.is_file() else 0)
        clock[0] += 120.0

    prepare_alignment(root, list_image_files(root),
                      CountingDetector(detector, on_call=look_then_take_two_minutes),
                      progress=False, checkpoint_seconds=60.0)
    assert seen_on_disk == [0, 1, 2]


def test_a_read_only_data_folder_is_cached_in_the_user_cache(tmp_path, detector, monkeypatch):
    root = _write_faces(tmp_path / "faces", 1)
    monkeypatch.setenv("FAID_CACHE_DIR", str(tmp_path / "user_cache"))
    monkeypatch.setattr(align, "directory_is_writable", lambda directory: False)
    summary = prepare_alignment(root, list_image_files(root), detector, progress=False)
    assert (tmp_path / "user_cache") in summary.cache_path.parents
    assert not (root / CACHE_FILE_NAME).exists()
    assert len(ImageFolderFaces(root)) == 1


@pytest.mark.parametrize("kind, hint", [("celeba", "img_align_celeba.zip"),
                                        ("aflw2000", "AFLW2000-3D.zip"),
                                        ("folder", "folder of photos")])
def test_without_a_folder_the_command_says_what_to_download_in_one_line(kind, hint, capsys):
    assert main([kind]) == 2
    error = capsys.readouterr().err
    assert hint in error and error.count("\n") == 1


@pytest.mark.parametrize("kind", ["celeba", "aflw2000", "folder"])
def test_a_wrong_folder_exits_2_with_one_line(kind, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "nowhere", tmp_path / "empty"):
        assert main([kind, str(folder), "--no-progress"]) == 2
        error = capsys.readouterr().err
        assert str(folder) in error and error.count("\n") == 1


def test_the_command_prepares_celeba_and_prints_a_summary(tmp_path, capsys):
    root = tmp_path / "celeba"
    _write_faces(root / "img_align_celeba", 1)
    (root / "img_align_celeba" / "face0.jpg").rename(root / "img_align_celeba" / "000001.jpg")
    (root / "img_align_celeba" / "000002.jpg").write_text("oops")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n")
    assert main(["celeba", str(root), "--no-progress"]) == 0
    output = capsys.readouterr().out
    assert output.startswith("CelebA: 2 photos: 1 aligned, 0 no face, 1 unreadable")
    assert "skipped img_align_celeba/000002.jpg: not an image" in output
    assert (root / CACHE_FILE_NAME).is_file()


def test_the_command_aligns_aflw_photos_mtcnn_misses_from_their_annotation(tmp_path, capsys):
    Image.new("RGB", (120, 120), (100, 100, 100)).save(tmp_path / "image00001.jpg")
    landmarks68 = np.tile([60.0, 70.0], (68, 1))
    landmarks68[36:42], landmarks68[42:48] = [45.0, 50.0], [75.0, 50.0]
    landmarks68[48], landmarks68[54] = [48.0, 85.0], [72.0, 85.0]
    scipy.io.savemat(tmp_path / "image00001.mat",
                     {"pt3d_68": np.vstack([landmarks68.T, np.zeros((1, 68))]),
                      "Pose_Para": np.zeros((1, 7))})
    assert main(["aflw2000", str(tmp_path), "--no-progress"]) == 0
    output = capsys.readouterr().out
    assert "1 aligned" in output and "1 aligned from annotated landmarks" in output


# ---------------------------------------------------------------------------- 68 landmarks

class RotatingPredictor:
    """The real predictor, with its points turned 60 degrees about their centre: the kind of
    collapse dlib shows on a face tilted beyond ~30 degrees."""

    name = "turned dlib"

    def __init__(self):
        self.inner = Landmarks68Predictor()

    def predict(self, image, box):
        points = self.inner.predict(image, box)
        angle = np.deg2rad(60.0)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = points.mean(axis=0)
        return ((points - centre) @ rotation.T + centre).astype(np.float32)


class FailingPredictor:
    name = "broken dlib"

    def predict(self, image, box):
        raise RuntimeError("dlib exploded")


def _strip_landmarks68(cache_file):
    """Rewrite a cache as the code before the 68 points wrote it."""
    payload = json.loads(cache_file.read_text())
    payload.pop("landmarks68_predictor")
    for entry in payload["entries"].values():
        entry.pop("landmarks68", None)
        entry.pop("landmarks68_missing", None)
    cache_file.write_text(json.dumps(payload))


def test_aligned_photos_get_68_landmarks_in_photo_pixels(tmp_path, detector):
    root = _write_faces(tmp_path / "faces", 2)
    summary = prepare_alignment(root, list_image_files(root), detector, progress=False)
    assert (summary.landmarks68, summary.landmarks68_missing) == (2, 0)
    assert "68 landmarks: 2 predicted, 0 missing;" in summary.line()
    payload = json.loads((root / CACHE_FILE_NAME).read_text())
    assert "shape_predictor_68" in payload["landmarks68_predictor"]
    for name, record in AlignmentCache.load(root / CACHE_FILE_NAME).entries.items():
        assert record.landmarks68.shape == (68, 2) and record.landmarks68.dtype == np.float32
        image = np.asarray(Image.open(root / name).convert("RGB"))
        np.testing.assert_array_equal(record.landmarks68,
                                      Landmarks68Predictor().predict(image, record.box))
        # Photo pixels: the eye centres sit on MTCNN's eyes.
        eyes = record.landmarks68[36:48].reshape(2, 6, 2).mean(axis=1)
        assert np.abs(eyes - record.landmarks5[:2]).max() < 0.05 * record.image_size[0]


def test_a_cache_without_68_landmarks_loads_and_the_next_run_adds_them_without_detecting(
        tmp_path, detector, caplog):
    root = _write_faces(tmp_path / "faces", 2)
    prepare_alignment(root, list_image_files(root), detector, progress=False)
    with_points = AlignmentCache.load(root / CACHE_FILE_NAME).entries
    _strip_landmarks68(root / CACHE_FILE_NAME)

    old = AlignmentCache.load(root / CACHE_FILE_NAME)
    assert all(not record.landmarks68_attempted and record.landmarks68 is None
               for record in old.entries.values())
    with caplog.at_level(logging.WARNING):
        dataset = ImageFolderFaces(root)
    assert "2 of 2 aligned photos have no 68-point landmarks yet" in caplog.text
    assert "landmarks68" not in dataset[0]

    counting = CountingDetector(detector)
    summary = prepare_alignment(root, list_image_files(root), counting, progress=False)
    assert counting.calls == 0 and summary.from_cache == 2 and summary.landmarks68 == 2
    for name, record in AlignmentCache.load(root / CACHE_FILE_NAME).entries.items():
        np.testing.assert_array_equal(record.landmarks68, with_points[name].landmarks68)
    assert ImageFolderFaces(root)[0]["landmarks68"].shape == (68, 2)


@pytest.mark.parametrize("predictor, reason", [(RotatingPredictor(), "disagree with the detector"),
                                               (FailingPredictor(), "dlib exploded")])
def test_a_face_dlib_cannot_place_is_counted_missing_not_filled_with_zeros(
        tmp_path, detector, predictor, reason):
    root = _write_faces(tmp_path / "faces", 1)
    summary = prepare_alignment(root, list_image_files(root), detector, progress=False,
                                landmark_predictor=predictor)
    assert (summary.aligned, summary.landmarks68, summary.landmarks68_missing) == (1, 0, 1)
    assert "0 predicted, 1 missing" in summary.line()
    assert reason in summary.landmarks68_missing_examples[0][1]
    entry = json.loads((root / CACHE_FILE_NAME).read_text())["entries"]["face0.jpg"]
    assert "landmarks68" not in entry and reason in entry["landmarks68_missing"]
    record = AlignmentCache.load(root / CACHE_FILE_NAME).entries["face0.jpg"]
    assert record.landmarks68 is None and record.landmarks68_attempted
    sample = ImageFolderFaces(root)[0]
    assert "landmarks68" not in sample and "landmarks5" in sample
    # A recorded failure is not retried by the next run.
    summary = prepare_alignment(root, list_image_files(root), detector, progress=False)
    assert summary.landmarks68_missing == 1


def test_without_dlib_photos_are_aligned_and_the_command_says_why_in_one_line(
        tmp_path, monkeypatch, capsys):
    root = _write_faces(tmp_path / "faces", 2)
    missing = tmp_path / "no_model.dat"
    monkeypatch.setattr(prepare, "Landmarks68Predictor", lambda: Landmarks68Predictor(missing))
    assert main(["folder", str(root), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "2 aligned" in captured.out and "0 predicted, 0 missing, 2 not predicted" in captured.out
    assert captured.err.count("\n") == 1 and str(missing) in captured.err
    assert "aligning without 68-point landmarks" in captured.err
    assert len(ImageFolderFaces(root)) == 2


def test_no_landmarks68_flag_aligns_only(tmp_path, capsys):
    root = _write_faces(tmp_path / "faces", 1)
    assert main(["folder", str(root), "--no-progress", "--no-landmarks68"]) == 0
    assert "0 predicted, 0 missing, 1 not predicted" in capsys.readouterr().out


def test_a_photo_without_a_face_gets_one_line_from_the_command_and_the_data_set(tmp_path,
                                                                               capsys):
    root = tmp_path / "coffee"
    root.mkdir()
    Image.fromarray(data.coffee()).save(root / "coffee.png")
    assert main(["folder", str(root), "--no-progress"]) == 0
    output = capsys.readouterr().out
    assert output.startswith("image folder: 1 photos: 0 aligned, 1 no face, 0 unreadable")
    assert "68 landmarks" not in output  # nothing aligned, nothing to predict
    assert "  skipped coffee.png: no face detected\n" in output
    with pytest.raises(DatasetLayoutError, match="none of 1 photos has an aligned face") as error:
        ImageFolderFaces(root)
    assert "\n" not in str(error.value)
