"""Pinhole camera looking down -z from z = distance (Deep3D's convention).

Pixel coordinates are continuous: pixel (i, j) covers [j, j+1) x [i, i+1) and has its centre at
(j + 0.5, i + 0.5). Image u points right, image v points down (opposite to model y).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PerspectiveCamera:
    """focal and centre in pixels; distance in model units; image_size in pixels (square)."""

    focal: float
    center: float
    distance: float
    image_size: int

    def to_view(self, points: torch.Tensor) -> torch.Tensor:
        """points: (..., 3) world -> (..., 3) with the last coordinate the positive depth z' = d - z."""
        return torch.stack([points[..., 0], points[..., 1], self.distance - points[..., 2]], dim=-1)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """points: (..., 3) world -> (..., 3) screen: u, v in pixels and depth z' in model units."""
        view = self.to_view(points)
        depth = view[..., 2]
        u = self.focal * view[..., 0] / depth + self.center
        v = self.center - self.focal * view[..., 1] / depth
        return torch.stack([u, v, depth], dim=-1)
