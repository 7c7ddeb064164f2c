"""Reading an image at projected vertices: the "unwrapped" per-vertex colours the mesh-wise refiner sees."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from render.rasterizer import Fragments


def sample_at_pixels(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of images at continuous pixel positions.

    images: (B, C, H, W); points: (B, N, 2) u, v in renderer pixels (pixel (i, j) centred at (j + 0.5, i + 0.5)).
    Returns (B, N, C); positions outside the image read the border.
    """
    h, w = images.shape[-2:]
    grid = torch.stack([points[..., 0] / w * 2 - 1, points[..., 1] / h * 2 - 1], dim=-1).unsqueeze(2)
    samples = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return samples.squeeze(-1).transpose(1, 2)


def visible_vertices(fragments: Fragments, triangles: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """(B, N) float 1 for vertices of a triangle that wins at least one pixel, 0 otherwise.

    fragments: from render.rasterizer.rasterize; triangles: (F, 3). Self-occluded and off-screen vertices are 0.
    """
    b = fragments.pix_to_face.shape[0]
    faces = fragments.pix_to_face.reshape(b, -1)
    visible = torch.zeros(b, num_vertices, device=faces.device)
    rows, cols = torch.nonzero(faces >= 0, as_tuple=True)
    corners = triangles[faces[rows, cols]]  # (P, 3)
    visible[rows.unsqueeze(1).expand_as(corners), corners] = 1.0
    return visible
