"""The morphable model container shared by BFM and SynthFace.

Bases use Deep3D's layout: row ``3*i + c`` of a (3N, k) basis moves coordinate ``c`` of vertex ``i``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

# The 5 landmarks (left eye, right eye, nose tip, left mouth corner, right mouth corner) as
# built from the 68-point iBUG layout: eye centres average the six eye contour points.
LEFT_EYE_68 = list(range(36, 42))
RIGHT_EYE_68 = list(range(42, 48))
NOSE_TIP_68 = 30
MOUTH_LEFT_68 = 48
MOUTH_RIGHT_68 = 54


@dataclass
class MorphableModel:
    """A linear face model.

    Attributes:
        mean_shape: (N, 3) mean vertex positions, centred at the origin, model units.
        id_base: (3N, 80) identity basis.
        exp_base: (3N, 64) expression basis.
        mean_albedo: (N, 3) mean per-vertex albedo in [0, 1].
        albedo_base: (3N, 80) albedo basis in [0, 1] units.
        triangles: (F, 3) int64 vertex indices, 0-based, counter-clockwise seen from the front (+z).
        point_buf: (N, K) int64 indices of the faces adjacent to each vertex, padded with F (an
            index one past the last face, whose normal is taken as zero).
        landmarks68: (68,) int64 vertex indices in the iBUG 68-point order.
        skin_mask: (N,) bool, vertices of the face region used by losses.
        uv: (N, 2) texture coordinates in [0, 1] or None.
        name: a short label for logs.
    """

    mean_shape: torch.Tensor
    id_base: torch.Tensor
    exp_base: torch.Tensor
    mean_albedo: torch.Tensor
    albedo_base: torch.Tensor
    triangles: torch.Tensor
    point_buf: torch.Tensor
    landmarks68: torch.Tensor
    skin_mask: torch.Tensor
    uv: torch.Tensor | None = None
    name: str = "model"
    extras: dict = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def num_faces(self) -> int:
        return self.triangles.shape[0]

    @property
    def device(self) -> torch.device:
        return self.mean_shape.device

    def to(self, device: torch.device | str) -> "MorphableModel":
        """A copy with every tensor (extras' too, one dict level deep) on `device`."""

        def move(value):
            if isinstance(value, torch.Tensor):
                return value.to(device)
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return value

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def landmarks5_from_68(self, points68: torch.Tensor) -> torch.Tensor:
        """points68: (..., 68, D) -> (..., 5, D) eye centres, nose tip, mouth corners."""
        return torch.stack(
            [
                points68[..., LEFT_EYE_68, :].mean(-2),
                points68[..., RIGHT_EYE_68, :].mean(-2),
                points68[..., NOSE_TIP_68, :],
                points68[..., MOUTH_LEFT_68, :],
                points68[..., MOUTH_RIGHT_68, :],
            ],
            dim=-2,
        )

    def validate(self) -> None:
        """Raise ValueError with one line naming the first inconsistent field."""
        n = self.num_vertices
        checks = [
            ("mean_shape", self.mean_shape.shape == (n, 3)),
            ("id_base", self.id_base.shape == (3 * n, 80)),
            ("exp_base", self.exp_base.shape == (3 * n, 64)),
            ("mean_albedo", self.mean_albedo.shape == (n, 3)),
            ("albedo_base", self.albedo_base.shape == (3 * n, 80)),
            ("triangles", self.triangles.ndim == 2 and self.triangles.shape[1] == 3),
            ("triangles range", int(self.triangles.min()) >= 0 and int(self.triangles.max()) < n),
            ("point_buf", self.point_buf.shape[0] == n and int(self.point_buf.max()) <= self.num_faces),
            ("landmarks68", self.landmarks68.shape == (68,) and int(self.landmarks68.max()) < n),
            ("skin_mask", self.skin_mask.shape == (n,)),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"morphable model '{self.name}': field {name} has the wrong shape or range")


def mirror_vertices(positions: torch.Tensor, tolerance: float = 0.01) -> torch.Tensor:
    """(N,) int64: for each vertex, the vertex nearest its mirror image across the x = 0 plane (left <-> right).

    positions: (N, 3) a face centred on the sagittal plane (a model's mean shape). tolerance: the largest
    accepted distance from a vertex's mirror image to its match, as a fraction of the face's width; a mesh that
    is not left-right symmetric to within it raises ValueError (one line), since a map onto far-away vertices
    would pair unrelated parts of the face.
    """
    from scipy.spatial import cKDTree

    points = positions.detach().double().cpu().numpy()
    mirrored = points * (-1.0, 1.0, 1.0)
    distance, index = cKDTree(points).query(mirrored)
    width = float(points[:, 0].max() - points[:, 0].min()) or 1.0
    worst = float(distance.max()) / width
    if worst > tolerance:
        raise ValueError(f"the mesh is not left-right symmetric about x = 0: a mirrored vertex lies {worst:.1%} of "
                         f"the face's width from the nearest vertex (tolerance {tolerance:.1%})")
    return torch.as_tensor(index, dtype=torch.long, device=positions.device)


def build_point_buf(triangles: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """triangles: (F, 3) -> (N, K) adjacent-face indices padded with F."""
    f = triangles.shape[0]
    vert = triangles.reshape(-1)
    face = torch.arange(f, device=triangles.device).repeat_interleave(3)
    order = torch.argsort(vert, stable=True)
    vert, face = vert[order], face[order]
    counts = torch.bincount(vert, minlength=num_vertices)
    k = int(counts.max()) if counts.numel() else 1
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(vert.shape[0], device=triangles.device) - starts[vert]
    buf = torch.full((num_vertices, k), f, dtype=torch.long, device=triangles.device)
    buf[vert, slot] = face
    return buf
