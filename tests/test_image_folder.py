"""data.image_folder: any folder of photos becomes aligned face samples after one prepare run."""
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch.utils.data import DataLoader

from data.align import (CACHE_FILE_NAME, CROP_SIZE, TEMPLATE_LANDMARKS5, AlignmentCache,
                        apply_transform, template_landmarks5)
from data.image_folder import (DatasetLayoutError, DatasetNotPreparedError, ImageFolderFaces,
                               list_image_files)
from data.prepare import prepare_alignment
from data.samples import collate_face_samples
from perception.detect import FaceDetector


def _face_photo(width: int, height: int, shift: int = 0) -> np.ndarray:
    """A crop of the astronaut photo around her face, resized (MTCNN finds it)."""
    crop = data.astronaut()[20 + shift:260 + shift, 125 + shift:325 + shift]
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, detector):
    root = tmp_path_factory.mktemp("photos")
    (root / "trip").mkdir()
    Image.fromarray(_face_photo(200, 240)).save(root / "a.jpg")
    Image.fromarray(_face_photo(160, 190, shift=8)).save(root / "trip" / "b.png")
    Image.new("RGB", (120, 120), (90, 120, 150)).save(root / "wall.jpg")  # no face
    (root / "notes.txt").write_text("not a photo")
    prepare_alignment(root, list_image_files(root), detector, progress=False)
    return root


def test_listing_is_recursive_sorted_and_skips_hidden_and_non_images(tmp_path):
    for name in ("b.jpg", "A/c.PNG", ".hidden/d.jpg", "e.txt", ".f.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert list_image_files(tmp_path) == ["A/c.PNG", "b.jpg"]
    assert list_image_files(tmp_path, recursive=False) == ["b.jpg"]


def test_an_unprepared_folder_says_which_command_to_run(tmp_path):
    Image.fromarray(_face_photo(100, 120)).save(tmp_path / "a.jpg")
    with pytest.raises(DatasetNotPreparedError, match="python -m data.prepare folder") as error:
        ImageFolderFaces(tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(DatasetLayoutError, match="not found"):
        ImageFolderFaces(tmp_path / "missing")


def test_samples_hold_only_what_a_folder_knows(photo_folder):
    dataset = ImageFolderFaces(photo_folder)
    assert dataset.relative_paths == ["a.jpg", "trip/b.png"]  # the wall has no face
    sample = dataset[1]
    assert set(sample) == {"image", "path", "landmarks5", "transform", "landmarks68"}
    assert sample["landmarks68"].shape == (68, 2) and sample["landmarks68"].dtype == torch.float32
    assert sample["image"].shape == (3, CROP_SIZE, CROP_SIZE)
    assert sample["image"].dtype == torch.float32
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["path"] == str(photo_folder / "trip" / "b.png")
    assert sample["landmarks5"].shape == (5, 2) and sample["transform"].shape == (2, 3)
    np.testing.assert_allclose(sample["landmarks5"][:2].numpy(), TEMPLATE_LANDMARKS5[:2],
                               atol=6.0)


def test_sample_landmarks_are_the_photo_landmarks_moved_by_the_sample_transform(
        photo_folder, detector):
    sample = ImageFolderFaces(photo_folder)[0]
    photo_landmarks = detector.detect(np.asarray(Image.open(photo_folder / "a.jpg")))[0]
    moved = apply_transform(sample["transform"], photo_landmarks.landmarks5)
    np.testing.assert_allclose(moved, sample["landmarks5"].numpy(), atol=1e-3)


def test_sample_68_landmarks_are_the_cached_photo_points_moved_by_the_sample_transform(
        photo_folder):
    cache = AlignmentCache.load(photo_folder / CACHE_FILE_NAME)
    for crop_size, allow_rotation in ((CROP_SIZE, True), (112, False)):
        dataset = ImageFolderFaces(photo_folder, crop_size=crop_size,
                                   allow_rotation=allow_rotation)
        for index, relative_path in enumerate(dataset.relative_paths):
            sample = dataset[index]
            moved = apply_transform(sample["transform"], cache.entries[relative_path].landmarks68)
            np.testing.assert_allclose(sample["landmarks68"].numpy(), moved, atol=1e-3)
            # In the crop, the 68 points' eye centres sit on the detector's eyes.
            eyes = sample["landmarks68"][36:48].reshape(2, 6, 2).mean(dim=1)
            assert (eyes - sample["landmarks5"][:2]).norm(dim=1).max() < 0.06 * crop_size


def test_crop_size_scales_image_and_landmarks(photo_folder):
    small = ImageFolderFaces(photo_folder, crop_size=112)[0]
    assert small["image"].shape == (3, 112, 112)
    np.testing.assert_allclose(small["landmarks5"][:2].numpy(), template_landmarks5(112)[:2],
                               atol=3.0)


def test_a_dataloader_batches_folder_samples(photo_folder):
    loader = DataLoader(ImageFolderFaces(photo_folder), batch_size=2,
                        collate_fn=collate_face_samples)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, CROP_SIZE, CROP_SIZE)
    assert batch["landmarks5"].shape == (2, 5, 2) and len(batch["path"]) == 2


def test_a_folder_without_any_face_is_an_error_not_an_empty_dataset(tmp_path, detector):
    Image.new("RGB", (80, 80), (10, 20, 30)).save(tmp_path / "flat.png")
    prepare_alignment(tmp_path, ["flat.png"], detector, progress=False)
    with pytest.raises(DatasetLayoutError, match="1 no face"):
        ImageFolderFaces(tmp_path)
