"""coarse.mirror: the coefficients of a face in the horizontally flipped photo, and test-time flip averaging."""
import pytest
import torch

from coarse import coefficients as C
from coarse.mirror import CoefficientMirror, flip_average
from coarse.synthface import build_synthface
from data.synthfaces import SynthFaces, SynthFacesConfig
from experiments.pipeline import FacePipeline

SIZE = 48


@pytest.fixture(scope="module")
def model():
    return build_synthface()


@pytest.fixture(scope="module")
def mirror(model):
    return CoefficientMirror(model)


@pytest.fixture(scope="module")
def true_coeffs():
    data = SynthFaces("val", size=4, config=SynthFacesConfig(image_size=SIZE, occlusion_prob=0.0))
    return torch.stack([data[i]["coeffs"] for i in range(4)])


def test_mirrored_coefficients_render_the_flipped_image(model, mirror, true_coeffs):
    pipeline = FacePipeline.mean_face(model, SIZE)
    with torch.no_grad():
        direct = pipeline.render(true_coeffs, None, SIZE)
        mirrored = pipeline.render(mirror(true_coeffs), None, SIZE)
    flipped_image, flipped_mask = direct.image.flip(-1), direct.mask.flip(-1)
    both = (flipped_mask * mirrored.mask) > 0.5
    union = (flipped_mask + mirrored.mask) > 0.5
    assert both.sum() / union.sum() > 0.98
    error = (flipped_image - mirrored.image).abs().mean(1, keepdim=True)[both].mean()
    unflipped = (direct.image - mirrored.image).abs().mean(1, keepdim=True)[both].mean()
    assert error < 0.01 and unflipped > 5 * error  # the faces are turned and lit asymmetrically


def test_the_spans_are_nearly_closed_under_the_mirror(mirror):
    assert set(mirror.residual) == {"id", "exp", "tex"}
    assert all(0 <= value < 0.05 for value in mirror.residual.values())


def test_a_frontal_neutral_face_is_its_own_mirror_image(mirror):
    coeffs = torch.zeros(1, C.N_COEFFS)
    coeffs[:, C.ANGLE] = torch.tensor([0.2, 0.0, 0.0])  # pitch alone is symmetric
    coeffs[:, C.TRANS] = torch.tensor([0.0, 0.1, -0.3])
    coeffs[:, C.GAMMA.start] = 0.3
    assert torch.allclose(mirror(coeffs), coeffs, atol=1e-6)


def test_pose_translation_and_light_change_sign_where_x_is_odd(mirror):
    coeffs = torch.zeros(1, C.N_COEFFS)
    coeffs[:, C.ANGLE] = torch.tensor([0.1, 0.2, 0.3])
    coeffs[:, C.TRANS] = torch.tensor([0.4, 0.5, 0.6])
    coeffs[:, C.GAMMA] = 1.0
    out = mirror(coeffs)
    assert out[0, C.ANGLE].tolist() == pytest.approx([0.1, -0.2, -0.3])
    assert out[0, C.TRANS].tolist() == pytest.approx([-0.4, 0.5, 0.6])
    gamma = out[0, C.GAMMA].reshape(3, 9)
    assert (gamma[:, [3, 4, 7]] == -1).all() and (gamma[:, [0, 1, 2, 5, 6, 8]] == 1).all()


def test_flip_average_regresses_both_views_in_one_batch_and_mirrors_the_second(mirror):
    images = torch.rand(2, 3, SIZE, SIZE)
    seen = []
    outputs = torch.randn(4, C.N_COEFFS)

    def regress(batch):
        seen.append(batch)
        return outputs

    averaged = flip_average(regress, images, mirror)
    assert len(seen) == 1 and torch.equal(seen[0][:2], images) and torch.equal(seen[0][2:], images.flip(-1))
    assert torch.allclose(averaged, 0.5 * (outputs[:2] + mirror(outputs[2:])))


def test_the_pipeline_averages_only_without_gradients(model):
    pipeline = FacePipeline.mean_face(model, SIZE)
    calls = []

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, batch):
            calls.append(batch.shape[0])
            return self.inner(batch)

    pipeline.regressor = Counting(pipeline.regressor)
    pipeline.flip_average = True
    images = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        pipeline.regress(images)
    pipeline.regress(images)
    assert calls == [6, 3]
