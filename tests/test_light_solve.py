"""coarse.light "solved": the closed-form SH light (render.shading.fit_sh_light) and the pipeline around it."""
import math

import pytest
import torch
import torch.nn.functional as F

from coarse import coefficients as C
from coarse.face_model import assemble_face
from coarse.synthface import build_synthface
from data.samples import collate_face_samples
from experiments.config import ConfigError, load_config
from experiments.evaluate import synthfaces_test_set
from experiments.pipeline import FacePipeline, fine_stage_inputs, skin_reader
from losses import albedo_gain
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


def test_the_split_between_albedo_and_light_brightness_is_left_to_the_prior():
    """Scaling the albedo by s and the prior light by 1/s scales the solved light by 1/s: the same render, so the
    photo cannot prefer a brighter or darker albedo through the ridge (with a ridge blind to the albedo's scale,
    the brighter albedo fitted better and training drifted toward it)."""
    g = torch.Generator().manual_seed(4)
    albedo, normals, gamma = _random_scene(g, b=2)
    albedo, normals = albedo.double(), normals.double()
    colours = albedo * sh_shading(normals, gamma.double(), C.SH_DC_INIT) + 0.05 * torch.randn(2, 400, 3, generator=g)
    prior = 0.3 * torch.randn(2, 27, generator=g).double()

    def with_dc(light):
        light = light.reshape(2, 3, 9).clone()
        light[..., 0] += C.SH_DC_INIT
        return light

    weights = torch.ones(2, 400, dtype=torch.float64)
    base = with_dc(fit_sh_light(albedo, normals, colours, weights, prior, C.SH_DC_INIT, ridge=0.1))
    for s in (0.5, 2.0):
        scaled_prior = with_dc(prior) / s
        scaled_prior[..., 0] -= C.SH_DC_INIT
        solved = with_dc(fit_sh_light(s * albedo, normals, colours, weights, scaled_prior.reshape(2, 27),
                                      C.SH_DC_INIT, ridge=0.1))
        assert torch.allclose(solved * s, base, atol=1e-9)


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


def test_the_albedo_gain_anchor_sees_the_brightness_split_and_not_the_pattern():
    model = build_synthface()
    reference, skin = model.mean_albedo, model.skin_mask
    pattern = reference.clone()
    pattern[skin] = pattern[skin] + 0.05 * torch.sin(torch.arange(int(skin.sum())).float()).unsqueeze(-1)
    pattern[skin] = pattern[skin] - pattern[skin].mean(0) + reference[skin].mean(0)  # the same mean, other pattern
    pattern[~skin] = 0.2  # outside the skin: not counted
    assert float(albedo_gain(pattern.unsqueeze(0), reference, skin)) < 1e-10
    brighter, darker = albedo_gain(2 * reference[None], reference, skin), albedo_gain(reference[None] / 2, reference, skin)
    assert float(brighter) == pytest.approx(math.log(2) ** 2, rel=1e-5)
    assert float(darker) == pytest.approx(float(brighter), rel=1e-5)
    gain = torch.tensor([1.2, 1.0, 0.9], requires_grad=True)
    albedo_gain(reference[None] * gain, reference, skin).backward()
    assert gain.grad[0] > 0 and abs(float(gain.grad[1])) < 1e-8 and gain.grad[2] < 0  # back toward the reference


def test_the_default_anchors_the_albedo_gain_in_both_stages_and_the_paper_does_not():
    default, paper = load_config("experiments/configs/default.yaml"), load_config("experiments/configs/paper.yaml")
    assert default.coarse.light == "solved" and default.losses.albedo_gain > 0
    assert paper.coarse.light == "regressed" and paper.losses.albedo_gain == 0


def test_a_fine_checkpoint_records_the_parsing_net_whenever_the_light_reads_through_it():
    for light, read_skin_only, recorded in (("solved", False, True), ("solved", True, True),
                                            ("regressed", True, True), ("regressed", False, False)):
        cfg = load_config(None, {"coarse": {"light": light}, "fine": {"read_skin_only": read_skin_only}})
        assert ("parsing_net_sha1" in fine_stage_inputs(cfg)) == recorded, (light, read_skin_only)
