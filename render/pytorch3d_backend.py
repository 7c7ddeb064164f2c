"""Optional pytorch3d rasterization behind the same Fragments interface.

pytorch3d has no PyPI wheel, so it is imported lazily and only used when installed. Our screen
coordinates (u right, v down, pixel centres at +0.5) map to pytorch3d's NDC (+x left, +y up) as
x = 1 - 2u/W, y = 1 - 2v/H; depth is passed through. Screen-space barycentrics come back from
pytorch3d and are made perspective-correct and differentiable by the same code as the torch path.
"""
from __future__ import annotations

import importlib.util

import torch

from render.rasterizer import Fragments, fragments_from_faces


def available() -> bool:
    """True when pytorch3d can be imported."""
    return importlib.util.find_spec("pytorch3d") is not None


def rasterize(screen: torch.Tensor, triangles: torch.Tensor, image_size: int) -> Fragments:
    """screen: (B, N, 3) u, v pixels + depth; triangles: (F, 3) -> Fragments (see render.rasterizer)."""
    if not available():
        raise RuntimeError("pytorch3d is not installed: use backend='torch' (the default) or install pytorch3d")
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    b = screen.shape[0]
    h = w = image_size
    with torch.no_grad():
        ndc = torch.stack([1 - 2 * screen[..., 0] / w, 1 - 2 * screen[..., 1] / h, screen[..., 2]], dim=-1)
        meshes = Meshes(verts=list(ndc), faces=[triangles] * b)
        pix_to_face, _, _, _ = rasterize_meshes(
            meshes, image_size=image_size, blur_radius=0.0, faces_per_pixel=1,
            perspective_correct=False, cull_backfaces=False,
        )
        # pytorch3d packs faces of all meshes: subtract each mesh's face offset.
        face = pix_to_face[..., 0]
        offsets = torch.arange(b, device=screen.device).view(b, 1, 1) * triangles.shape[0]
        face = torch.where(face >= 0, face - offsets, face).reshape(-1)
    return fragments_from_faces(screen, triangles, face, image_size)
