"""Reading an image at projected vertices: the "unwrapped" per-vertex colours the mesh-wise refiner sees."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_at_pixels(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of images at continuous pixel positions.

    images: (B, C, H, W); points: (B, N, 2) u, v in renderer pixels (pixel (i, j) centred at (j + 0.5, i + 0.5)).
    Returns (B, N, C); positions outside the image read the border.
    """
    h, w = images.shape[-2:]
    grid = torch.stack([points[..., 0] / w * 2 - 1, points[..., 1] / h * 2 - 1], dim=-1).unsqueeze(2)
    samples = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return samples.squeeze(-1).transpose(1, 2)


DEPTH_TOLERANCE = 0.03  # model units (the face is about 2 units wide): a vertex this far behind the surface still counts


def visible_vertices(screen: torch.Tensor, zbuf: torch.Tensor, facing: torch.Tensor | None = None,
                     tolerance: float = DEPTH_TOLERANCE) -> torch.Tensor:
    """(B, N) bool: vertices the camera sees, by a depth test against the rendered surface.

    screen: (B, N, 3) u, v in pixels and depth; zbuf: (B, S, S) the rasterizer's depth, 0 where empty;
    facing: optional (B, N) bool (normal towards the camera). A vertex is visible when it projects inside the
    image onto covered pixel whose surface depth is within `tolerance` of its own. Unlike marking the corners of
    the triangles that win a pixel, this keeps every vertex of a dense mesh seen at a low resolution.
    """
    size = zbuf.shape[-1]
    col = screen[..., 0].detach().floor().long()
    row = screen[..., 1].detach().floor().long()
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    batch = torch.arange(screen.shape[0], device=screen.device)[:, None].expand_as(col)
    surface = zbuf.detach()[batch, row.clamp(0, size - 1), col.clamp(0, size - 1)]
    visible = inside & (surface > 0) & (screen[..., 2].detach() <= surface + tolerance)
    return visible if facing is None else visible & facing
