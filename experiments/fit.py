"""Per-photo fitting by analysis by synthesis, started from the network's prediction (GANFIT's idea with a
regressor's output as the starting point instead of a random or mean face).

    coeffs, albedo, report = fit_to_photo(pipeline, crop, landmarks, steps=40, identity_net=net)

What moves: all 257 coefficients (identity, expression, texture, pose, SH light, translation) and a
per-vertex albedo offset. The albedo is the network's (fine, else coarse) albedo, plus the change of the
PCA albedo as the texture coefficients move, plus the offset:
    A = A_net + B_t (δ - δ_net) + O
What it minimises: the training losses on this one photo. The masked photometric loss (the parsing net's
skin mask times the render coverage, or the render coverage alone without a parsing net), the identity
loss (1 - cosine of the identity embeddings of photo and composite), the landmark loss against the
detected 68 points (or the detector's 5 when no 68 are given), the coefficient prior, and for the offset a
magnitude and an edge-smoothness penalty (so it adds detail the PCA albedo lacks, not shading or noise).
Adam, one learning rate per coefficient group in that group's units. The parameters of the step with the
lowest total loss are returned.

The report compares the network's and the fitted result on the same pixels: face-region PSNR over the
pixels the network's render covered (and the parsing net calls skin, when there is one), with uncovered
pixels counted as black so shrinking the face cannot help, and the identity cosine between the photo and
the render composited over it.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from coarse import coefficients as C
from experiments.config import LossWeights
from experiments.metrics import identity_cosine, image_metrics
from losses import coefficient_regulariser, identity_loss, landmark_loss, photometric_loss, skin_mask

DEFAULT_FIT_STEPS = 40


@dataclass(frozen=True)
class FitWeights:
    """Loss weights of the fit. photo, id, landmark and reg default to the training weights
    (`experiments.config.LossWeights`); offset_size and offset_smooth weigh the mean squared albedo offset
    and the mean squared offset difference across mesh edges (albedo units squared)."""

    photo: float = LossWeights.photo
    id: float = LossWeights.id
    landmark: float = LossWeights.landmark
    reg: float = LossWeights.reg
    offset_size: float = 1.0
    offset_smooth: float = 30.0

    @classmethod
    def from_loss_weights(cls, weights, **overrides) -> "FitWeights":
        """From an `experiments.config.LossWeights` (photo, id, landmark, reg), plus overrides."""
        values = {"photo": weights.photo, "id": weights.id, "landmark": weights.landmark, "reg": weights.reg}
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class FitLearningRates:
    """Adam step sizes per parameter group, in each group's units (coefficients are ~N(0, 1); angles in
    radians; translation in model units; SH light; albedo in [0, 1])."""

    id: float = 0.05
    exp: float = 0.05
    tex: float = 0.05
    angle: float = 0.005
    gamma: float = 0.01
    trans: float = 0.005
    offset: float = 0.01


@dataclass
class FitReport:
    """Before (the network's prediction) and after (the fit) on one photo.

    psnr_*_db: face-region PSNR (see the module docstring); id_cosine_*: identity cosine photo vs composite;
    landmark_px_*: mean landmark distance in crop pixels; losses_*: the loss terms at the first and the
    returned step; landmarks: "68", "5" or "none"; mask: "parsing" or "render".
    """

    steps: int
    best_step: int
    psnr_before_db: float
    psnr_after_db: float
    id_cosine_before: float
    id_cosine_after: float
    landmark_px_before: float | None
    landmark_px_after: float | None
    landmarks: str
    mask: str
    seconds: float
    ms_per_step: float
    losses_before: dict = field(default_factory=dict)
    losses_after: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        def rounded(value):
            if isinstance(value, float):
                return round(value, 5) if math.isfinite(value) else None
            if isinstance(value, dict):
                return {k: rounded(v) for k, v in value.items()}
            return value

        return {k: rounded(v) for k, v in asdict(self).items()}


def mesh_edges(triangles: torch.Tensor) -> torch.Tensor:
    """triangles: (F, 3) -> (E, 2) int64 unique undirected edges."""
    pairs = torch.cat([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]).sort(dim=1).values
    return torch.unique(pairs, dim=0)


def _coefficient_groups(coeffs: torch.Tensor) -> dict[str, torch.Tensor]:
    slices = {"id": C.ID, "exp": C.EXP, "tex": C.TEX, "angle": C.ANGLE, "gamma": C.GAMMA, "trans": C.TRANS}
    return {name: coeffs[:, part].detach().clone().requires_grad_(True) for name, part in slices.items()}


def _join(groups: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([groups[k] for k in ("id", "exp", "tex", "angle", "gamma", "trans")], dim=1)


def fit_to_photo(
    pipeline,
    image: torch.Tensor,
    landmarks: torch.Tensor | None,
    steps: int = DEFAULT_FIT_STEPS,
    *,
    identity_net,
    parsing_net=None,
    initial=None,
    weights: FitWeights = FitWeights(),
    learning_rates: FitLearningRates = FitLearningRates(),
) -> tuple[torch.Tensor, torch.Tensor, FitReport]:
    """Refine the network's reconstruction of one aligned photo.

    pipeline: an `experiments.pipeline.FacePipeline`; image: (3, S, S) or (1, 3, S, S) aligned crop in
    [0, 1] (S is the render size; use the pipeline's input size); landmarks: (68, 2) or (5, 2) target points
    in crop pixel-index units (the centre of image[i, j] is x=j, y=i), or None; steps: Adam steps;
    identity_net: a frozen `perception.identity.IdentityNet`; parsing_net: a `perception.parsing.ParsingNet`
    for the skin mask, or None; initial: the pipeline's Prediction for this crop (predicted here if None).
    Returns (coeffs (1, 257), albedo (1, N, 3) clamped to [0, 1], FitReport).
    """
    started = time.perf_counter()
    image = (image if image.dim() == 4 else image.unsqueeze(0)).detach()
    size = image.shape[-1]
    model = pipeline.model
    if initial is None:
        with torch.no_grad():
            initial = pipeline.predict(image)
    coeffs0 = initial.coeffs.detach()
    albedo0 = (initial.fine_albedo if initial.fine_albedo is not None else initial.coarse_albedo).detach()
    tex_base = model.albedo_base  # (3N, 80)
    edges = mesh_edges(model.triangles)
    target = None
    if landmarks is not None:
        target = torch.as_tensor(landmarks, dtype=image.dtype, device=image.device).reshape(1, -1, 2)
        if target.shape[1] not in (5, 68):
            raise ValueError(f"expected 68 or 5 landmarks, got {target.shape[1]}")
    with torch.no_grad():
        skin = skin_mask(parsing_net, image) if parsing_net is not None else None

    groups = _coefficient_groups(coeffs0)
    offset = torch.zeros_like(albedo0, requires_grad=True)
    optimiser = torch.optim.Adam(
        [{"params": [groups[k]], "lr": getattr(learning_rates, k)} for k in groups]
        + [{"params": [offset], "lr": learning_rates.offset}])

    def albedo_of(coeffs: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        tex_change = ((coeffs[:, C.TEX] - coeffs0[:, C.TEX]) @ tex_base.T).reshape(albedo0.shape)
        return albedo0 + tex_change + offset

    def evaluate(coeffs: torch.Tensor, offset: torch.Tensor):
        albedo = albedo_of(coeffs, offset)
        rendered = pipeline.render(coeffs, albedo, size)
        coverage = rendered.mask
        composite = rendered.image * coverage + image * (1 - coverage)
        mask = coverage * skin if skin is not None else coverage
        terms = {
            "photo": photometric_loss(image, rendered.image, mask),
            "id": identity_loss(identity_net, image, composite),
            "reg": coefficient_regulariser(coeffs),
            "offset_size": offset.pow(2).sum(-1).mean(),
            "offset_smooth": (offset[:, edges[:, 0]] - offset[:, edges[:, 1]]).pow(2).sum(-1).mean(),
        }
        predicted = None
        if target is not None:
            predicted = rendered.landmarks68
            if target.shape[1] == 5:
                predicted = model.landmarks5_from_68(predicted)
            terms["landmark"] = landmark_loss(predicted, target, size)
        total = sum(getattr(weights, name) * value for name, value in terms.items())
        return total, terms, rendered, composite, predicted

    def measure(coeffs: torch.Tensor, offset: torch.Tensor, region: torch.Tensor | None):
        with torch.no_grad():
            _, terms, rendered, composite, predicted = evaluate(coeffs, offset)
            if region is None:
                region = (rendered.mask >= 0.5).float() * ((skin >= 0.5).float() if skin is not None else 1.0)
            psnr = float(image_metrics(image, rendered.image, region)["psnr_face_db"][0])
            cosine = float(identity_cosine(identity_net, image, composite)[0])
            landmark_px = None if predicted is None else float((predicted - target).norm(dim=-1).mean())
        return region, psnr, cosine, landmark_px, {k: float(v) for k, v in terms.items()}

    region, psnr_before, cosine_before, landmarks_before, losses_before = measure(coeffs0, offset.detach(), None)
    best_loss, best_step = math.inf, 0
    best = (coeffs0, offset.detach().clone())
    loop_started = time.perf_counter()
    for step in range(steps):
        coeffs = _join(groups)
        total, _, _, _, _ = evaluate(coeffs, offset)
        value = float(total.detach())
        if not math.isfinite(value):
            break
        if value < best_loss:
            best_loss, best_step, best = value, step, (coeffs.detach().clone(), offset.detach().clone())
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()
    if steps > 0:
        # The parameters after the last update have not been scored yet.
        with torch.no_grad():
            coeffs = _join(groups)
            value = float(evaluate(coeffs, offset)[0])
        if math.isfinite(value) and value < best_loss:
            best_step, best = steps, (coeffs.detach().clone(), offset.detach().clone())
    loop_seconds = time.perf_counter() - loop_started
    coeffs, offset_best = best
    _, psnr_after, cosine_after, landmarks_after, losses_after = measure(coeffs, offset_best, region)
    seconds = time.perf_counter() - started
    report = FitReport(
        steps=steps, best_step=best_step, psnr_before_db=psnr_before, psnr_after_db=psnr_after,
        id_cosine_before=cosine_before, id_cosine_after=cosine_after, landmark_px_before=landmarks_before,
        landmark_px_after=landmarks_after,
        landmarks="none" if target is None else str(target.shape[1]),
        mask="parsing" if skin is not None else "render", seconds=seconds,
        ms_per_step=1e3 * loop_seconds / max(steps, 1), losses_before=losses_before, losses_after=losses_after)
    with torch.no_grad():
        albedo = albedo_of(coeffs, offset_best).clamp(0, 1)
    return coeffs, albedo, report
