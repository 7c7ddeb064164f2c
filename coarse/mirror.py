"""Mirror images in coefficient space: the coefficients of a face seen in a horizontally flipped photo.

Flipping a photo left-right is the reflection x -> -x of the camera frame: Deep3D's principal point sits at the
image centre and the camera on the z axis, so a pixel at u moves to S - u, which is what `torch.flip(image, (-1,))`
does to pixel centres. Reflecting a posed face R S + t gives (M R M)(M S) + M t with M = diag(-1, 1, 1), so:

- the shape and the albedo become their mirror images on the mesh (vertex v takes its mirror vertex's offset,
  with x negated for the shape). The PCA spans of a symmetric model are closed under that, up to what the
  least-squares projection back onto them drops (`CoefficientMirror.residual` says how much);
- pitch (rotation about x) stays, yaw and roll change sign, whatever the order Rz Ry Rx (M Rx M = Rx,
  M Ry(a) M = Ry(-a), M Rz(a) M = Rz(-a));
- the translation's x changes sign;
- the SH light's bands odd in x (the x, xy and xz terms of `render.shading.sh_basis`) change sign.

`flip_average` uses it for test-time augmentation: predict the photo and its flip, mirror the second and average.
"""
from __future__ import annotations

import torch
from torch import nn

from coarse import coefficients as C
from coarse.morphable_model import MorphableModel, mirror_vertices

_SH_ODD_IN_X = (3, 4, 7)  # sh_basis's -x, xy and -xz terms


def _mirror_matrix(basis: torch.Tensor, mirror: torch.Tensor, flip_x: bool) -> tuple[torch.Tensor, float]:
    """basis: (3N, K) per-vertex xyz rows -> ((K, K) coefficient map A with basis @ A ~ P basis, residual).

    P permutes vertices to their mirror and, if flip_x, negates x. residual: the share of ||P basis||^2 that lies
    outside the basis' span (0 for a span closed under the mirror)."""
    k = basis.shape[1]
    moved = basis.double().reshape(-1, 3, k)[mirror]
    if flip_x:
        moved = moved * moved.new_tensor([-1.0, 1.0, 1.0])[None, :, None]
    moved = moved.reshape(-1, k)
    # Minimum-norm least squares, directions under 1e-4 of the largest singular value cut: SynthFace's expression
    # basis has three (8e-5, 3e-9, 5e-19 relative), on which a plain solve puts coefficients of 1e5.
    solution = torch.linalg.pinv(basis.double(), rtol=1e-4) @ moved
    left = moved - basis.double() @ solution
    residual = float(left.square().sum() / moved.square().sum().clamp_min(1e-30))
    return solution.float(), residual


class CoefficientMirror(nn.Module):
    """coeffs (B, 257) -> the coefficients of the same faces in the horizontally flipped images (see module doc).

    model: a left-right symmetric morphable model (its mean shape symmetric about x = 0 to 1 % of its width, as
    `mirror_vertices` checks). Building it solves three small least-squares problems (one per PCA basis).
    """

    def __init__(self, model: MorphableModel):
        super().__init__()
        mirror = mirror_vertices(model.mean_shape)
        maps, residuals = {}, {}
        for name, basis, flip_x in (("id", model.id_base, True), ("exp", model.exp_base, True),
                                    ("tex", model.albedo_base, False)):
            maps[name], residuals[name] = _mirror_matrix(basis.detach().cpu(), mirror.cpu(), flip_x)
            self.register_buffer(f"{name}_map", maps[name].to(basis.device), persistent=False)
        self.residual = residuals
        signs = torch.ones(C.N_COEFFS)
        signs[C.ANGLE.start + 1:C.ANGLE.stop] = -1.0  # yaw, roll
        signs[C.TRANS.start] = -1.0
        for channel in range(3):
            for band in _SH_ODD_IN_X:
                signs[C.GAMMA.start + 9 * channel + band] = -1.0
        self.register_buffer("signs", signs.to(model.mean_shape.device), persistent=False)

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        out = coeffs * self.signs
        # The maps act on row vectors: the offsets are coeffs @ basis.T, and basis @ A ~ P basis.
        return torch.cat([coeffs[:, C.ID] @ self.id_map.T, coeffs[:, C.EXP] @ self.exp_map.T,
                          coeffs[:, C.TEX] @ self.tex_map.T, out[:, C.TEX.stop:]], dim=-1)


def flip_average(regress, images: torch.Tensor, mirror: CoefficientMirror) -> torch.Tensor:
    """Test-time flip augmentation: the mean of regress(images) and the mirrored regress(flipped images).

    regress: (B, 3, S, S) -> (B, 257); both halves go through it as one batch of 2B."""
    both = regress(torch.cat([images, images.flip(-1)]))
    direct, flipped = both.chunk(2)
    return 0.5 * (direct + mirror(flipped))
