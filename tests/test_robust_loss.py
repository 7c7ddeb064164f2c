from dataclasses import replace

import pytest
import torch

from augment.self_augmentation import SelfAugmentation, SelfAugmentationConfig, SelfAugmentationOutput
from coarse import coefficients as C
from coarse.synthface import build_synthface
from data.synthfaces import SynthFaces, SynthFacesConfig
from losses.robust import RobustWeights, robust_loss
from tests.procedural_faces import one_thread  # noqa: F401  (autouse: torch on one thread)
from tests.toy_networks import ToyAttributeNet, ToyIdentityNet, ToyReconstructor

SIZE = 64
BATCH = 2
ALL_TERMS = {
    "rob_id_rot", "rob_att_rot", "sa_photo_orig_rot", "rob_id_rot_view", "rob_att_rot_view", "sa_photo_rot",
    "rob_id_occ", "rob_att_occ", "sa_photo_orig_occ", "sa_photo_occ",
}


@pytest.fixture(scope="module")
def scene():
    model = build_synthface(resolution=31)
    data = SynthFaces("train", size=4, seed=1, model=model,
                      config=SynthFacesConfig(image_size=SIZE, occlusion_prob=0.0))
    samples = [data[i] for i in range(BATCH)]
    base = torch.zeros(C.N_COEFFS)
    base[C.TRANS] = data.base_translation
    return {
        "model": model,
        "image": torch.stack([s["image"] for s in samples]),
        "skin": torch.stack([s["face_mask"] for s in samples]),  # stands in for the parsing mask M
        "base": base,
        "identity_net": ToyIdentityNet().eval().requires_grad_(False),
        "attribute_net": ToyAttributeNet().eval().requires_grad_(False),
    }


def run(scene, net, seed=0, config=SelfAugmentationConfig(), weights=RobustWeights(), image=None):
    image = scene["image"] if image is None else image
    with torch.no_grad():
        coeffs, albedo = net(image)
    runner = SelfAugmentation(scene["model"], config, SIZE)
    out = runner(net, image, coeffs, albedo, torch.Generator().manual_seed(seed))
    total, terms = robust_loss(scene["identity_net"], scene["attribute_net"], image, scene["skin"], out, weights)
    return total, terms, out


def test_every_term_is_named_finite_and_nonzero(scene):
    total, terms, _ = run(scene, ToyReconstructor(scene["model"], scene["base"]))
    assert set(terms) == ALL_TERMS
    for name, value in terms.items():
        assert value.dim() == 0 and torch.isfinite(value), name
        assert value > 1e-3, name  # photometric terms floor at sqrt(eps) = 1e-4 when identical
    assert torch.isfinite(total) and total > 0


def test_total_is_the_weighted_sum_and_zero_weights_skip_their_terms(scene):
    net = ToyReconstructor(scene["model"], scene["base"])
    weights = RobustWeights(id=0.7, att=0.3, photo=2.0)
    total, terms, out = run(scene, net, weights=weights)
    kind = {"id": weights.id, "att": weights.att, "photo": weights.photo}
    expected = sum(kind["id" if "_id_" in n else "att" if "_att_" in n else "photo"] * v for n, v in terms.items())
    assert torch.allclose(total, expected)
    total, terms = robust_loss(None, None, scene["image"], scene["skin"], out, RobustWeights(id=0.0, att=0.0))
    assert set(terms) == {n for n in ALL_TERMS if n.startswith("sa_photo")}
    assert torch.allclose(total, sum(terms.values()) * RobustWeights().photo)


def test_terms_change_when_the_network_weights_change(scene):
    net = ToyReconstructor(scene["model"], scene["base"], seed=0)
    _, before, _ = run(scene, net)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(9)))
    _, after, _ = run(scene, net)
    for name in ALL_TERMS:
        assert not torch.isclose(before[name], after[name], rtol=1e-4, atol=0), name


def test_gradients_reach_the_network_from_every_term(scene):
    net = ToyReconstructor(scene["model"], scene["base"])
    _, terms, _ = run(scene, net)
    parameters = list(net.parameters())
    for name, value in terms.items():
        grads = torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)
        reached = sum(float(g.abs().sum()) for g in grads if g is not None)
        assert reached > 0 and all(torch.isfinite(g).all() for g in grads if g is not None), name
        # both the coefficient head (shape, pose, light) and the per-vertex albedo are trained
        assert grads[-1] is not None and grads[-1].abs().sum() > 0, name


def test_photometric_terms_ignore_pixels_outside_their_masks(scene):
    net = ToyReconstructor(scene["model"], scene["base"])
    _, terms, out = run(scene, net)
    noise = torch.rand(scene["image"].shape, generator=torch.Generator().manual_seed(3))
    image = scene["image"]

    # The input I: only the skin mask times each original-view render mask counts.
    for branch, view in out.branches().items():
        outside = (scene["skin"] * view.original_view_mask) == 0
        changed = torch.where(outside, noise, image)
        _, again = robust_loss(None, None, changed, scene["skin"], out, RobustWeights(id=0.0, att=0.0))
        assert torch.allclose(again[f"sa_photo_orig_{branch}"], terms[f"sa_photo_orig_{branch}"], atol=1e-6)
        inside = torch.where(outside, image, noise)
        _, moved = robust_loss(None, None, inside, scene["skin"], out, RobustWeights(id=0.0, att=0.0))
        assert not torch.isclose(moved[f"sa_photo_orig_{branch}"], terms[f"sa_photo_orig_{branch}"])

    # I_rot against I_r_rot: only where both faces are rendered.
    rot = out.rotated
    outside = (rot.render_mask * rot.recon_mask) == 0
    altered = replace(rot, image=torch.where(outside, noise, rot.image))
    _, again = robust_loss(None, None, image, scene["skin"], replace(out, rotated=altered),
                           RobustWeights(id=0.0, att=0.0))
    assert torch.allclose(again["sa_photo_rot"], terms["sa_photo_rot"], atol=1e-6)

    # I_R against I_r_occ: only where both faces are rendered.
    outside = (out.rendered_mask * out.occluded.recon_mask) == 0
    altered = replace(out, rendered=torch.where(outside, noise, out.rendered))
    _, again = robust_loss(None, None, image, scene["skin"], altered, RobustWeights(id=0.0, att=0.0))
    assert torch.allclose(again["sa_photo_occ"], terms["sa_photo_occ"], atol=1e-6)


def test_pose_only_and_occlusion_only_give_only_their_terms(scene):
    net = ToyReconstructor(scene["model"], scene["base"])
    _, rot_terms, _ = run(scene, net, config=SelfAugmentationConfig(occlusion=False))
    _, occ_terms, _ = run(scene, net, config=SelfAugmentationConfig(pose=False))
    assert set(rot_terms) == {n for n in ALL_TERMS if "rot" in n}
    assert set(occ_terms) == {n for n in ALL_TERMS if "occ" in n}


def test_no_branches_give_a_zero_total_and_no_terms(scene):
    total, terms = robust_loss(scene["identity_net"], scene["attribute_net"], scene["image"], scene["skin"],
                               SelfAugmentationOutput())
    assert terms == {} and total.item() == 0.0


def test_a_missing_perception_net_with_a_positive_weight_is_one_clear_error(scene):
    with pytest.raises(ValueError, match="identity net"):
        robust_loss(None, scene["attribute_net"], scene["image"], scene["skin"], SelfAugmentationOutput())
    with pytest.raises(ValueError, match="attribute net"):
        robust_loss(scene["identity_net"], None, scene["image"], scene["skin"], SelfAugmentationOutput())


def test_without_feedback_the_network_is_not_rerun_and_l_rob_compares_the_input_with_the_augmented_renders(scene):
    """The "w/o SA" ablation: I_rot and I_occ are rendered from the first pass and compared with the input by
    the identity and attribute nets; nothing goes through the network a second time."""
    net = ToyReconstructor(scene["model"], scene["base"])
    image = scene["image"]
    coeffs, albedo = net(image)  # with gradient: without feedback the renders must carry it

    def second_pass(images):
        raise AssertionError("the network ran a second time without feedback")

    config = SelfAugmentationConfig(feedback=False)  # detach_inputs stays at its default, True
    out = SelfAugmentation(scene["model"], config, SIZE)(second_pass, image, coeffs, albedo,
                                                         torch.Generator().manual_seed(0))
    assert all(not view.fed_back for view in out.branches().values()) and set(out.branches()) == {"rot", "occ"}
    total, terms = robust_loss(scene["identity_net"], scene["attribute_net"], image, scene["skin"], out)
    assert set(terms) == {"rob_id_rot", "rob_att_rot", "rob_id_occ", "rob_att_occ"}
    assert all(torch.isfinite(v) and v > 0 for v in terms.values())
    grads = torch.autograd.grad(total, [p for p in net.parameters() if p.requires_grad], allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "L_rob without feedback trains nothing"


def test_feature_terms_batched_over_branches_equal_one_net_call_per_term(scene):
    """robust_loss runs each perception net once over all its terms' renders; the values must be those of
    one identity_loss / attribute_loss call per term (the nets are frozen, in eval mode)."""
    from losses.perceptual import attribute_loss, identity_loss

    net = ToyReconstructor(scene["model"], scene["base"])
    _, terms, out = run(scene, net)
    image, ids, atts = scene["image"], scene["identity_net"], scene["attribute_net"]
    rot, occ = out.rotated, out.occluded
    expected = {
        "rob_id_rot": identity_loss(ids, image, rot.original_view_image),
        "rob_id_occ": identity_loss(ids, image, occ.original_view_image),
        "rob_id_rot_view": identity_loss(ids, rot.image, rot.recon_image),
        "rob_att_rot": attribute_loss(atts, image, rot.original_view_image),
        "rob_att_occ": attribute_loss(atts, image, occ.original_view_image),
        "rob_att_rot_view": attribute_loss(atts, rot.image, rot.recon_image),
    }
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, rtol=1e-5, atol=1e-6, msg=name)
