import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw

from data.celebamask_hq import IMAGE_DIR, MASK_DIR, CelebAMaskHQFaces, label_map, list_celebamask_images
from data.image_folder import DatasetLayoutError
from data.prepare import prepare_alignment
from perception.parsing_classes import BACKGROUND, OCCLUDER, SKIN


def _fake_tree(root, count=2):
    (root / IMAGE_DIR).mkdir(parents=True)
    (root / MASK_DIR / "0").mkdir(parents=True)
    photo = Image.fromarray(skimage.data.astronaut()).resize((256, 256))
    for i in range(count):
        photo.save(root / IMAGE_DIR / f"{i}.jpg")
        skin = Image.new("L", (128, 128), 0)
        ImageDraw.Draw(skin).ellipse([45, 20, 90, 80], fill=255)
        skin.save(root / MASK_DIR / "0" / f"{i:05d}_skin.png")
        glasses = Image.new("L", (128, 128), 0)
        ImageDraw.Draw(glasses).rectangle([50, 40, 85, 46], fill=255)
        glasses.save(root / MASK_DIR / "0" / f"{i:05d}_eye_g.png")


def test_label_map_puts_occluders_over_skin(tmp_path):
    _fake_tree(tmp_path)
    labels = label_map(tmp_path, 0, 256)
    assert labels.shape == (256, 256)
    assert labels[86, 130] == OCCLUDER      # glasses bar, drawn over the skin
    assert labels[130, 135] == SKIN
    assert labels[5, 5] == BACKGROUND


def test_aligned_samples_carry_a_warped_label_map(tmp_path):
    _fake_tree(tmp_path)
    prepare_alignment(tmp_path, list_celebamask_images(tmp_path), progress=False)
    data = CelebAMaskHQFaces(tmp_path, split="train", crop_size=112, val_fraction=0.5)
    sample = data[0]
    parsing = sample["parsing"]
    assert parsing.shape == (112, 112) and sample["image"].shape == (3, 112, 112)
    counts = np.bincount(parsing.flatten().numpy(), minlength=3)
    assert counts[SKIN] > 200 and counts[OCCLUDER] > 20 and counts[BACKGROUND] > 1000


def test_missing_layout_names_what_to_download(tmp_path):
    with pytest.raises(DatasetLayoutError, match="CelebAMask-HQ.zip"):
        list_celebamask_images(tmp_path)
