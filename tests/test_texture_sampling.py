"""render.texture_sampling and the observed per-vertex albedo the mesh-wise refiner reads."""
import math

import torch

from coarse import coefficients as C
from coarse.face_model import assemble_face, facing_camera
from coarse.synthface import build_synthface
from data.synthfaces import template_translation
from experiments.pipeline import observed_vertex_albedo
from render.rasterizer import rasterize, render_mesh
from render.texture_sampling import sample_at_pixels, visible_vertices


def _coeffs(model, yaw_deg: float = 0.0) -> torch.Tensor:
    coeffs = torch.zeros(1, C.N_COEFFS)
    coeffs[0, C.TRANS] = template_translation(model)
    coeffs[0, C.ANGLE.start + 1] = math.radians(yaw_deg)
    coeffs[0, C.GAMMA.start] = 0.8  # red DC light: shading is not one
    return coeffs


def _rendered(model, coeffs: torch.Tensor, size: int):
    """(face, image): the face of coeffs and its render at size (its own lit colours, black background)."""
    face = assemble_face(model, coeffs, size)
    return face, render_mesh(face.screen, model.triangles, face.colors.clamp(0, 1), size).image


def test_sample_at_pixels_reads_pixel_centres_exactly():
    image = torch.arange(2 * 5 * 7, dtype=torch.float32).view(1, 2, 5, 7)
    points = torch.tensor([[[0.5, 0.5], [6.5, 4.5], [3.5, 2.5]]])
    found = sample_at_pixels(image, points)[0]
    assert torch.equal(found[:, 0], torch.stack([image[0, 0, 0, 0], image[0, 0, 4, 6], image[0, 0, 2, 3]]))
    assert found.shape == (3, 2)


def test_every_vertex_of_a_dense_mesh_at_low_resolution_is_visible_when_frontal():
    """The default mesh has more vertices than a 64-px face has pixels: a depth test must still see them all
    (marking only the corners of pixel-winning triangles left a comb of holes)."""
    model = build_synthface()
    face = assemble_face(model, _coeffs(model), 64)
    zbuf = rasterize(face.screen, model.triangles, 64).zbuf
    seen = visible_vertices(face.screen, zbuf, facing_camera(face.vertices, face.normals))[0]
    skin = model.skin_mask.bool()
    assert seen[skin].float().mean() > 0.9
    turned = assemble_face(model, _coeffs(model, 80.0), 64)
    zbuf = rasterize(turned.screen, model.triangles, 64).zbuf
    assert visible_vertices(turned.screen, zbuf)[0].float().mean() < 0.75 * seen.float().mean()


def test_observed_albedo_of_a_render_recovers_the_albedo_where_visible():
    model = build_synthface(resolution=40)
    coeffs = _coeffs(model)
    face, image = _rendered(model, coeffs, 128)
    albedo, visible = observed_vertex_albedo(model, image, coeffs)
    inner = visible[0, :, 0].bool() & model.skin_mask.bool()
    assert inner.float().mean() > 0.5
    error = (albedo[0, inner] - face.albedo[0, inner].clamp(0, 1.5)).abs().median()
    assert error < 0.03
    assert torch.all(albedo[0, ~visible[0, :, 0].bool()] == 0)


def test_observed_albedo_reads_only_skin_and_not_the_silhouette_border():
    model = build_synthface(resolution=40)
    coeffs = _coeffs(model)
    face, image = _rendered(model, coeffs, 64)
    _, everywhere = observed_vertex_albedo(model, image, coeffs)
    skin = torch.ones(1, 1, 64, 64)
    skin[..., :32] = 0  # an "occluder" over the left half of the picture
    _, on_skin = observed_vertex_albedo(model, image, coeffs, skin=skin)
    left = face.screen[0, :, 0] < 31
    right = face.screen[0, :, 0] > 33
    assert everywhere[0, left, 0].sum() > 0 and on_skin[0, left, 0].sum() == 0
    assert torch.equal(on_skin[0, right, 0], everywhere[0, right, 0])
    # Vertices on the silhouette would read the background: the outermost ring of the mask is never read.
    covered = rasterize(face.screen, model.triangles, 64).mask[0]
    rows, cols = face.screen[0, :, 1].long().clamp(0, 63), face.screen[0, :, 0].long().clamp(0, 63)
    near_edge = torch.zeros(64, 64, dtype=torch.bool)
    near_edge[1:-1, 1:-1] = covered[1:-1, 1:-1] & ~(covered[:-2, 1:-1] & covered[2:, 1:-1] & covered[1:-1, :-2] & covered[1:-1, 2:])
    assert everywhere[0, near_edge[rows, cols], 0].sum() == 0


def test_a_vertex_is_read_only_where_the_skin_probability_reaches_the_threshold():
    model = build_synthface(resolution=40)
    coeffs = _coeffs(model)
    face, image = _rendered(model, coeffs, 64)
    skin = torch.ones(1, 1, 64, 64)
    skin[..., :32] = 0.7  # a faint occluder over the left half, as thin glasses frames or hair strands come out
    _, default = observed_vertex_albedo(model, image, coeffs, skin=skin)
    _, strict = observed_vertex_albedo(model, image, coeffs, skin=skin, skin_threshold=0.95)
    left = face.screen[0, :, 0] < 31
    right = face.screen[0, :, 0] > 33
    assert default[0, left, 0].sum() > 0 and strict[0, left, 0].sum() == 0
    assert torch.equal(strict[0, right, 0], default[0, right, 0])
