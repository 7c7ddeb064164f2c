import math

import pytest
import torch

from coarse.synthface import build_synthface
from fine import FAIDDecoder, FineOutput, FineStage, MeshRefiner, build_mesh_hierarchy

CHANNELS = (8, 16, 16)          # three levels down from the 961-vertex test mesh
FEATURES = 12


@pytest.fixture(scope="module")
def hierarchy():
    model = build_synthface(resolution=31)
    return build_mesh_hierarchy(model.mean_shape, model.triangles, factors=(4, 4, 4))


def _coarse_albedo(hierarchy, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    base = 0.3 + 0.4 * torch.rand(batch, 1, 3, generator=generator)
    x = hierarchy.vertices[0][:, 0]
    return (base + 0.1 * torch.sin(3 * x)[None, :, None]).expand(batch, -1, 3).clone()


def _pattern(hierarchy) -> torch.Tensor:
    """(N, 3) per-vertex colour detail of a few vertex spacings' wavelength: what a refiner should add."""
    v = hierarchy.vertices[0]
    return 0.1 * torch.stack([torch.sin(12 * v[:, 0]), torch.cos(10 * v[:, 1]), torch.sin(8 * (v[:, 0] + v[:, 1]))], -1)


def _perturb(module: torch.nn.Module) -> None:
    """Random weights everywhere, so that corrections are non-zero."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


def _fit(module, inputs, target, steps: int):
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    reached = {name: False for name, _ in module.named_parameters()}
    losses = []
    for _ in range(steps):
        optimiser.zero_grad()
        loss = (module(*inputs) - target).square().mean()
        loss.backward()
        for name, p in module.named_parameters():
            reached[name] |= p.grad is not None and bool(p.grad.abs().sum() > 0)
        optimiser.step()
        losses.append(loss.item())
    return losses, reached


def test_refiner_and_decoder_output_zero_correction_at_initialisation(hierarchy):
    torch.manual_seed(0)
    n = hierarchy.num_vertices[0]
    albedo = _coarse_albedo(hierarchy, 3)
    correction = MeshRefiner(hierarchy, CHANNELS, K=4)(albedo)
    assert correction.shape == (3, n, 3)
    assert torch.equal(correction, torch.zeros_like(correction))
    correction = FAIDDecoder(hierarchy, FEATURES, CHANNELS, K=4)(torch.randn(3, FEATURES))
    assert correction.shape == (3, n, 3)
    assert torch.equal(correction, torch.zeros_like(correction))


@pytest.mark.parametrize("fusion", ["average", "learned"])
def test_fine_albedo_equals_coarse_albedo_at_initialisation(hierarchy, fusion):
    torch.manual_seed(0)
    albedo = _coarse_albedo(hierarchy, 2)
    out = FineStage(hierarchy, FEATURES, fusion=fusion, channels=CHANNELS, K=4)(albedo, torch.randn(2, FEATURES))
    assert isinstance(out, FineOutput)
    assert torch.equal(out.albedo, albedo)


def test_refiner_learns_a_vertex_colour_pattern_and_trains_every_parameter(hierarchy):
    torch.manual_seed(0)
    refiner = MeshRefiner(hierarchy, CHANNELS, K=4)
    # Toy task: the coarse albedo carries a faint version of the detail, the refiner must double its
    # contrast (a local high-pass of its input, as recovering detail from a blurred albedo).
    detail = _pattern(hierarchy).expand(2, -1, -1)
    albedo = _coarse_albedo(hierarchy, 2) + detail
    losses, reached = _fit(refiner, (albedo,), detail, steps=40)
    assert all(reached.values()), [name for name, ok in reached.items() if not ok]
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_faid_decoder_learns_one_pattern_per_feature_vector_and_trains_every_parameter(hierarchy):
    torch.manual_seed(0)
    decoder = FAIDDecoder(hierarchy, FEATURES, CHANNELS, K=4)
    features = torch.randn(2, FEATURES)
    pattern = _pattern(hierarchy)
    target = torch.stack([pattern, -pattern])      # opposite details for the two "identities"
    losses, reached = _fit(decoder, (features,), target, steps=40)
    assert all(reached.values()), [name for name, ok in reached.items() if not ok]
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_average_fusion_is_the_mean_of_the_two_branch_albedos(hierarchy):
    torch.manual_seed(0)
    stage = FineStage(hierarchy, FEATURES, fusion="average", channels=CHANNELS, K=4)
    _perturb(stage)
    albedo, features = _coarse_albedo(hierarchy, 2), torch.randn(2, FEATURES)
    out = stage(albedo, features)
    assert out.mesh_correction.abs().max() > 1e-4 and out.faid_correction.abs().max() > 1e-4
    torch.testing.assert_close(out.mesh_correction, stage.mesh_refiner(albedo))
    torch.testing.assert_close(out.faid_correction, stage.faid_decoder(features))
    mean_of_albedos = 0.5 * ((albedo + out.mesh_correction) + (albedo + out.faid_correction))
    torch.testing.assert_close(out.albedo, mean_of_albedos)


def test_learned_fusion_starts_at_one_half_and_weighs_branches_per_vertex(hierarchy):
    torch.manual_seed(0)
    stage = FineStage(hierarchy, FEATURES, fusion="learned", channels=CHANNELS, K=4)
    _perturb(stage)
    albedo, features = _coarse_albedo(hierarchy, 2), torch.randn(2, FEATURES)
    with torch.no_grad():
        stage.fusion_logit.zero_()
    out = stage(albedo, features)
    torch.testing.assert_close(out.albedo, albedo + 0.5 * (out.mesh_correction + out.faid_correction))
    with torch.no_grad():
        stage.fusion_logit.copy_(torch.linspace(-3, 3, stage.num_vertices)[:, None])
    out = stage(albedo, features)
    weight = torch.sigmoid(torch.linspace(-3, 3, stage.num_vertices))[None, :, None]
    torch.testing.assert_close(out.albedo, albedo + weight * out.mesh_correction + (1 - weight) * out.faid_correction)
    out.albedo.sum().backward()
    assert stage.fusion_logit.grad is not None and float(stage.fusion_logit.grad.abs().sum()) > 0


def test_without_faid_only_the_mesh_branch_refines(hierarchy):
    torch.manual_seed(0)
    stage = FineStage(hierarchy, use_faid=False, channels=CHANNELS, K=4)
    assert stage.faid_decoder is None
    _perturb(stage)
    albedo = _coarse_albedo(hierarchy, 2)
    out = stage(albedo)
    assert out.faid_correction is None
    torch.testing.assert_close(out.albedo, albedo + out.mesh_correction)
    torch.testing.assert_close(stage(albedo, torch.randn(2, 99)).albedo, out.albedo)   # features ignored


def test_without_mesh_branch_only_the_faid_branch_refines(hierarchy):
    torch.manual_seed(0)
    stage = FineStage(hierarchy, FEATURES, use_mesh=False, channels=CHANNELS, K=4)
    _perturb(stage)
    albedo, features = _coarse_albedo(hierarchy, 2), torch.randn(2, FEATURES)
    out = stage(albedo, features)
    assert out.mesh_correction is None
    torch.testing.assert_close(out.albedo, albedo + out.faid_correction)


def test_fine_stage_rejects_inconsistent_flags_and_inputs(hierarchy):
    with pytest.raises(ValueError, match="use_mesh or use_faid"):
        FineStage(hierarchy, FEATURES, use_mesh=False, use_faid=False, channels=CHANNELS)
    with pytest.raises(ValueError, match="fusion must be one of"):
        FineStage(hierarchy, FEATURES, fusion="max", channels=CHANNELS)
    with pytest.raises(ValueError, match="fusion='learned'"):
        FineStage(hierarchy, FEATURES, fusion="learned", use_faid=False, channels=CHANNELS)
    with pytest.raises(ValueError, match="feature_dim"):
        FineStage(hierarchy, None, channels=CHANNELS)
    with pytest.raises(ValueError, match="levels"):
        FineStage(hierarchy, FEATURES, channels=(8, 8, 8, 8))       # needs 5 levels, the hierarchy has 4
    stage = FineStage(hierarchy, FEATURES, channels=CHANNELS, K=3)
    albedo = _coarse_albedo(hierarchy, 2)
    with pytest.raises(ValueError, match="needs features of shape"):
        stage(albedo)
    with pytest.raises(ValueError, match="needs features of shape"):
        stage(albedo, torch.randn(2, FEATURES + 1))
    with pytest.raises(ValueError, match="coarse_albedo must be"):
        stage(albedo[:, :-1], torch.randn(2, FEATURES))


def test_fine_stage_moves_with_the_module_and_checkpoints_hold_only_parameters(hierarchy):
    torch.manual_seed(0)
    stage = FineStage(hierarchy, FEATURES, fusion="learned", channels=CHANNELS, K=3)
    _perturb(stage)
    state = stage.state_dict()
    assert not any("indices" in key or "values" in key for key in state)
    copy = FineStage(hierarchy, FEATURES, fusion="learned", channels=CHANNELS, K=3)
    copy.load_state_dict(state)
    albedo, features = _coarse_albedo(hierarchy, 2), torch.randn(2, FEATURES)
    torch.testing.assert_close(copy(albedo, features).albedo, stage(albedo, features).albedo)
    doubled = copy.double()
    out = doubled(albedo.double(), features.double())
    assert out.albedo.dtype == torch.float64
    torch.testing.assert_close(out.albedo.float(), stage(albedo, features).albedo, atol=1e-5, rtol=1e-5)


def test_reset_parameters_restores_a_zero_correction(hierarchy):
    torch.manual_seed(0)
    stage = FineStage(hierarchy, FEATURES, fusion="learned", channels=CHANNELS, K=3)
    _perturb(stage)
    albedo, features = _coarse_albedo(hierarchy, 2), torch.randn(2, FEATURES)
    assert not torch.equal(stage(albedo, features).albedo, albedo)
    stage.reset_parameters()
    assert torch.equal(stage(albedo, features).albedo, albedo)
    assert math.isclose(torch.sigmoid(stage.fusion_logit.detach()).mean().item(), 0.5)
