import numpy as np
import pytest
import torch

from coarse import coefficients as C
from data.samples import collate_face_samples
from data.synthfaces import SYNTHFACES_ATTRIBUTES, SynthFaces, SynthFacesConfig, preview, template_translation
from perception.template import TEMPLATE_LANDMARKS5


@pytest.fixture(scope="module")
def small():
    return SynthFacesConfig(image_size=64, occlusion_prob=0.5)


def test_same_seed_and_index_give_identical_samples(small):
    a = SynthFaces("train", size=10, seed=3, config=small)[7]
    b = SynthFaces("train", size=10, seed=3, config=small)[7]
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key], key
    c = SynthFaces("train", size=10, seed=4, config=small)[7]
    assert not torch.equal(a["coeffs"], c["coeffs"])


def test_splits_have_disjoint_identities(small):
    ids = {}
    for split in ("train", "val", "test"):
        data = SynthFaces(split, size=6, seed=0, config=small)
        ids[split] = torch.stack([data.identity(i)["id"] for i in range(6)])
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        distances = torch.cdist(ids[a], ids[b])
        assert distances.min() > 1.0, (a, b)


def test_stored_truth_rerenders_the_clean_image(small):
    data = SynthFaces("val", size=4, seed=0, config=small)
    sample = data[2]
    with torch.no_grad():
        again = data.render(sample["coeffs"][None], sample["albedo"][None], None)
    mask = again["render_mask"][0].bool().expand(3, -1, -1)
    assert mask.sum() > 200
    assert torch.allclose(again["image"][0][mask], sample["clean_image"][mask], atol=1e-5)
    # The albedo carries detail outside the PCA span: it differs from the PCA albedo of the coefficients.
    pca = (data.model.mean_albedo + (data.model.albedo_base @ sample["coeffs"][C.TEX]).reshape(-1, 3)).clamp(0, 1)
    assert (sample["albedo"] - pca).abs().max() > 0.05


def test_views_of_one_identity_share_identity_and_differ_in_view():
    data = SynthFaces("test", size=6, seed=0, config=SynthFacesConfig(image_size=64, views_per_identity=3))
    a, b, c = data[0], data[1], data[3]
    assert a["identity"] == b["identity"] != c["identity"]
    assert torch.equal(a["coeffs"][C.ID], b["coeffs"][C.ID]) and torch.equal(a["albedo"], b["albedo"])
    assert not torch.equal(a["coeffs"][C.ANGLE], b["coeffs"][C.ANGLE])


def test_landmarks_lie_on_the_rendered_face_and_occluder_matches_label(small):
    data = SynthFaces("train", size=12, seed=1, config=small)
    seen_occluded = seen_clean = False
    for i in range(12):
        s = data[i]
        pts = s["landmarks5"].round().long().clamp(0, 63)
        assert s["render_mask"][0, pts[:, 1], pts[:, 0]].mean() >= 0.8
        occluded = s["occluder"] != "none"
        assert occluded == bool(s["occluder_mask"].sum() > 0)
        assert s["attributes"][SYNTHFACES_ATTRIBUTES.index("occluded")] == float(occluded)
        assert s["attributes"][SYNTHFACES_ATTRIBUTES.index("glasses")] == float(s["occluder"] == "glasses")
        assert torch.equal(s["image"], s["clean_image"]) != occluded
        seen_occluded |= occluded
        seen_clean |= not occluded
    assert seen_occluded and seen_clean


def test_mean_face_is_placed_on_the_aligned_template():
    data = SynthFaces("train", size=1, config=SynthFacesConfig(image_size=224))
    from coarse.face_model import assemble_face

    coeffs = torch.zeros(1, C.N_COEFFS)
    coeffs[0, C.TRANS] = template_translation(data.model)
    face = assemble_face(data.model, coeffs, 224)
    marks = data.model.landmarks5_from_68(face.landmarks)[0] - 0.5
    assert np.abs(marks.numpy() - TEMPLATE_LANDMARKS5).max() < 4.0


def test_samples_collate_into_a_batch(small):
    data = SynthFaces("train", size=4, config=small)
    batch = collate_face_samples([data[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 64, 64) and batch["coeffs"].shape == (4, 257)
    assert batch["attributes"].shape == (4, len(SYNTHFACES_ATTRIBUTES))


def test_attributes_vary_across_identities():
    data = SynthFaces("train", size=40, config=SynthFacesConfig(image_size=32))
    attrs = torch.stack([data[i]["attributes"] for i in range(40)])
    rates = attrs.mean(0)
    for name in ("dark_skin", "masculine", "aged", "occluded"):
        rate = rates[SYNTHFACES_ATTRIBUTES.index(name)]
        assert 0.05 < rate < 0.95, (name, float(rate))


def test_preview_writes_a_contact_sheet(tmp_path):
    path = preview(tmp_path, count=2, image_size=48)
    assert path.is_file() and path.stat().st_size > 1000
