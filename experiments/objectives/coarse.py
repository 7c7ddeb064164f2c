"""Stage 1: the coarse regressor, self-supervised (Deep3D's recipe with the paper's L_id and L_att).

L = photo (parsing-masked) + 0.2 id + 0.005 att + landmark (68 points when the batch has them, else 5)
    + coefficient prior + skin-albedo flatness (+ the albedo-gain anchor with the light solved). No 3D labels: only images and their 2D landmarks.
"""
from __future__ import annotations

import torch

from experiments.config import LossWeights
from experiments.pipeline import FacePipeline, RenderedFace
from losses import (
    FeatureTargets, albedo_flatness, albedo_gain, attribute_loss, coefficient_regulariser, identity_loss, landmark_loss,
    photometric_loss, skin_mask,
)


def batch_landmarks(batch: dict) -> torch.Tensor | None:
    """The batch's 68 landmarks when every sample has them, else its 5, else None: (B, K, 2) pixel-index units."""
    for key in ("landmarks68", "landmarks5"):
        if isinstance(batch.get(key), torch.Tensor):
            return batch[key]
    return None


def landmark_term(predicted68: torch.Tensor, batch: dict, model, image_size: int) -> torch.Tensor | None:
    """Deep3D's weighted landmark loss against the batch's 68 (or 5) points; predicted68: (B, 68, 2)."""
    target = batch_landmarks(batch)
    if target is None:
        return None
    predicted = predicted68 if target.shape[1] == 68 else model.landmarks5_from_68(predicted68)
    return landmark_loss(predicted, target, image_size)


def face_terms(pipeline: FacePipeline, nets, weights: LossWeights, image: torch.Tensor, coeffs: torch.Tensor,
               rendered: RenderedFace, mask: torch.Tensor, batch: dict, targets: FeatureTargets | None = None
               ) -> dict[str, torch.Tensor]:
    """The per-image terms both stages share: photo, id, att, landmark, coefficient prior.

    nets: (identity_net, attribute_net); image: (B, 3, S, S); rendered: the render of coeffs at S;
    mask: (B, 1, S, S) the parsing mask M. Terms whose weight is 0 are not computed.
    targets: the nets' features of image, when the caller has them already.
    """
    identity_net, attribute_net = nets
    id_target, att_target = targets if targets is not None else (None, None)
    composite = rendered.image * rendered.mask + image * (1 - rendered.mask)
    terms = {"photo": photometric_loss(image, rendered.image, rendered.mask * mask)}
    if weights.id:
        terms["id"] = identity_loss(identity_net, image, composite, id_target)
    if weights.att:
        terms["att"] = attribute_loss(attribute_net, image, composite, att_target)
    if weights.reg:
        terms["reg"] = coefficient_regulariser(coeffs)
    landmark = landmark_term(rendered.landmarks68, batch, pipeline.model, image.shape[-1])
    if landmark is not None and weights.landmark:
        terms["landmark"] = landmark
    return terms


class CoarseObjective:
    """Renders the regressor's coefficients and computes the weighted stage-1 loss.

    pipeline: its regressor is trained; identity_net, attribute_net, parsing_net are frozen.
    __call__(batch) -> (loss, terms as floats, visuals).
    """

    name = "coarse"

    def __init__(self, pipeline: FacePipeline, weights: LossWeights, identity_net, attribute_net, parsing_net):
        self.pipeline, self.weights = pipeline, weights
        self.nets, self.parsing_net = (identity_net, attribute_net), parsing_net

    def __call__(self, batch: dict, step: int = 0) -> tuple[torch.Tensor, dict, dict]:
        image, w = batch["image"], self.weights
        with torch.no_grad():
            mask = skin_mask(self.parsing_net, image)
        prediction = self.pipeline.predict(image, stage="coarse", skin=mask)
        rendered = self.pipeline.render(prediction.coeffs, None, image.shape[-1])
        terms = face_terms(self.pipeline, self.nets, w, image, prediction.coeffs, rendered, mask, batch)
        if w.reflectance:
            terms["reflectance"] = albedo_flatness(rendered.geometry.albedo, self.pipeline.model.skin_mask)
        if w.albedo_gain:
            model = self.pipeline.model
            terms["albedo_gain"] = albedo_gain(rendered.geometry.albedo, model.mean_albedo, model.skin_mask)
        total = sum(getattr(w, k) * v for k, v in terms.items())
        composite = rendered.image * rendered.mask + image * (1 - rendered.mask)
        visuals = {"composite": composite, "mask": mask, "rendered": rendered}
        return total, {k: float(v.detach()) for k, v in terms.items()}, visuals
