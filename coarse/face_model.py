"""Face assembly: coefficients -> shape, albedo, normals, lit colours and projection (Deep3D maths)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from coarse import coefficients as C
from coarse.morphable_model import MorphableModel
from render.camera import PerspectiveCamera
from render.shading import sh_shading


def camera_for(image_size: int) -> PerspectiveCamera:
    """Deep3D's camera for a square image of `image_size` pixels."""
    focal, center = C.camera_intrinsics(image_size)
    return PerspectiveCamera(focal=focal, center=center, distance=C.CAMERA_DISTANCE, image_size=image_size)


def compute_shape(model: MorphableModel, id_coeff: torch.Tensor, exp_coeff: torch.Tensor,
                  vertices: torch.Tensor | None = None) -> torch.Tensor:
    """id_coeff: (B, 80), exp_coeff: (B, 64) -> (B, N, 3) S = S̄ + B_id α + B_exp β.

    vertices: optional (K,) vertex indices; then only those K vertices are assembled -> (B, K, 3).
    """
    id_base, exp_base, mean = model.id_base, model.exp_base, model.mean_shape
    if vertices is not None:
        rows = (vertices[:, None] * 3 + torch.arange(3, device=vertices.device)).flatten()
        id_base, exp_base, mean = id_base[rows], exp_base[rows], mean[vertices]
    offsets = id_coeff @ id_base.T + exp_coeff @ exp_base.T
    return mean.unsqueeze(0) + offsets.reshape(id_coeff.shape[0], -1, 3)


def compute_albedo(model: MorphableModel, tex_coeff: torch.Tensor) -> torch.Tensor:
    """tex_coeff: (B, 80) -> (B, N, 3) albedo T = T̄ + B_t δ (not clamped; [0, 1] in range)."""
    offsets = tex_coeff @ model.albedo_base.T
    return model.mean_albedo.unsqueeze(0) + offsets.reshape(tex_coeff.shape[0], -1, 3)


def compute_normals(vertices: torch.Tensor, triangles: torch.Tensor, point_buf: torch.Tensor) -> torch.Tensor:
    """vertices: (B, N, 3), triangles: (F, 3), point_buf: (N, K) padded with F -> (B, N, 3) unit normals.

    A vertex normal is the normalised mean of the unit normals of its adjacent faces.
    """
    v0 = vertices[:, triangles[:, 0]]
    v1 = vertices[:, triangles[:, 1]]
    v2 = vertices[:, triangles[:, 2]]
    face_normals = F.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1)
    padded = torch.cat([face_normals, torch.zeros_like(face_normals[:, :1])], dim=1)
    vertex_normals = padded[:, point_buf].sum(dim=2)
    return F.normalize(vertex_normals, dim=-1)


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """angles: (B, 3) radians (x, y, z) -> (B, 3, 3) R = Rz Ry Rx, acting on column vectors."""
    x, y, z = angles.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    cx, sx, cy, sy, cz, sz = x.cos(), x.sin(), y.cos(), y.sin(), z.cos(), z.sin()
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def rigid_transform(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """points: (B, N, 3), rotation: (B, 3, 3), translation: (B, 3) -> (B, N, 3) R p + t."""
    return points @ rotation.transpose(1, 2) + translation.unsqueeze(1)


def facing_camera(vertices: torch.Tensor, normals: torch.Tensor,
                  camera_distance: float = C.CAMERA_DISTANCE) -> torch.Tensor:
    """(B, N) bool: posed vertices whose normal points towards the camera at (0, 0, camera_distance).

    vertices, normals: (B, N, 3) posed, world frame (FaceGeometry's).
    """
    camera = vertices.new_tensor([0.0, 0.0, camera_distance])
    return ((camera - vertices) * normals).sum(-1) > 0


def project_landmarks(model: MorphableModel, coeffs: torch.Tensor, image_size: int) -> torch.Tensor:
    """coeffs: (B, 257) -> (B, 68, 2) projected landmark pixels, as `assemble_face(...).landmarks`.

    Assembles only the 68 landmark vertices, not the whole mesh: the supervised warm start needs nothing else
    and spends most of its non-network time here otherwise.
    """
    c = C.split_coefficients(coeffs)
    shape = compute_shape(model, c.id, c.exp, vertices=model.landmarks68)
    vertices = rigid_transform(shape, rotation_matrix(c.angle), c.trans)
    return camera_for(image_size).project(vertices)[..., :2]


@dataclass
class FaceGeometry:
    """Everything rendering and the losses need from one coefficient batch.

    vertices: (B, N, 3) posed, world frame. normals: (B, N, 3) posed unit normals.
    albedo: (B, N, 3) in [0, 1] (unclamped). shading: (B, N, 3) SH irradiance.
    colors: (B, N, 3) albedo * shading. screen: (B, N, 3) u, v pixels and depth.
    landmarks: (B, 68, 2) projected landmark pixels.
    """

    vertices: torch.Tensor
    normals: torch.Tensor
    albedo: torch.Tensor
    shading: torch.Tensor
    colors: torch.Tensor
    screen: torch.Tensor
    landmarks: torch.Tensor


def assemble_face(
    model: MorphableModel,
    coeffs: torch.Tensor,
    image_size: int,
    albedo: torch.Tensor | None = None,
) -> FaceGeometry:
    """coeffs: (B, 257) -> FaceGeometry. `albedo` (B, N, 3) overrides the PCA albedo (fine texture)."""
    c = C.split_coefficients(coeffs)
    shape = compute_shape(model, c.id, c.exp)
    if albedo is None:
        albedo = compute_albedo(model, c.tex)
    rotation = rotation_matrix(c.angle)
    vertices = rigid_transform(shape, rotation, c.trans)
    normals = compute_normals(shape, model.triangles, model.point_buf) @ rotation.transpose(1, 2)
    shading = sh_shading(normals, c.gamma, C.SH_DC_INIT)
    screen = camera_for(image_size).project(vertices)
    return FaceGeometry(
        vertices=vertices,
        normals=normals,
        albedo=albedo,
        shading=shading,
        colors=albedo * shading,
        screen=screen,
        landmarks=screen[:, model.landmarks68, :2],
    )
