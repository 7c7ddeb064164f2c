import torch

from coarse import coefficients as C
from losses.landmark import landmark_loss, landmark_weights
from losses.photometric import photometric_loss
from losses.regularisers import albedo_flatness, coefficient_regulariser


def test_photometric_loss_counts_only_masked_pixels():
    image = torch.zeros(1, 3, 4, 4)
    rendered = torch.zeros(1, 3, 4, 4)
    rendered[..., :2] = 1.0  # error only in the left half
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 2:] = 1
    assert photometric_loss(image, rendered, mask) < 1e-3
    mask[..., :2] = 1
    # Half of the masked pixels differ by (1, 1, 1): distance sqrt(3).
    assert torch.allclose(photometric_loss(image, rendered, mask), torch.tensor(3**0.5 / 2), atol=1e-3)


def test_photometric_loss_empty_mask_gives_zero_and_finite_gradient():
    rendered = torch.rand(2, 3, 4, 4, requires_grad=True)
    loss = photometric_loss(torch.rand(2, 3, 4, 4), rendered, torch.zeros(2, 1, 4, 4))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(rendered.grad).all()


def test_landmark_loss_weights_nose_and_inner_mouth_more():
    w = landmark_weights()
    assert w[29] == w[60] and w[29] > 10 * w[0]
    target = torch.zeros(1, 68, 2)
    off_jaw, off_nose = target.clone(), target.clone()
    off_jaw[0, 0] = 10.0
    off_nose[0, 29] = 10.0
    assert landmark_loss(off_nose, target, 224) > 10 * landmark_loss(off_jaw, target, 224)
    assert landmark_loss(target, target, 224) == 0


def test_coefficient_regulariser_is_zero_at_mean_and_penalises_coloured_light():
    coeffs = torch.zeros(1, 257)
    assert coefficient_regulariser(coeffs) == 0
    white, coloured = coeffs.clone(), coeffs.clone()
    white[0, C.GAMMA] = 0.3
    coloured[0, C.GAMMA.start] = 0.3  # red DC only
    assert coefficient_regulariser(white) == 0
    assert coefficient_regulariser(coloured) > 0


def test_albedo_flatness_is_zero_for_uniform_skin():
    mask = torch.tensor([True, True, False])
    flat = torch.tensor([[[0.5, 0.4, 0.3], [0.5, 0.4, 0.3], [0.0, 0.0, 0.0]]])
    assert albedo_flatness(flat, mask) == 0
    flat[0, 1] = 0.9
    assert albedo_flatness(flat, mask) > 0


def test_landmark_loss_on_68_points_matches_a_hand_computed_value():
    # Weights before normalisation: 20 on points 28-30 and on the 8 inner-mouth points 60-67, 1 on the
    # other 57; their mean is (57 + 11 * 20) / 68 = 277 / 68.
    target = torch.zeros(1, 68, 2)
    predicted = target.clone()
    predicted[0, 0] = torch.tensor([3.0, 4.0])     # a jaw point 5 px off: raw weight 1
    predicted[0, 30] = torch.tensor([0.0, 2.0])    # the nose tip 2 px off: raw weight 20
    size = 100
    mean_weight = 277 / 68
    expected = (1 * (5 / size) ** 2 + 20 * (2 / size) ** 2) / mean_weight / 68
    assert torch.isclose(landmark_loss(predicted, target, size), torch.tensor(expected), rtol=1e-6)
