from dataclasses import replace

import pytest
import torch

from augment.self_augmentation import (
    PoseRanges, SelfAugmentation, SelfAugmentationConfig, original_view_coefficients, random_pose,
)
from coarse import coefficients as C
from coarse.face_model import assemble_face
from coarse.synthface import build_synthface
from data.synthfaces import SynthFaces, SynthFacesConfig
from tests.procedural_faces import one_thread  # noqa: F401  (autouse: torch on one thread)
from tests.toy_networks import ToyReconstructor

SIZE = 64
BATCH = 2


@pytest.fixture(scope="module")
def scene():
    """A small SynthFace model, two clean SynthFaces inputs, a toy network and its first-pass prediction."""
    model = build_synthface(resolution=31)
    data = SynthFaces("train", size=4, seed=0, model=model,
                      config=SynthFacesConfig(image_size=SIZE, occlusion_prob=0.0))
    samples = [data[i] for i in range(BATCH)]
    image = torch.stack([s["image"] for s in samples])
    base = torch.zeros(C.N_COEFFS)
    base[C.TRANS] = data.base_translation
    net = ToyReconstructor(model, base)
    with torch.no_grad():
        coeffs, albedo = net(image)
    truth = (torch.stack([s["coeffs"] for s in samples]), torch.stack([s["albedo"] for s in samples]))
    return {"model": model, "image": image, "net": net, "coeffs": coeffs, "albedo": albedo, "truth": truth}


def augment(scene, config=SelfAugmentationConfig(), seed=0, net=None, coeffs=None, albedo=None):
    runner = SelfAugmentation(scene["model"], config, SIZE)
    return runner(net or scene["net"], scene["image"], scene["coeffs"] if coeffs is None else coeffs,
                  scene["albedo"] if albedo is None else albedo, torch.Generator().manual_seed(seed))


def test_random_pose_replaces_only_the_angles_within_the_ranges(scene):
    coeffs = scene["truth"][0].repeat(16, 1).requires_grad_(True)
    ranges = PoseRanges(yaw_deg=90, pitch_deg=30, roll_deg=20)
    rotated = random_pose(coeffs, ranges, torch.Generator().manual_seed(0))
    degrees = torch.rad2deg(rotated[:, C.ANGLE]).detach()
    assert (degrees.abs() <= torch.tensor([30.0, 90.0, 20.0])).all()
    assert degrees[:, 1].abs().max() > 45  # the yaw range is used, not just a sliver of it
    change = torch.rad2deg((rotated[:, C.ANGLE] - coeffs[:, C.ANGLE]).abs()).detach().amax(dim=1)
    assert (change > 3.0).float().mean() > 0.8
    keep = torch.ones(C.N_COEFFS, dtype=torch.bool)
    keep[C.ANGLE] = False
    assert torch.equal(rotated[:, keep], coeffs[:, keep])
    rotated[:, keep].sum().backward()  # the kept slices keep their gradients
    assert coeffs.grad[:, keep].eq(1).all() and coeffs.grad[:, C.ANGLE].eq(0).all()


def test_original_view_coefficients_take_pose_light_and_translation_from_the_original():
    reconstructed, original = torch.randn(3, C.N_COEFFS), torch.randn(3, C.N_COEFFS)
    moved = original_view_coefficients(reconstructed, original)
    for part in (C.ID, C.EXP, C.TEX):
        assert torch.equal(moved[:, part], reconstructed[:, part])
    for part in (C.ANGLE, C.GAMMA, C.TRANS):
        assert torch.equal(moved[:, part], original[:, part])


def test_rotated_view_shows_the_predicted_face_in_another_pose(scene):
    out = augment(scene)
    rot = out.rotated
    turned = torch.rad2deg((rot.coeffs[:, C.ANGLE] - scene["coeffs"][:, C.ANGLE]).abs()).amax(dim=1)
    assert (turned > 5.0).all()
    assert torch.equal(rot.coeffs[:, C.ID], scene["coeffs"][:, C.ID]) and torch.equal(rot.albedo, scene["albedo"])
    assert (rot.render_mask.flatten(1).sum(1) > 0.05 * SIZE * SIZE).all()  # the face is in frame
    # Where the face is drawn differs from the original render (pose), and so do the pixels.
    overlap = (rot.render_mask * out.rendered_mask).flatten(1).sum(1)
    union = ((rot.render_mask + out.rendered_mask) > 0).float().flatten(1).sum(1)
    assert (overlap / union < 0.95).all()
    assert ((rot.image - out.rendered).abs().amax(dim=1) > 0.1).float().mean() > 0.1
    assert rot.occluder_mask.eq(0).all()


def test_occluded_view_differs_from_the_render_only_under_the_occluder(scene):
    out = augment(scene)
    occ = out.occluded
    alpha = occ.occluder_mask
    assert (alpha.flatten(1).amax(1) > 0.5).all()  # every image got an occluder
    clear = alpha.eq(0).expand_as(occ.image)
    assert torch.equal(occ.image[clear], out.rendered[clear])
    covered = (alpha > 0.5).expand_as(occ.image)
    assert (occ.image[covered] - out.rendered[covered]).abs().mean() > 0.02
    # The occluder sits on the face: it covers part of the rendered face in every image.
    assert ((alpha * out.rendered_mask).flatten(1).sum(1) > 0.02 * out.rendered_mask.flatten(1).sum(1)).all()
    assert torch.equal(occ.coeffs, scene["coeffs"])


def test_a_perfect_network_reproduces_the_augmented_and_the_original_views(scene):
    """An oracle that returns the true coefficients of what it is shown closes every loop exactly."""
    coeffs, albedo = scene["truth"]
    config = SelfAugmentationConfig()
    rotated = random_pose(coeffs, config.pose_ranges, torch.Generator().manual_seed(5))  # the same first draw

    def oracle(images):
        assert images.shape[0] == 2 * BATCH
        return torch.cat([rotated, coeffs]), albedo.repeat(2, 1, 1)

    out = augment(scene, config, seed=5, net=oracle, coeffs=coeffs, albedo=albedo)
    rot, occ = out.rotated, out.occluded
    assert torch.equal(rot.coeffs, rotated)
    assert torch.equal(rot.recon_mask, rot.render_mask)
    assert torch.allclose(rot.recon_image, rot.image, atol=1e-5)
    assert torch.allclose(occ.recon_image, out.rendered, atol=1e-5)
    for view in (rot, occ):
        assert torch.equal(view.original_view_mask, out.rendered_mask)
        assert torch.allclose(view.original_view_image, out.rendered, atol=1e-5)
    # The original-view render lies over the input: it matches the true image where the face is.
    face = out.rendered_mask.bool().expand_as(scene["image"])
    assert torch.allclose(rot.original_view_image[face], scene["image"][face], atol=1e-4)


def test_same_generator_seed_gives_identical_output_and_another_seed_differs(scene):
    a, b, c = augment(scene, seed=3), augment(scene, seed=3), augment(scene, seed=4)
    for name in ("image", "occluder_mask", "recon_image", "original_view_image", "coeffs"):
        for branch in ("rotated", "occluded"):
            assert torch.equal(getattr(getattr(a, branch), name), getattr(getattr(b, branch), name))
    assert not torch.equal(a.rotated.image, c.rotated.image)
    assert not torch.equal(a.occluded.occluder_mask, c.occluded.occluder_mask)


class CountingNetwork:
    def __init__(self, net):
        self.net, self.batches = net, []

    def __call__(self, images):
        self.batches.append(images.shape[0])
        return self.net(images)


@pytest.mark.parametrize("pose, occlusion", [(False, False), (True, False), (False, True)])
def test_switched_off_branches_cost_nothing(scene, pose, occlusion):
    counter = CountingNetwork(scene["net"])
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    runner = SelfAugmentation(scene["model"], SelfAugmentationConfig(pose=pose, occlusion=occlusion), SIZE)
    out = runner(counter, scene["image"], scene["coeffs"], scene["albedo"], generator)
    assert (out.rotated is not None) == pose and (out.occluded is not None) == occlusion
    assert (out.rendered is not None) == occlusion
    if not (pose or occlusion):
        assert counter.batches == [] and torch.equal(generator.get_state(), state) and out.branches() == {}
    else:
        assert counter.batches == [BATCH]  # one second pass over this branch's images only


def test_gradients_reach_the_network_and_detach_inputs_decides_the_first_pass(scene):
    net = scene["net"]
    for detach in (True, False):
        net.zero_grad()
        coeffs, albedo = net(scene["image"])  # the first pass, with gradients
        out = augment(scene, replace(SelfAugmentationConfig(), detach_inputs=detach), coeffs=coeffs, albedo=albedo)
        augmented = out.rotated.image.sum() + out.occluded.image.sum() + out.rotated.original_view_image.sum()
        first = torch.autograd.grad(augmented, [coeffs, albedo], retain_graph=True, allow_unused=True)
        if detach:  # the first pass's outputs are constants of the augmentation
            assert all(g is None for g in first)
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in first)
        loss = sum(view.recon_image.sum() + view.original_view_image.sum() for view in out.branches().values())
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_config_rejects_unknown_kinds_and_bad_ranges():
    with pytest.raises(ValueError, match="occluder_kinds"):
        SelfAugmentationConfig(occluder_kinds=("scarf",))
    with pytest.raises(ValueError, match="background_kinds"):
        SelfAugmentationConfig(background_kinds=())
    with pytest.raises(ValueError, match="pose ranges"):
        SelfAugmentationConfig(pose_ranges=PoseRanges(yaw_deg=-1))


def test_wrong_image_size_is_one_clear_error(scene):
    runner = SelfAugmentation(scene["model"], SelfAugmentationConfig(), SIZE + 8)
    with pytest.raises(ValueError, match="self_augmentation.py"):
        runner(scene["net"], scene["image"], scene["coeffs"], scene["albedo"], torch.Generator().manual_seed(0))


def test_pose_ranges_map_yaw_to_the_y_angle_and_pitch_to_the_x_angle(scene):
    """Yaw turns the face left/right (the nose tip moves sideways), pitch nods it (the nose tip moves up/down)."""
    coeffs = scene["truth"][0][:1].clone()
    coeffs[:, C.ANGLE] = 0.0
    frontal = assemble_face(scene["model"], coeffs, SIZE).landmarks[0, 30]
    for ranges, axis in ((PoseRanges(yaw_deg=30, pitch_deg=0, roll_deg=0), 0),
                         (PoseRanges(yaw_deg=0, pitch_deg=30, roll_deg=0), 1)):
        posed = random_pose(coeffs.repeat(8, 1), ranges, torch.Generator().manual_seed(0))
        moved = (assemble_face(scene["model"], posed, SIZE).landmarks[:, 30] - frontal).abs()
        assert moved[:, axis].max() > 2.0 and (moved[:, axis] > moved[:, 1 - axis]).float().mean() >= 0.75
