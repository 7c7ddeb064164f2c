import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from data.align import align_photo, warp_to_crop
from data.images import image_to_tensor, read_rgb_image
from experiments.idsim import main
from perception.detect import FaceDetector
from perception.identity import build_identity_net
from render.image_io import save_png


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idsim")
    astronaut = Image.fromarray(skimage.data.astronaut()).resize((256, 256))
    astronaut.save(folder / "a.png")
    astronaut.rotate(8, fillcolor=(90, 90, 90)).save(folder / "a_rotated.png")
    Image.fromarray(skimage.data.coffee()).resize((256, 192)).save(folder / "coffee.png")
    (folder / "text.jpg").write_text("not an image")
    # dlib-sized chips for --aligned: a real face chip and a different person's (LFW subset) face.
    lfw = skimage.data.lfw_subset()[0]
    Image.fromarray((np.repeat(lfw[..., None], 3, 2) * 255).astype(np.uint8)).resize((150, 150)).save(folder / "other_chip.png")
    return folder


def test_same_face_scores_high_and_json_holds_embeddings_and_cosine(photos, capsys):
    out = photos / "result.json"
    assert main([str(photos / "a.png"), str(photos / "a_rotated.png"), "--json", str(out)]) == 0
    cosine = float(capsys.readouterr().out.strip())
    payload = json.loads(out.read_text())
    a, b = np.array(payload[str(photos / "a.png")]), np.array(payload[str(photos / "a_rotated.png")])
    assert a.shape == (128,) and np.isclose(np.linalg.norm(a), 1, atol=1e-4)
    assert np.isclose(payload["cosine"], float(a @ b), atol=1e-4) and np.isclose(cosine, payload["cosine"], atol=1e-3)
    assert cosine > 0.9


def test_aligned_chips_of_different_people_score_lower_than_same_person(photos, capsys, tmp_path):
    # A real dlib-framed chip of the astronaut: detect, align to the template, take the dlib box.
    image = read_rgb_image(photos / "a.png")
    record = align_photo(image, FaceDetector())
    net = build_identity_net("dlib")
    chip = net.to_backbone_input(warp_to_crop(image_to_tensor(image), record.transform)[None].clamp(0, 1))[0]
    save_png(chip, tmp_path / "chip_a.png")
    save_png(chip.flip(-1), tmp_path / "chip_a_flip.png")
    assert main([str(tmp_path / "chip_a.png"), str(tmp_path / "chip_a_flip.png"), "--aligned"]) == 0
    same = float(capsys.readouterr().out)
    assert main([str(tmp_path / "chip_a.png"), str(photos / "other_chip.png"), "--aligned"]) == 0
    different = float(capsys.readouterr().out)
    assert same > different + 0.1


@pytest.mark.parametrize("name, message", [("coffee.png", "no face detected"), ("text.jpg", "cannot read image")])
def test_bad_input_gives_one_line_and_exit_code_2(photos, capsys, name, message):
    assert main([str(photos / "a.png"), str(photos / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and name in err and "\n" not in err
