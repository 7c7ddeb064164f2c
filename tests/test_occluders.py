import math

import pytest
import torch

from augment.occluders import (
    BACKGROUND_KINDS,
    OCCLUDER_KINDS,
    composite,
    default_landmarks5,
    occlude,
    sample_background,
    sample_occluder,
)

SIZE = 96


def face_landmarks(eye_mid_x: float, eye_mid_y: float, iod: float, roll: float = 0.0) -> torch.Tensor:
    """(5, 2) pixels: eyes +-iod/2 along the rolled eye line, nose 0.65 iod below, mouth 1.1 iod below."""
    local = [(-0.5, 0.0), (0.5, 0.0), (0.0, 0.65), (-0.4, 1.1), (0.4, 1.1)]
    c, s = math.cos(roll), math.sin(roll)
    return torch.tensor([(eye_mid_x + iod * (c * u - s * v), eye_mid_y + iod * (s * u + c * v)) for u, v in local])


LAYOUTS = [face_landmarks(35.0, 45.0, 22.0), face_landmarks(58.0, 50.0, 18.0, roll=0.25)]


def to_face_frame(point_xy: torch.Tensor, landmarks: torch.Tensor) -> tuple[float, float]:
    """Pixel point -> (u along the eye line, v towards the mouth) in inter-ocular units."""
    eye_mid = landmarks[:2].mean(0)
    across = landmarks[1] - landmarks[0]
    iod = across.norm()
    across = across / iod
    down = torch.stack([-across[1], across[0]])
    d = point_xy - eye_mid
    return float(d @ across / iod), float(d @ down / iod)


def alpha_centroid(alpha: torch.Tensor) -> torch.Tensor:
    """alpha: (1, H, W) -> (2,) alpha-weighted mean pixel position (x, y)."""
    a = alpha[0]
    coords = torch.arange(a.shape[0], dtype=torch.float32) + 0.5
    total = a.sum()
    return torch.stack([(a.sum(0) * coords).sum() / total, (a.sum(1) * coords).sum() / total])


def alpha_at(alpha: torch.Tensor, point_xy: torch.Tensor) -> float:
    x, y = int(point_xy[0]), int(point_xy[1])
    return float(alpha[0, y, x])


@pytest.mark.parametrize("kind", OCCLUDER_KINDS)
def test_same_seed_gives_identical_layer_and_other_seed_differs(kind):
    a = sample_occluder(kind, SIZE, torch.Generator().manual_seed(7), LAYOUTS[0])
    b = sample_occluder(kind, SIZE, torch.Generator().manual_seed(7), LAYOUTS[0])
    c = sample_occluder(kind, SIZE, torch.Generator().manual_seed(8), LAYOUTS[0])
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.alpha, b.alpha)
    assert not torch.equal(a.alpha, c.alpha)


@pytest.mark.parametrize("kind", OCCLUDER_KINDS)
def test_every_kind_draws_a_visible_layer_with_values_in_unit_range(kind):
    generator = torch.Generator().manual_seed(0)
    for index in range(12):
        landmarks = LAYOUTS[index % 2] if index < 8 else None
        layer = sample_occluder(kind, SIZE, generator, landmarks)
        assert layer.kind == kind
        assert layer.rgb.shape == (3, SIZE, SIZE) and layer.alpha.shape == (1, SIZE, SIZE)
        assert layer.rgb.min() >= 0 and layer.rgb.max() <= 1
        assert layer.alpha.min() >= 0 and layer.alpha.max() <= 1
        assert layer.alpha.max() > 0.5, "the occluder is nowhere opaque"
        assert layer.alpha.sum() > 20.0, "the occluder covers almost nothing"
        assert layer.alpha.mean() < 0.6, "the occluder covers most of the image"


def test_kind_none_picks_every_kind_over_many_draws():
    generator = torch.Generator().manual_seed(1)
    seen = {sample_occluder(None, 32, generator).kind for _ in range(60)}
    assert seen == set(OCCLUDER_KINDS)


@pytest.mark.parametrize("landmarks", LAYOUTS)
def test_glasses_sit_on_the_eyes(landmarks):
    generator = torch.Generator().manual_seed(2)
    for _ in range(8):
        alpha = sample_occluder("glasses", SIZE, generator, landmarks).alpha
        u, v = to_face_frame(alpha_centroid(alpha), landmarks)
        assert abs(u) < 0.15 and abs(v) < 0.3
        # The rims surround each eye: opaque pixels on both sides of each eye along the eye line.
        for eye in landmarks[:2]:
            across = (landmarks[1] - landmarks[0]) / (landmarks[1] - landmarks[0]).norm()
            iod = float((landmarks[1] - landmarks[0]).norm())
            profile = [alpha_at(alpha, eye + t * iod * across) for t in torch.linspace(-0.5, 0.5, 41)]
            assert max(profile[:20]) > 0.5 and max(profile[21:]) > 0.5


@pytest.mark.parametrize("landmarks", LAYOUTS)
def test_mask_covers_nose_and_mouth_but_not_eyes(landmarks):
    generator = torch.Generator().manual_seed(3)
    mouth_centre = landmarks[3:].mean(0)
    for _ in range(8):
        alpha = sample_occluder("mask", SIZE, generator, landmarks).alpha
        assert alpha_at(alpha, mouth_centre) > 0.9
        assert alpha_at(alpha, landmarks[2]) > 0.9
        assert alpha_at(alpha, landmarks[0]) < 0.1 and alpha_at(alpha, landmarks[1]) < 0.1


@pytest.mark.parametrize("landmarks", LAYOUTS)
def test_hand_covers_part_of_the_face(landmarks):
    generator = torch.Generator().manual_seed(4)
    face_centre = landmarks.mean(0)
    iod = float((landmarks[1] - landmarks[0]).norm())
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    near_face = torch.hypot(xs - face_centre[0], ys - face_centre[1]) < 1.2 * iod
    for _ in range(10):
        alpha = sample_occluder("hand", SIZE, generator, landmarks).alpha[0]
        assert alpha[near_face].max() > 0.9


@pytest.mark.parametrize("landmarks", LAYOUTS)
def test_hair_falls_from_above_the_eyes(landmarks):
    generator = torch.Generator().manual_seed(5)
    for _ in range(8):
        alpha = sample_occluder("hair", SIZE, generator, landmarks).alpha
        _, v = to_face_frame(alpha_centroid(alpha), landmarks)
        assert v < 0.2  # mass above the nose (nose at v = 0.65)


def test_occluders_follow_the_landmarks_when_the_face_moves():
    generator = torch.Generator().manual_seed(6)
    left = sample_occluder("mask", SIZE, generator, face_landmarks(30.0, 40.0, 20.0)).alpha
    right = sample_occluder("mask", SIZE, generator, face_landmarks(66.0, 40.0, 20.0)).alpha
    assert alpha_centroid(right)[0] - alpha_centroid(left)[0] == pytest.approx(36.0, abs=4.0)


def test_swapped_eye_order_still_puts_the_mask_below_the_eyes():
    landmarks = LAYOUTS[0][[1, 0, 2, 4, 3]]
    alpha = sample_occluder("mask", SIZE, torch.Generator().manual_seed(9), landmarks).alpha
    assert alpha_at(alpha, landmarks[3:].mean(0)) > 0.9
    assert alpha_at(alpha, landmarks[0]) < 0.1


def test_composite_blends_layer_over_image_by_alpha():
    image = torch.full((3, 4, 4), 0.2)
    rgb = torch.full((3, 4, 4), 1.0)
    alpha = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 4).expand(1, 4, 4)
    out = composite(image, rgb, alpha)
    assert torch.allclose(out[0, 0], torch.tensor([0.2, 0.4, 0.6, 1.0]))


def test_occlude_mixes_each_image_with_its_returned_mask():
    images_a = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    images_b = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out_a, mask_a = occlude(images_a, torch.Generator().manual_seed(10))
    out_b, mask_b = occlude(images_b, torch.Generator().manual_seed(10))
    assert torch.equal(mask_a, mask_b)
    assert mask_a.shape == (6, 1, 64, 64)
    # out = img * (1 - a) + rgb * a, with the same rgb for both batches.
    assert torch.allclose(out_a - out_b, (images_a - images_b) * (1 - mask_a), atol=1e-6)
    assert (mask_a.flatten(1).amax(1) > 0.5).all(), "p=1 must occlude every image"


def test_occlude_with_p_zero_returns_images_unchanged_and_empty_mask():
    images = torch.rand(3, 3, 32, 32)
    out, mask = occlude(images, torch.Generator().manual_seed(0), p=0.0)
    assert torch.equal(out, images) and mask.abs().sum() == 0


def test_occlude_places_restricted_kinds_at_given_landmarks():
    landmarks = torch.stack([LAYOUTS[0], LAYOUTS[1]])
    _, mask = occlude(torch.rand(2, 3, SIZE, SIZE), torch.Generator().manual_seed(0), landmarks, kinds=["mask"])
    for index in range(2):
        assert alpha_at(mask[index], landmarks[index, 3:].mean(0)) > 0.9


def test_unknown_kind_and_bad_shapes_raise_clear_errors():
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="unknown occluder kind"):
        sample_occluder("scarf", 32, generator)
    with pytest.raises(ValueError, match="landmarks5"):
        sample_occluder("mask", 32, generator, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="square"):
        occlude(torch.rand(1, 3, 32, 40), generator)


def test_default_landmarks_put_eyes_above_nose_above_mouth():
    landmarks = default_landmarks5(224)
    assert landmarks.shape == (5, 2)
    assert landmarks[0, 0] < landmarks[1, 0]
    assert landmarks[:2, 1].max() < landmarks[2, 1] < landmarks[3:, 1].min()


@pytest.mark.parametrize("kind", BACKGROUND_KINDS)
def test_backgrounds_are_deterministic_in_range_and_vary_by_seed(kind):
    a = sample_background(64, torch.Generator().manual_seed(3), kind)
    b = sample_background(64, torch.Generator().manual_seed(3), kind)
    c = sample_background(64, torch.Generator().manual_seed(4), kind)
    assert a.shape == (3, 64, 64)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_random_backgrounds_are_not_all_flat():
    generator = torch.Generator().manual_seed(0)
    spreads = [float(sample_background(64, generator).std()) for _ in range(20)]
    assert sum(spread > 0.05 for spread in spreads) >= 5
