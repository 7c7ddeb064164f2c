import pytest
import torch

from coarse import coefficients as C
from coarse import synthface
from coarse.face_model import assemble_face
from coarse.synthface import DEFAULT_RESOLUTION, build_synthface
from render.rasterizer import render_mesh

RES = 41          # small grid for speed; the default is checked once for its size
IMAGE = 96


@pytest.fixture(scope="module")
def model():
    return build_synthface(seed=0, resolution=RES)


def _coeffs(batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, C.N_COEFFS)


def _grid(model, values: torch.Tensor) -> torch.Tensor:
    rows, cols = model.extras["grid_shape"]
    return values.reshape(rows, cols, *values.shape[1:])


def test_build_is_bit_identical_across_calls_and_cache_clears(model):
    again = build_synthface(seed=0, resolution=RES)
    synthface._synthface_arrays.cache_clear()
    rebuilt = build_synthface(seed=0, resolution=RES)
    for other in (again, rebuilt):
        for name in ("mean_shape", "id_base", "exp_base", "mean_albedo", "albedo_base", "triangles",
                     "point_buf", "landmarks68", "skin_mask", "uv"):
            assert torch.equal(getattr(model, name), getattr(other, name)), name


def test_calls_return_independent_tensors(model):
    again = build_synthface(seed=0, resolution=RES)
    again.mean_shape += 1.0
    assert torch.equal(build_synthface(seed=0, resolution=RES).mean_shape, model.mean_shape)


def test_seed_changes_random_modes_but_not_mean_or_named_modes(model):
    other = build_synthface(seed=1, resolution=RES)
    assert torch.equal(other.mean_shape, model.mean_shape)
    assert torch.equal(other.landmarks68, model.landmarks68)
    assert not torch.equal(other.id_base, model.id_base)
    first_named = model.extras["id_names"][0]
    assert other.extras["id_names"][0] == first_named
    assert torch.allclose(other.id_base[:, 0], model.id_base[:, 0], atol=1e-6)


def test_model_validates_with_bfm_layout_and_unit_uvs(model):
    model.validate()
    n = model.num_vertices
    assert model.id_base.shape == (3 * n, C.N_ID)
    assert model.exp_base.shape == (3 * n, C.N_EXP)
    assert model.albedo_base.shape == (3 * n, C.N_TEX)
    assert model.triangles.dtype == torch.int64 and model.landmarks68.dtype == torch.int64
    assert model.skin_mask.dtype == torch.bool
    assert model.uv.shape == (n, 2) and model.uv.min() >= 0 and model.uv.max() <= 1
    assert len(set(model.landmarks68.tolist())) == 68


def test_default_resolution_has_between_5k_and_10k_vertices():
    default = build_synthface(seed=0)
    assert 5_000 <= default.num_vertices <= 10_000
    assert DEFAULT_RESOLUTION >= 60


def test_invalid_resolution_raises_one_line_error():
    with pytest.raises(ValueError, match="synthface.py: resolution") as info:
        build_synthface(resolution=3)
    assert "\n" not in str(info.value)


def test_mean_shape_is_centred_face_sized_and_faces_plus_z(model):
    shape = model.mean_shape
    assert shape.mean(0).abs().max() < 1e-5
    width = shape[:, 0].max() - shape[:, 0].min()
    height = shape[:, 1].max() - shape[:, 1].min()
    assert 1.3 < width < 1.8 and 1.7 < height < 2.2
    landmarks = shape[model.landmarks68]
    assert int(landmarks[:, 2].argmax()) == 30  # the nose tip is the most forward landmark


def test_triangles_are_counter_clockwise_seen_from_the_front(model):
    v = model.mean_shape[model.triangles]
    e1, e2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
    signed_area_xy = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    assert (signed_area_xy > 0).all()


def test_identity_columns_are_orthogonal_translation_free_and_decreasing(model):
    basis = model.id_base.double()
    variance = basis.var(dim=0)
    assert (variance[1:] < variance[:-1]).all()
    gram = basis.T @ basis
    off_diagonal = gram - torch.diag(torch.diag(gram))
    assert off_diagonal.abs().max() < 1e-4 * torch.diag(gram).max()
    per_mode_mean = basis.reshape(-1, 3, C.N_ID).mean(0)
    assert per_mode_mean.abs().max() < 1e-6


def test_albedo_columns_have_decreasing_variance(model):
    variance = model.albedo_base.double().var(dim=0)
    assert (variance[1:] < variance[:-1]).all()


def test_named_modes_come_first(model):
    assert model.extras["id_names"][0] == "masculinity"
    assert {"face_width", "jaw_width", "nose_size", "chin", "cheek_fullness"} <= set(model.extras["id_names"][:24])
    assert model.extras["tex_names"][0] == "skin_tone"
    assert model.extras["exp_names"][0] == "jaw_open"
    assert model.extras["exp_one_sided"][0] is True


def test_expression_modes_are_localised(model):
    displacement = model.exp_base.reshape(-1, 3, C.N_EXP).norm(dim=1)   # (N, 64)
    moving = (displacement > 0.1 * displacement.max(0).values).float().mean(0)
    assert moving.max() < 0.5, f"mode {int(moving.argmax())} moves {float(moving.max()):.0%} of the face"
    assert moving.median() < 0.2


def test_unit_gaussian_coefficients_give_plausible_sizes(model):
    gen = torch.Generator().manual_seed(0)
    n = model.num_vertices
    id_offsets = (torch.randn(32, C.N_ID, generator=gen) @ model.id_base.T).reshape(32, n, 3)
    exp_offsets = (torch.randn(32, C.N_EXP, generator=gen) @ model.exp_base.T).reshape(32, n, 3)
    id_rms = id_offsets.norm(dim=-1).pow(2).mean().sqrt()
    exp_rms = exp_offsets.norm(dim=-1).pow(2).mean().sqrt()
    assert 0.02 < id_rms < 0.12      # about 2 to 11 mm of a 19 cm face
    assert 0.003 < exp_rms < 0.05


def test_jaw_open_separates_the_inner_lips(model):
    coeffs = _coeffs(2)
    coeffs[1, C.EXP.start] = 1.0
    geometry = assemble_face(model, coeffs, IMAGE)
    gap = geometry.vertices[:, model.landmarks68[62], 1] - geometry.vertices[:, model.landmarks68[66], 1]
    assert gap[1] - gap[0] > 0.03


def test_eyes_close_mode_narrows_the_eyes(model):
    index = model.extras["exp_names"].index("eyes_close")
    coeffs = _coeffs(2)
    coeffs[1, C.EXP.start + index] = 2.0
    v = assemble_face(model, coeffs, IMAGE).vertices
    lm = model.landmarks68
    opening = v[:, lm[37], 1] - v[:, lm[41], 1]
    assert opening[1] < 0.6 * opening[0]


def _render_mean(model, coeffs=None):
    coeffs = _coeffs() if coeffs is None else coeffs
    coeffs[:, C.GAMMA.start + 2] = 0.3       # a frontal light (SH z band), the same for all channels
    coeffs[:, C.GAMMA.start + 11] = 0.3
    coeffs[:, C.GAMMA.start + 20] = 0.3
    geometry = assemble_face(model, coeffs, IMAGE)
    out = render_mesh(geometry.screen, model.triangles, geometry.colors, IMAGE)
    return out, geometry


def test_mean_face_render_is_left_right_symmetric(model):
    out, _ = _render_mean(model)
    image, mask = out.image[0], out.mask[0, 0]
    flipped_mask = mask.flip(-1)
    iou = (mask * flipped_mask).sum() / ((mask + flipped_mask) > 0).float().sum()
    assert iou > 0.97
    both = (mask * flipped_mask) > 0
    assert (image - image.flip(-1)).abs()[:, both].mean() < 0.02
    assert image[:, both].std() > 0.02   # not a flat image: the check above can fail


def test_landmarks_project_inside_the_face_in_anatomical_order(model):
    out, geometry = _render_mean(model)
    mask = out.mask[0, 0]
    points = geometry.landmarks[0]
    cols = points[:, 0].floor().long().clamp(0, IMAGE - 1)
    rows = points[:, 1].floor().long().clamp(0, IMAGE - 1)
    assert mask[rows, cols].all()
    u, v = points[:, 0], points[:, 1]
    eyes_v, nose_v, mouth_v, chin_v = v[36:48].mean(), v[30], v[48:68].mean(), v[8]
    brows_v = v[17:27].mean()
    assert brows_v < eyes_v < nose_v < mouth_v < chin_v
    assert u[36] < u[39] < u[27] < u[42] < u[45]
    assert u[17] < u[21] < u[22] < u[26]
    assert u[0] < u[4] < u[8] < u[12] < u[16]
    assert u[48] < u[51] < u[54] and u[31] < u[33] < u[35]
    five = model.landmarks5_from_68(points)
    assert five[0, 0] < five[2, 0] < five[1, 0] and five[2, 1] < five[3, 1]


def test_albedo_samples_stay_mostly_in_unit_range(model):
    assert model.mean_albedo.min() >= 0 and model.mean_albedo.max() <= 1
    gen = torch.Generator().manual_seed(0)
    tex = torch.randn(64, C.N_TEX, generator=gen)
    albedo = model.mean_albedo + (tex @ model.albedo_base.T).reshape(64, -1, 3)
    inside = ((albedo >= 0) & (albedo <= 1)).float().mean()
    assert inside > 0.98


def test_mean_albedo_has_red_lips_dark_brows_and_light_sclera(model):
    regions = model.extras["regions"]
    albedo = model.mean_albedo
    skin = albedo[regions["cheeks"]].mean(0)
    lips = albedo[regions["lips"] & ~regions["mouth_line"]].mean(0)
    assert lips[0] / lips[1] > skin[0] / skin[1]
    assert albedo[regions["brows"]].mean() < skin.mean() - 0.1
    sclera = regions["eyes"] & ~regions["iris"]
    assert albedo[sclera].mean() > skin.mean()


def test_regions_are_vertex_masks_and_skin_excludes_eyes_and_brows(model):
    regions = model.extras["regions"]
    for name in ("lips", "brows", "eyes", "nose", "cheeks", "forehead", "chin", "beard_area"):
        assert regions[name].shape == (model.num_vertices,) and regions[name].dtype == torch.bool
        assert regions[name].any(), name
    assert not (model.skin_mask & (regions["eyes"] | regions["brows"])).any()
    assert not (regions["beard_area"] & regions["forehead"]).any()
    mirror = model.extras["mirror_index"]
    assert torch.equal(regions["lips"][mirror], regions["lips"])
