"""Texture baking: per-vertex colours -> a UV texture image, with our rasterizer run in UV space.

UV convention (Wavefront OBJ and what trimesh expects; trimesh flips v itself when it writes glTF):
u runs left to right, v runs bottom to top, so texture coordinate (u, v) sits at continuous pixel
position x = u * size, y = (1 - v) * size of a size x size image, and texel (i, j) covers
[j, j + 1) x [i, i + 1) with its centre at (j + 0.5, i + 0.5), as in `render.rasterizer`.

Each triangle is rasterized at its UV position with a constant depth, so barycentrics are affine and
a texel inside a triangle gets the linear interpolation of its three vertex colours. Texels outside
every UV island are then filled by `padding_px` rings of dilation (each ring copies the mean of its
already-filled 8-neighbours) so that bilinear sampling and mipmapping at island borders read face
colours, not background; anything further away gets the mean colour of the covered texels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from render.rasterizer import rasterize

# Any positive constant: depth only orders overlapping triangles, and UV islands do not overlap.
UV_DEPTH = 1.0


def uv_to_screen(uv: torch.Tensor, size: int) -> torch.Tensor:
    """uv: (N, 2) in [0, 1] -> (1, N, 3) screen vertices (x, y pixels of a size x size texture, depth)."""
    x = uv[:, 0] * size
    y = (1.0 - uv[:, 1]) * size
    return torch.stack([x, y, torch.full_like(x, UV_DEPTH)], dim=-1).unsqueeze(0)


def dilate_texture(texture: torch.Tensor, coverage: torch.Tensor, padding_px: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow covered texels outwards by `padding_px` rings.

    texture: (C, H, W); coverage: (H, W) bool. Each ring gives every empty texel with at least one
    filled 8-neighbour the mean of those neighbours. Returns (texture (C, H, W), coverage (H, W) bool).
    """
    weights = torch.ones(1, 1, 3, 3, dtype=texture.dtype, device=texture.device)
    filled = coverage.to(texture.dtype)[None, None]
    values = texture[None] * filled
    for _ in range(padding_px):
        count = F.conv2d(filled, weights, padding=1)
        total = F.conv2d(values, weights.expand(values.shape[1], 1, 3, 3), padding=1, groups=values.shape[1])
        grow = (filled == 0) & (count > 0)
        if not bool(grow.any()):
            break
        values = torch.where(grow, total / count.clamp(min=1), values)
        filled = torch.where(grow, torch.ones_like(filled), filled)
    return values[0], filled[0, 0] > 0


class UVBaker:
    """Bakes per-vertex colours of one UV layout into textures of one size, rasterizing the layout once.

    uv: (N, 2) in [0, 1] (v = 0 at the image bottom); triangles: (F, 3) int64 indices into uv; size: texture
    side in pixels; padding_px: rings of dilation past the islands' borders. Calling it with vertex colours
    (N, C) or (B, N, C) returns (C, size, size) or (B, C, size, size), row 0 at v = 1.
    """

    def __init__(self, uv: torch.Tensor, triangles: torch.Tensor, size: int = 512, padding_px: int = 4):
        self.num_vertices, self.size, self.padding_px = uv.shape[0], int(size), int(padding_px)
        if uv.dim() != 2 or uv.shape[1] != 2:
            raise ValueError(f"uv must be (N, 2), got {tuple(uv.shape)}")
        triangles = triangles.to(device=uv.device, dtype=torch.long)
        with torch.no_grad():
            fragments = rasterize(uv_to_screen(uv.float(), self.size), triangles, self.size)
        self.coverage = fragments.mask[0]  # (size, size) bool
        covered = fragments.pix_to_face[0][self.coverage]
        self.corners = triangles[covered]  # (P, 3) vertex indices of each covered texel's triangle
        self.weights = fragments.bary_coords[0][self.coverage]  # (P, 3) its barycentrics

    def __call__(self, vertex_colors: torch.Tensor) -> torch.Tensor:
        batched = vertex_colors.dim() == 3
        colours = vertex_colors if batched else vertex_colors.unsqueeze(0)
        b, n, c = colours.shape
        if n != self.num_vertices:
            raise ValueError(f"vertex_colors have {n} vertices, the UV layout {self.num_vertices}")
        corners, weights = self.corners.to(colours.device), self.weights.to(colours)
        values = (colours[:, corners] * weights[None, :, :, None]).sum(2)  # (B, P, C)
        pixels = colours.new_zeros(b * c, self.size, self.size)
        pixels[:, self.coverage.to(colours.device)] = values.permute(0, 2, 1).reshape(b * c, -1)
        coverage = self.coverage.to(colours.device)
        texture, filled = dilate_texture(pixels, coverage, self.padding_px)
        if bool(coverage.any()):
            # Beyond the padding: the mean colour, so mipmaps of a sparse atlas do not darken.
            texture = torch.where(filled, texture, values.mean(1).reshape(b * c)[:, None, None])
        texture = texture.reshape(b, c, self.size, self.size)
        return texture if batched else texture[0]


def bake_texture(
    uv: torch.Tensor,
    triangles: torch.Tensor,
    vertex_colors: torch.Tensor,
    size: int = 512,
    padding_px: int = 4,
) -> torch.Tensor:
    """Bake per-vertex colours into a UV texture (one-off `UVBaker`).

    uv: (N, 2) texture coordinates in [0, 1] (v = 0 is the image bottom); triangles: (F, 3) int64 indices
    into uv; vertex_colors: (N, C) or (B, N, C), typically albedo in [0, 1]; size: texture side in pixels;
    padding_px: rings of dilation past the islands' borders.
    Returns (C, size, size) or (B, C, size, size), row 0 at v = 1, matching `vertex_colors`' batching.
    """
    if uv.shape[0] != vertex_colors.shape[-2]:
        raise ValueError(f"uv {tuple(uv.shape)} must be (N, 2) with N = {vertex_colors.shape[-2]} as in vertex_colors")
    return UVBaker(uv.to(vertex_colors.device), triangles, size, padding_px)(vertex_colors)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of a texture at texture coordinates (same convention as `bake_texture`).

    texture: (C, H, W) or (B, C, H, W); uv: (N, 2) in [0, 1]. Returns (N, C) or (B, N, C); coordinates
    past the border read the border texel.
    """
    batched = texture.dim() == 4
    images = texture if batched else texture.unsqueeze(0)
    uv = uv.to(images)
    # grid_sample with align_corners=False puts -1/+1 at the outer texel edges: x = 2u - 1, y = 1 - 2v.
    grid = torch.stack([2.0 * uv[:, 0] - 1.0, 1.0 - 2.0 * uv[:, 1]], dim=-1)
    grid = grid[None, None].expand(images.shape[0], 1, -1, 2)
    values = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    values = values[:, :, 0].permute(0, 2, 1)  # (B, N, C)
    return values if batched else values[0]
