"""data.celeba: CelebA's layout, partition and attribute files, on a tiny fake tree."""
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from data.align import CROP_SIZE, TEMPLATE_LANDMARKS5
from data.celeba import (ATTRIBUTE_FILE, CELEBA_ATTRIBUTES, PARTITION_FILE, CelebAFaces,
                         find_image_dir, list_celeba_images, read_attributes, read_partition)
from data.image_folder import DatasetLayoutError, DatasetNotPreparedError
from data.prepare import prepare_alignment
from perception.detect import FaceDetector

SPLIT_CODES = {"000001.jpg": 0, "000002.jpg": 0, "000003.jpg": 1, "000004.jpg": 2,
               "000005.jpg": 0}


def _face_photo(shift: int) -> np.ndarray:
    """A 178 x 218 astronaut crop, CelebA's image size."""
    crop = data.astronaut()[20 + shift:260 + shift, 125 + shift:325 + shift]
    return np.asarray(Image.fromarray(crop).resize((178, 218), Image.Resampling.BILINEAR))


def _attribute_rows() -> dict:
    rng = np.random.default_rng(0)
    return {name: rng.integers(0, 2, size=40) for name in SPLIT_CODES}


def _write_celeba(root, image_dir="img_align_celeba", attributes=True):
    (root / image_dir).mkdir(parents=True)
    for index, name in enumerate(sorted(SPLIT_CODES)[:4]):
        Image.fromarray(_face_photo(4 * index)).save(root / image_dir / name, quality=95)
    (root / image_dir / "000005.jpg").write_text("a text file named .jpg")
    (root / PARTITION_FILE).write_text(
        "".join(f"{name} {code}\n" for name, code in SPLIT_CODES.items()))
    if attributes:
        rows = [" ".join(["", *CELEBA_ATTRIBUTES])]
        for name, values in _attribute_rows().items():
            rows.append(name + " " + " ".join("1" if v else "-1" for v in values))
        (root / ATTRIBUTE_FILE).write_text(f"{len(SPLIT_CODES)}\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory, detector):
    root = _write_celeba(tmp_path_factory.mktemp("celeba"))
    summary = prepare_alignment(root, list_celeba_images(root), detector, progress=False)
    assert (summary.aligned, summary.unreadable) == (4, 1)
    return root


def test_attribute_names_are_celeba_40():
    assert len(CELEBA_ATTRIBUTES) == 40 == len(set(CELEBA_ATTRIBUTES))
    assert CELEBA_ATTRIBUTES[20] == "Male" and CELEBA_ATTRIBUTES[-1] == "Young"


def test_partition_and_attribute_files_parse(tmp_path):
    root = _write_celeba(tmp_path)
    assert read_partition(root / PARTITION_FILE)["000003.jpg"] == "val"
    attributes = read_attributes(root / ATTRIBUTE_FILE)
    assert attributes["000002.jpg"].dtype == np.uint8
    np.testing.assert_array_equal(attributes["000002.jpg"], _attribute_rows()["000002.jpg"])


def test_malformed_annotation_lines_name_file_and_line(tmp_path):
    (tmp_path / PARTITION_FILE).write_text("000001.jpg 0\n000002.jpg seven\n")
    with pytest.raises(DatasetLayoutError, match=f"{PARTITION_FILE}:2"):
        read_partition(tmp_path / PARTITION_FILE)
    (tmp_path / ATTRIBUTE_FILE).write_text("1\nMale Young\n000001.jpg 1 -1\n")
    with pytest.raises(DatasetLayoutError, match="40 attribute names"):
        read_attributes(tmp_path / ATTRIBUTE_FILE)


def test_listing_includes_partition_entries_missing_from_disk(tmp_path):
    root = _write_celeba(tmp_path)
    (root / PARTITION_FILE).write_text((root / PARTITION_FILE).read_text() + "000009.jpg 2\n")
    listed = list_celeba_images(root)
    assert listed[0] == "img_align_celeba/000001.jpg"
    assert "img_align_celeba/000009.jpg" in listed and len(listed) == 6


def test_wrong_folders_get_one_line_that_says_what_to_do(tmp_path):
    with pytest.raises(DatasetLayoutError, match="img_align_celeba.zip"):
        find_image_dir(tmp_path / "nowhere")
    with pytest.raises(DatasetLayoutError, match="no img_align_celeba/"):
        find_image_dir(tmp_path)
    Image.fromarray(_face_photo(0)).save(tmp_path / "000001.jpg")
    with pytest.raises(DatasetLayoutError, match="pass its parent"):
        find_image_dir(tmp_path)


def test_doubly_nested_image_folder_is_found(tmp_path):
    root = _write_celeba(tmp_path, image_dir="img_align_celeba/img_align_celeba")
    assert find_image_dir(root) == "img_align_celeba/img_align_celeba"


def test_splits_follow_the_partition_and_skip_unreadable_photos(celeba_root):
    train = CelebAFaces(celeba_root, split="train")
    assert [path.rsplit("/", 1)[1] for path in train.relative_paths] == ["000001.jpg",
                                                                         "000002.jpg"]
    assert len(CelebAFaces(celeba_root, split="val")) == 1
    assert len(CelebAFaces(celeba_root, split="test")) == 1
    assert len(CelebAFaces(celeba_root, split="all")) == 4
    with pytest.raises(ValueError, match="split"):
        CelebAFaces(celeba_root, split="training")


def test_samples_carry_split_and_attributes_as_0_1(celeba_root):
    sample = CelebAFaces(celeba_root, split="train")[1]
    assert sample["split"] == "train"
    assert sample["image"].shape == (3, CROP_SIZE, CROP_SIZE)
    assert sample["attributes"].dtype == torch.float32 and sample["attributes"].shape == (40,)
    np.testing.assert_array_equal(sample["attributes"].numpy(),
                                  _attribute_rows()["000002.jpg"].astype(np.float32))
    np.testing.assert_allclose(sample["landmarks5"][:2].numpy(), TEMPLATE_LANDMARKS5[:2],
                               atol=6.0)


def test_without_the_attribute_file_samples_have_no_attributes_key(tmp_path, detector):
    root = _write_celeba(tmp_path, attributes=False)
    prepare_alignment(root, list_celeba_images(root), detector, progress=False)
    sample = CelebAFaces(root, split="test")[0]
    assert "attributes" not in sample and sample["split"] == "test"


def test_an_unprepared_celeba_names_the_prepare_command(tmp_path):
    root = _write_celeba(tmp_path)
    with pytest.raises(DatasetNotPreparedError, match="data.prepare celeba"):
        CelebAFaces(root)
