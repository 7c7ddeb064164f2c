"""Self-augmentation (the paper's §3.2.3): re-render the prediction under a random pose or behind synthetic
occluders, reconstruct those images with the same network, and render the reconstructions again.

One call of `SelfAugmentation` does, for a batch of inputs I and the network's first-pass prediction
(coeffs, albedo):

    pose branch       I_rot  = the predicted face (random pose, the predicted albedo and light) over a
                               random background; the target pose is known.
    occlusion branch  I_R    = the prediction in its own view composited over I;
                      I_occ  = I_R with one synthetic occluder pasted on the face (placed with the
                               projected 5 landmarks); the occluder mask is known.
    second pass       reconstruct(I_rot), reconstruct(I_occ) -> (coeffs', albedo') per branch, each
                      rendered twice:
                      (a) in the view it predicts for itself (I_r_rot, I_r_occ);
                      (b) in the ORIGINAL view, comparable with I: the reconstruction's id, exp, tex
                          and albedo with the first pass's angle, gamma and trans (see
                          `original_view_coefficients`).

The network is any callable (`Reconstruction`); this module never imports it. The losses on these
images live in `losses.robust`.

Without feedback (`SelfAugmentationConfig.feedback` False, the "w/o SA" column of Table 2) the augmented
renders are made but not fed back: the robust loss then compares the input with I_rot and I_occ themselves,
so it still asks the prediction to keep its identity under a new view, without the second pass.

Gradients: the second pass always carries gradients into the network. With
`SelfAugmentationConfig.detach_inputs` (default) the first pass's outputs enter the augmentation as
constants: I_rot, I_occ and the original-view pose/light swapped in by (b) are detached, so the
augmentation costs one extra forward/backward of the second pass and nothing of the first. With
`detach_inputs=False` everything stays differentiable end to end (the paper's wording), and the
robust losses also reach the first pass through I_rot, I_occ and the swapped pose/light.

Randomness (poses, backgrounds, occluders) comes only from the `torch.Generator` passed in, so a
seeded generator gives the same augmentation every time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch

from augment.occluders import BACKGROUND_KINDS, OCCLUDER_KINDS, occlude, sample_background
from coarse import coefficients as C
from coarse.face_model import assemble_face
from coarse.morphable_model import MorphableModel
from render.rasterizer import render_mesh

Reconstruction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""The whole network (coarse regressor + fine stage): images (B, 3, S, S) in [0, 1] ->
(coeffs (B, 257), albedo (B, N, 3) in [0, 1])."""


@dataclass(frozen=True)
class PoseRanges:
    """Random poses are uniform in +-these angles (degrees).

    Angle axes (coarse.coefficients.ANGLE, R = Rz Ry Rx): pitch about x (nodding), yaw about y
    (turning left/right), roll about z (in-plane tilt).
    """

    yaw_deg: float = 90.0
    pitch_deg: float = 30.0
    roll_deg: float = 20.0

    def radians(self) -> torch.Tensor:
        """(3,) maxima in the ANGLE slice's order (x = pitch, y = yaw, z = roll), radians."""
        return torch.tensor([math.radians(self.pitch_deg), math.radians(self.yaw_deg), math.radians(self.roll_deg)])


@dataclass(frozen=True)
class SelfAugmentationConfig:
    """What the self-augmentation draws. `pose` and `occlusion` switch the two branches (Table 2)."""

    pose: bool = True
    occlusion: bool = True
    pose_ranges: PoseRanges = field(default_factory=PoseRanges)
    occluder_kinds: tuple[str, ...] = OCCLUDER_KINDS
    background_kinds: tuple[str, ...] = BACKGROUND_KINDS
    detach_inputs: bool = True
    feedback: bool = True

    def __post_init__(self):
        ranges = (self.pose_ranges.yaw_deg, self.pose_ranges.pitch_deg, self.pose_ranges.roll_deg)
        if any(not 0.0 <= r <= 180.0 for r in ranges):
            raise ValueError(f"augment/self_augmentation.py: pose ranges must be in [0, 180] degrees, got {ranges}")
        for name, kinds, known in (("occluder_kinds", self.occluder_kinds, OCCLUDER_KINDS),
                                   ("background_kinds", self.background_kinds, BACKGROUND_KINDS)):
            unknown = [k for k in kinds if k not in known]
            if unknown or not kinds:
                raise ValueError(f"augment/self_augmentation.py: {name} must be a non-empty subset of "
                                 f"{', '.join(known)}; got {tuple(kinds)}")

    @property
    def enabled(self) -> bool:
        return self.pose or self.occlusion


@dataclass
class AugmentedView:
    """One branch of the self-augmentation. Images are (B, 3, S, S) in [0, 1], masks (B, 1, S, S) in [0, 1].
    Without feedback (`SelfAugmentationConfig.feedback` False) only image, render_mask, occluder_mask, coeffs
    and albedo are set, and the recon_* / original_view_* fields are None.

    image: the augmented input fed to the second pass (I_rot or I_occ).
    render_mask: where the first-pass face is rendered in `image`.
    occluder_mask: the pasted occluder's alpha (zeros in the pose branch).
    coeffs: (B, 257) the coefficients `image` was rendered from (for I_rot: the random target pose).
    albedo: (B, N, 3) the albedo `image` was rendered with.
    recon_coeffs, recon_albedo: the second pass's output for `image`.
    recon_image, recon_mask: the reconstruction rendered in its own predicted view (I_r_rot / I_r_occ),
        composited over the image's clean background (I_rot's background; the input I for occlusion).
    original_view_coeffs: (B, 257) the reconstruction moved to the original view (see
        `original_view_coefficients`).
    original_view_image, original_view_mask: that render, composited over the input I.
    """

    image: torch.Tensor
    render_mask: torch.Tensor
    occluder_mask: torch.Tensor
    coeffs: torch.Tensor
    albedo: torch.Tensor
    recon_coeffs: torch.Tensor | None = None
    recon_albedo: torch.Tensor | None = None
    recon_image: torch.Tensor | None = None
    recon_mask: torch.Tensor | None = None
    original_view_coeffs: torch.Tensor | None = None
    original_view_image: torch.Tensor | None = None
    original_view_mask: torch.Tensor | None = None

    @property
    def fed_back(self) -> bool:
        """True when the augmented image went through the network again (the self-augmentation proper)."""
        return self.recon_image is not None


@dataclass
class SelfAugmentationOutput:
    """rendered, rendered_mask: I_R over the input I and its coverage (computed by the occlusion branch,
    None without it). rotated / occluded: the branches, None when switched off."""

    rendered: torch.Tensor | None = None
    rendered_mask: torch.Tensor | None = None
    rotated: AugmentedView | None = None
    occluded: AugmentedView | None = None

    def branches(self) -> dict[str, AugmentedView]:
        """The branches that ran, by name ("rot", "occ")."""
        return {name: view for name, view in (("rot", self.rotated), ("occ", self.occluded)) if view is not None}


def random_pose(coeffs: torch.Tensor, ranges: PoseRanges, generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of coeffs (B, 257) whose ANGLE slice is replaced by uniform random angles in +-ranges (radians).

    Identity, expression, texture, light and translation are kept (and keep their gradients). The
    translation is not re-centred: the morphable model's mean shape is centred at its origin, which is
    the rotation centre, so a new pose turns the face in place and its centre stays at the pixel the
    prediction put it (the middle of an aligned crop).
    """
    batch = coeffs.shape[0]
    device = generator.device if generator is not None else torch.device("cpu")
    unit = torch.rand(batch, C.N_ANGLE, generator=generator, device=device) * 2.0 - 1.0
    angles = (unit * ranges.radians().to(device)).to(coeffs)
    rotated = coeffs.clone()
    rotated[:, C.ANGLE] = angles
    return rotated


def original_view_coefficients(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """The reconstruction seen in the original view: (B, 257) each -> (B, 257).

    Keeps the reconstruction's id [0:80], exp [80:144] and tex [144:224] (the face itself) and takes
    angle [224:227], gamma [227:254] and trans [254:257] (the camera-side quantities: pose, light,
    placement) from the original first-pass prediction, so the render lines up with the input I.
    """
    moved = reconstructed.clone()
    for part in (C.ANGLE, C.GAMMA, C.TRANS):
        moved[:, part] = original[:, part]
    return moved


class _Branch(NamedTuple):
    """One branch's augmented input before the second pass; clean_background: (B, 3, S, S) what its
    reconstruction is composited over (I_rot's background, or the input I for occlusion)."""

    name: str
    image: torch.Tensor
    render_mask: torch.Tensor
    occluder_mask: torch.Tensor
    coeffs: torch.Tensor
    clean_background: torch.Tensor


class SelfAugmentation:
    """Builds the augmented images, runs the network on them and renders the reconstructions.

    model: the morphable model the network's coefficients belong to (on the images' device).
    image_size: S, the side of the square input images in pixels.
    """

    def __init__(self, model: MorphableModel, config: SelfAugmentationConfig = SelfAugmentationConfig(),
                 image_size: int = 224):
        self.model, self.config, self.image_size = model, config, int(image_size)

    def render(self, coeffs: torch.Tensor, albedo: torch.Tensor, background: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Render (B, 257) coeffs with (B, N, 3) albedo over (B, 3, S, S) backgrounds.

        Returns (image (B, 3, S, S) clamped to [0, 1], render mask (B, 1, S, S), landmarks68 (B, 68, 2)
        renderer pixels).
        """
        face = assemble_face(self.model, coeffs, self.image_size, albedo=albedo)
        out = render_mesh(face.screen, self.model.triangles, face.colors, self.image_size, background=background)
        return out.image.clamp(0.0, 1.0), out.mask, face.landmarks

    def __call__(self, reconstruct: Reconstruction, image: torch.Tensor, coeffs: torch.Tensor,
                 albedo: torch.Tensor, generator: torch.Generator | None = None) -> SelfAugmentationOutput:
        """Run both (enabled) branches.

        reconstruct: the whole network (see `Reconstruction`).
        image: (B, 3, S, S) the input I in [0, 1]; coeffs: (B, 257) and albedo: (B, N, 3) the network's
        first-pass prediction for it. generator: the source of every random draw (default: one seeded
        from torch's global generator). Returns a SelfAugmentationOutput; with both branches off it is
        empty and nothing is computed.
        """
        cfg = self.config
        if not cfg.enabled:
            return SelfAugmentationOutput()
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"augment/self_augmentation.py: expected (B, 3, {self.image_size}, {self.image_size}) "
                             f"images, got {tuple(image.shape)}")
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        # Without feedback the augmented renders are the only thing the robust loss sees, so they must carry
        # the gradient to the first pass whatever detach_inputs says.
        detach = cfg.detach_inputs and cfg.feedback
        first_coeffs, first_albedo = (coeffs.detach(), albedo.detach()) if detach else (coeffs, albedo)
        batch = image.shape[0]
        output = SelfAugmentationOutput()
        branches: list[_Branch] = []

        if cfg.pose:
            rotated = random_pose(first_coeffs, cfg.pose_ranges, generator)
            background = self._backgrounds(batch, generator).to(image)
            i_rot, rot_mask, _ = self.render(rotated, first_albedo, background)
            branches.append(_Branch("rot", i_rot, rot_mask, torch.zeros_like(rot_mask), rotated, background))

        if cfg.occlusion:
            i_r, r_mask, landmarks68 = self.render(first_coeffs, first_albedo, image)
            output.rendered, output.rendered_mask = i_r, r_mask
            landmarks5 = self.model.landmarks5_from_68(landmarks68.detach())
            i_occ, occ_mask = occlude(i_r, generator, landmarks5, cfg.occluder_kinds)
            branches.append(_Branch("occ", i_occ, r_mask, occ_mask, first_coeffs, image))

        if not cfg.feedback:
            for branch in branches:
                view = AugmentedView(image=branch.image, render_mask=branch.render_mask,
                                     occluder_mask=branch.occluder_mask, coeffs=branch.coeffs, albedo=first_albedo)
                setattr(output, "rotated" if branch.name == "rot" else "occluded", view)
            return output

        # One second pass, and one render per view kind, for both branches: a call on 2B images is cheaper
        # than two on B.
        recon_coeffs, recon_albedo = reconstruct(torch.cat([b.image for b in branches]))
        recon_images, recon_masks, _ = self.render(recon_coeffs, recon_albedo,
                                                   torch.cat([b.clean_background for b in branches]))
        count = len(branches)
        moved = original_view_coefficients(recon_coeffs, first_coeffs.repeat(count, 1))
        original_images, original_masks, _ = self.render(moved, recon_albedo, image.repeat(count, 1, 1, 1))

        for k, branch in enumerate(branches):
            part = slice(k * batch, (k + 1) * batch)
            view = AugmentedView(
                image=branch.image, render_mask=branch.render_mask, occluder_mask=branch.occluder_mask,
                coeffs=branch.coeffs, albedo=first_albedo,
                recon_coeffs=recon_coeffs[part], recon_albedo=recon_albedo[part],
                recon_image=recon_images[part], recon_mask=recon_masks[part],
                original_view_coeffs=moved[part],
                original_view_image=original_images[part], original_view_mask=original_masks[part],
            )
            if branch.name == "rot":
                output.rotated = view
            else:
                output.occluded = view
        return output

    def _backgrounds(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(B, 3, S, S) random backgrounds, kinds uniform over config.background_kinds (generator's device)."""
        kinds = self.config.background_kinds
        picks = torch.randint(len(kinds), (batch,), generator=generator, device=generator.device).tolist()
        return torch.stack([sample_background(self.image_size, generator, kinds[k]) for k in picks])

