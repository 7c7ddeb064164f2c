import math

import torch

from coarse import coefficients as C
from coarse.face_model import camera_for, compute_normals, rotation_matrix, rigid_transform
from coarse.morphable_model import build_point_buf
from render.shading import sh_basis, sh_shading


def test_yaw_90_degrees_maps_plus_z_to_plus_x():
    r = rotation_matrix(torch.tensor([[0.0, math.pi / 2, 0.0]]))
    assert torch.allclose(r[0] @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)


def test_pitch_and_roll_match_closed_form():
    rx = rotation_matrix(torch.tensor([[math.pi / 2, 0.0, 0.0]]))[0]
    assert torch.allclose(rx @ torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    rz = rotation_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]))[0]
    assert torch.allclose(rz @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_rotation_composes_as_rz_ry_rx():
    a = torch.tensor([[0.3, -0.5, 0.7]])
    r = rotation_matrix(a)[0]
    x = rotation_matrix(torch.tensor([[0.3, 0, 0]]))[0]
    y = rotation_matrix(torch.tensor([[0, -0.5, 0]]))[0]
    z = rotation_matrix(torch.tensor([[0, 0, 0.7]]))[0]
    assert torch.allclose(r, z @ y @ x, atol=1e-6)
    assert torch.allclose(r @ r.T, torch.eye(3), atol=1e-6)


def test_rigid_transform_applies_rotation_then_translation():
    p = torch.tensor([[[0.0, 0.0, 1.0]]])
    r = rotation_matrix(torch.tensor([[0.0, math.pi / 2, 0.0]]))
    out = rigid_transform(p, r, torch.tensor([[0.0, 2.0, 0.0]]))
    assert torch.allclose(out, torch.tensor([[[1.0, 2.0, 0.0]]]), atol=1e-6)


def test_projection_uses_deep3d_constants_scaled_with_image_size():
    cam = camera_for(224)
    assert cam.focal == C.FOCAL and cam.center == C.CENTER
    s = cam.project(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.0, 5.0]]))
    assert torch.allclose(s[0], torch.tensor([112.0, 112.0, 10.0]))
    # +x goes right, +y goes up (smaller v), depth is 10 - z.
    assert torch.allclose(s[1], torch.tensor([112 + 101.5, 112 - 101.5, 10.0]))
    assert torch.allclose(s[2], torch.tensor([112 + 1015 * 0.5 / 5, 112.0, 5.0]))
    half = camera_for(112)
    assert half.focal == C.FOCAL / 2 and half.center == C.CENTER / 2


def test_sh_basis_matches_closed_form_for_axis_normals():
    a0, a1, a2 = math.pi, 2 * math.pi / math.sqrt(3), 2 * math.pi / math.sqrt(8)
    c0, c1, c2 = 1 / math.sqrt(4 * math.pi), math.sqrt(3) / math.sqrt(4 * math.pi), 3 * math.sqrt(5) / math.sqrt(12 * math.pi)
    y = sh_basis(torch.tensor([[0.0, 0.0, 1.0]]))[0]
    expected = torch.tensor([a0 * c0, 0, a1 * c1, 0, 0, 0, 0.5 * a2 * c2 / math.sqrt(3) * 2, 0, 0])
    assert torch.allclose(y, expected, atol=1e-6)
    y = sh_basis(torch.tensor([[1.0, 0.0, 0.0]]))[0]
    expected = torch.tensor([a0 * c0, 0, 0, -a1 * c1, 0, 0, -0.5 * a2 * c2 / math.sqrt(3), 0, 0.5 * a2 * c2])
    assert torch.allclose(y, expected, atol=1e-6)


def test_zero_gamma_gives_uniform_dc_light():
    n = torch.nn.functional.normalize(torch.randn(1, 50, 3), dim=-1)
    light = sh_shading(n, torch.zeros(1, 27), C.SH_DC_INIT)
    assert torch.allclose(light, torch.full_like(light, C.SH_DC_INIT * math.pi / math.sqrt(4 * math.pi)))


def test_vertex_normals_are_mean_of_adjacent_face_normals():
    # A tent: two triangles meeting at a ridge along y; the ridge normal is their bisector.
    v = torch.tensor([[[-1.0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0]]])
    tris = torch.tensor([[0, 1, 2], [1, 3, 2]])
    n = compute_normals(v, tris, build_point_buf(tris, 4))[0]
    assert torch.allclose(n[1], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(n[0], torch.nn.functional.normalize(torch.tensor([-1.0, 0, 1]), dim=0), atol=1e-6)


def test_point_buf_lists_every_adjacent_face_once():
    tris = torch.tensor([[0, 1, 2], [1, 3, 2], [2, 3, 4]])
    buf = build_point_buf(tris, 5)
    for v in range(5):
        listed = sorted(int(f) for f in buf[v] if f < 3)
        assert listed == [f for f in range(3) if v in tris[f].tolist()]


def test_project_landmarks_matches_the_whole_assembly():
    from coarse.face_model import assemble_face, project_landmarks
    from coarse.priors import CoefficientPrior
    from coarse.synthface import build_synthface

    model = build_synthface(seed=0, resolution=25)
    coeffs = CoefficientPrior().sample(3, torch.Generator().manual_seed(0))
    whole = assemble_face(model, coeffs, 64).landmarks
    assert whole.std() > 1.0  # distinct points, not one
    assert torch.allclose(project_landmarks(model, coeffs, 64), whole, atol=1e-4)
