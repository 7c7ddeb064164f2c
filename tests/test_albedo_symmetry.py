"""The left-right symmetry prior on the fine albedo: the mirror map of the mesh and the loss term."""
import pytest
import torch

from coarse.morphable_model import mirror_vertices
from coarse.synthface import build_synthface
from experiments.config import load_config
from experiments.objectives.fine import FineObjective
from losses import albedo_symmetry

RESOLUTION = 25


@pytest.fixture(scope="module")
def model():
    return build_synthface(resolution=RESOLUTION)


def test_the_mirror_map_pairs_each_vertex_with_its_reflection(model):
    mirror = mirror_vertices(model.mean_shape)
    assert torch.equal(mirror[mirror], torch.arange(model.num_vertices))  # left -> right -> left
    reflected = model.mean_shape * torch.tensor([-1.0, 1.0, 1.0])
    assert torch.allclose(model.mean_shape[mirror], reflected, atol=1e-5)
    on_the_midline = model.mean_shape[:, 0].abs() < 1e-6
    assert on_the_midline.any() and torch.equal(mirror[on_the_midline], torch.nonzero(on_the_midline).squeeze(1))
    assert (mirror != torch.arange(model.num_vertices)).sum() > model.num_vertices // 2


def test_a_mesh_off_the_midline_is_refused_in_one_line(model):
    shifted = model.mean_shape + torch.tensor([0.2, 0.0, 0.0])
    with pytest.raises(ValueError, match="not left-right symmetric") as error:
        mirror_vertices(shifted)
    assert "\n" not in str(error.value)


def test_the_symmetry_term_is_zero_for_a_symmetric_albedo_and_counts_only_skin(model):
    mirror, skin = mirror_vertices(model.mean_shape), model.skin_mask
    g = torch.Generator().manual_seed(0)
    half = torch.rand(2, model.num_vertices, 3, generator=g)
    symmetric = 0.5 * (half + half[:, mirror])
    assert float(albedo_symmetry(symmetric, mirror, skin)) < 1e-12
    lopsided = symmetric.clone()
    left = model.mean_shape[:, 0] < -0.1
    brighter = left & skin
    lopsided[:, brighter] += 0.1  # one cheek brighter: shading baked in from one side
    # each skin vertex on either side of a brightened pair differs from its mirror by 0.1 in 3 channels
    expected = 3 * 0.1 ** 2 * float((skin & (brighter | brighter[mirror])).sum()) / float(skin.sum())
    assert float(albedo_symmetry(lopsided, mirror, skin)) == pytest.approx(expected, rel=1e-4)
    outside = symmetric.clone()
    off_skin = left & ~skin & ~skin[mirror]  # neither the vertex nor its mirror is counted
    assert off_skin.any()
    outside[:, off_skin] += 0.3
    assert float(albedo_symmetry(outside, mirror, skin)) < 1e-12
    lopsided.requires_grad_(True)
    albedo_symmetry(lopsided, mirror, skin).backward()
    brightened = left & skin & skin[mirror]
    assert (lopsided.grad[:, brightened] > 0).all()  # the bright side is pulled down...
    assert (lopsided.grad[:, mirror[brightened]] < 0).all()  # ...and its mirror up


def test_stage_two_adds_the_term_only_when_weighted_and_the_default_weighs_it(model):
    class Pipeline:  # FineObjective reads only the model until it is called
        pass

    pipeline = Pipeline()
    pipeline.model = model
    no_augmentation = {"augment": {"pose": False, "occlusion": False}}
    default = load_config("experiments/configs/default.yaml", no_augmentation)
    assert default.losses.albedo_symmetry > 0
    assert load_config("experiments/configs/paper.yaml").losses.albedo_symmetry == 0  # not in the paper
    objective = FineObjective(pipeline, default.losses, default.augment, 0.01, None, None, None, 48)
    assert torch.equal(objective.mirror, mirror_vertices(model.mean_shape))
    off = load_config("experiments/configs/default.yaml", {**no_augmentation, "losses": {"albedo_symmetry": 0.0}})
    assert FineObjective(pipeline, off.losses, off.augment, 0.01, None, None, None, 48).mirror is None
