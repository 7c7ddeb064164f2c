"""coarse.light "solved": the closed-form SH light (render.shading.fit_sh_light) and the pipeline around it."""
import pytest
import torch
import torch.nn.functional as F

from coarse import coefficients as C
from coarse.face_model import assemble_face
from coarse.synthface import build_synthface
from data.samples import collate_face_samples
from experiments.config import ConfigError, load_config
from experiments.evaluate import synthfaces_test_set
from experiments.pipeline import FacePipeline, skin_reader
from perception.training import CheckpointError
from render.rasterizer import render_mesh
from render.shading import fit_sh_light, sh_shading
from tests.test_warm_start import Fixed  # a regressor that predicts the same coefficients for every batch

SIZE = 64


def _random_scene(generator, b=2, n=400):
    normals = F.normalize(torch.randn(b, n, 3, generator=generator), dim=-1)
    normals[..., 2] = normals[..., 2].abs()  # facing the camera, as seen vertices do
    albedo = 0.3 + 0.5 * torch.rand(b, n, 3, generator=generator)
    gamma = 0.2 * torch.randn(b, 27, generator=generator)
    return albedo, normals, gamma


def test_the_solved_light_reproduces_noiseless_colours_exactly_without_a_ridge():
    g = torch.Generator().manual_seed(0)
    albedo, normals, gamma = _random_scene(g)
    colours = albedo * sh_shading(normals, gamma, C.SH_DC_INIT)
    solved = fit_sh_light(albedo.double(), normals.double(), colours.double(), torch.ones(2, 400, dtype=torch.float64),
                          torch.zeros(2, 27, dtype=torch.float64), C.SH_DC_INIT, ridge=0.0)
    assert torch.allclose(solved.float(), gamma, atol=1e-4)


def test_unseen_vertices_do_not_count_and_a_face_with_none_seen_keeps_the_prior():
    g = torch.Generator().manual_seed(1)
    albedo, normals, gamma = _random_scene(g)
    colours = albedo * sh_shading(normals, gamma, C.SH_DC_INIT)
    weights = torch.ones(2, 400)
    weights[:, ::3] = 0
    weights[1] = 0  # face 1: nothing seen
    corrupted = colours.clone()
    corrupted[:, ::3] = torch.rand(2, 134, 3, generator=g)  # what an occluder would show at the unseen vertices
    prior = torch.randn(2, 27, generator=g)
    clean = fit_sh_light(albedo, normals, colours, weights, prior, C.SH_DC_INIT)
    occluded = fit_sh_light(albedo, normals, corrupted, weights, prior, C.SH_DC_INIT)
    assert torch.allclose(clean, occluded, atol=1e-5)
    assert torch.allclose(occluded[1], prior[1], atol=1e-5)
    assert not torch.allclose(occluded[0], prior[0], atol=1e-2)
    exact = fit_sh_light(albedo[:1], normals[:1], corrupted[:1], weights[:1], prior[:1], C.SH_DC_INIT, ridge=0.0)
    assert torch.allclose(exact[0], gamma[0], atol=1e-3)  # the seen two thirds alone determine the light


def test_the_ridge_pulls_the_light_toward_the_prior_and_gradients_reach_every_input():
    g = torch.Generator().manual_seed(2)
    albedo, normals, gamma = _random_scene(g, b=1)
    colours = albedo * sh_shading(normals, gamma, C.SH_DC_INIT)
    prior = torch.zeros(1, 27)
    distance = [float((fit_sh_light(albedo, normals, colours, torch.ones(1, 400), prior, C.SH_DC_INIT, r) - prior)
                      .norm()) for r in (0.0, 0.1, 10.0)]
    assert distance[0] > distance[1] > distance[2]
    inputs = [t.clone().requires_grad_() for t in (albedo, normals, colours, prior)]
    fit_sh_light(*inputs[:3], torch.ones(1, 400), inputs[3], C.SH_DC_INIT, 0.1).square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in inputs)


@pytest.fixture(scope="module")
def faces():
    model = build_synthface()
    dataset = synthfaces_test_set(model, size=4, image_size=SIZE, split="val")
    return model, collate_face_samples([dataset[i] for i in range(4)])


def _face_error(model, coeffs, batch):
    face = assemble_face(model, coeffs, SIZE)
    out = render_mesh(face.screen, model.triangles, face.colors, SIZE)
    region = batch["face_mask"] * out.mask.reshape(batch["face_mask"].shape)
    return float(((out.image - batch["clean_image"]) ** 2 * region).sum() / region.sum())


def test_a_pipeline_with_solved_light_renders_the_photo_better_than_a_wrong_regressed_light(faces):
    model, batch = faces
    wrong = batch["coeffs"].clone()
    wrong[:, C.GAMMA] = 0  # the mean (DC) light; shape, pose and PCA albedo as the truth
    wrong[:, C.TEX] = 0    # and the mean albedo
    regressed = FacePipeline(model, Fixed(wrong), SIZE).eval()
    solved = FacePipeline(model, Fixed(wrong), SIZE, light="solved").eval()
    with torch.no_grad():
        before = regressed.predict(batch["clean_image"]).coeffs
        after = solved.predict(batch["clean_image"]).coeffs
    assert torch.equal(before, wrong)
    assert torch.equal(after[:, :C.GAMMA.start], wrong[:, :C.GAMMA.start])  # only the light changes
    assert torch.equal(after[:, C.GAMMA.stop:], wrong[:, C.GAMMA.stop:])
    assert _face_error(model, after, batch) < 0.25 * _face_error(model, before, batch)
    assert torch.equal(solved.regress(batch["clean_image"]), wrong)  # what the warm start supervises


def test_the_light_mode_is_a_checked_config_field():
    assert load_config(None, {"coarse": {"light": "solved"}}).coarse.light == "solved"
    assert load_config("experiments/configs/paper.yaml").coarse.light == "regressed"  # the paper regresses it
    with pytest.raises(ConfigError, match="coarse.light: 'fitted' is not one of regressed, solved"):
        load_config(None, {"coarse": {"light": "fitted"}})


def test_a_solved_light_reads_skin_through_the_parsing_net_when_it_exists_and_everywhere_when_not(tmp_path):
    missing = {"perception": {"parsing_checkpoint": str(tmp_path / "none.pt")}}
    solved = load_config(None, {"coarse": {"light": "solved"}, "fine": {"read_skin_only": False}, **missing})
    assert skin_reader(solved, required=False) is None  # the light is then fitted wherever the face covers the photo
    with pytest.raises(CheckpointError):
        skin_reader(solved)
    neither = load_config(None, {"fine": {"read_skin_only": False}, **missing})
    assert skin_reader(neither) is None
