"""Stage 2 (the paper): fine GCN albedo + self-augmentation, trained end to end with the regressor.

L = 1 L_photo + 0.2 L_id + 0.005 L_att + 0.001 L_rob           (eq. 5, on the fine render)
    + sa_photo * (self-augmentation image consistency, section 3.2.3)
    + landmark + coefficient prior (Deep3D's auxiliaries, keep the geometry of stage 1)
    + coarse_photo * stage 1's photometric loss on the coarse render (+ its albedo flatness): the fine render
      reproduces the photo it unwraps whatever the pose, so this is what keeps the pose and light honest
    + correction_weight * mean |T_f - T|^2 (the GCNs change only what the photo supports)
    + albedo_symmetry * mean |T_f - mirror(T_f)|^2 over skin (the embedded default's prior; not in the paper)
L_rob (eq. 9) is the identity + attribute loss between the input and the reconstructions of its
re-posed (I_rot) and occluded (I_occ) re-renders, seen in the original view, and between I_rot and its
own reconstruction.
"""
from __future__ import annotations


import torch

from augment.self_augmentation import PoseRanges, SelfAugmentation, SelfAugmentationConfig
from coarse.morphable_model import mirror_vertices
from experiments.config import AugmentConfig, LossWeights
from experiments.objectives.coarse import face_terms
from experiments.pipeline import FacePipeline
from losses import albedo_flatness, albedo_gain, albedo_symmetry, feature_targets, photometric_loss, skin_mask
from losses.robust import RobustWeights, robust_loss

# Inside L_rob, identity and attribute terms keep eq. 5's ratio 0.2 : 0.005.
ROBUST_WEIGHTS = RobustWeights(id=1.0, att=0.025, photo=1.0)


def self_augmentation_for(model, augment: AugmentConfig, image_size: int) -> SelfAugmentation | None:
    """The configured SelfAugmentation, or None when both branches are off."""
    if not (augment.pose or augment.occlusion):
        return None
    ranges = PoseRanges(yaw_deg=augment.max_yaw_deg, pitch_deg=augment.max_pitch_deg, roll_deg=augment.max_roll_deg)
    config = SelfAugmentationConfig(pose=augment.pose, occlusion=augment.occlusion, pose_ranges=ranges,
                                    detach_inputs=augment.detach_inputs, feedback=augment.feedback)
    return SelfAugmentation(model, config, image_size)


class FineObjective:
    """One stage-2 step: predict (regressor + fine stage), render, self-augment, eq. 5.

    pipeline: its regressor and fine stage are trained; the perception nets are frozen.
    generator: drives the random poses and occluders (seeded per step by the caller for resumability).
    """

    name = "fine"

    def __init__(self, pipeline: FacePipeline, weights: LossWeights, augment: AugmentConfig, correction_weight: float,
                 identity_net, attribute_net, parsing_net, image_size: int):
        self.pipeline, self.weights, self.correction_weight = pipeline, weights, correction_weight
        self.nets, self.parsing_net = (identity_net, attribute_net), parsing_net
        self.augmentation = self_augmentation_for(pipeline.model, augment, image_size) if weights.rob or weights.sa_photo else None
        self.mirror = mirror_vertices(pipeline.model.mean_shape) if weights.albedo_symmetry else None

    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole network as self-augmentation feeds it: images -> (coeffs, fine albedo)."""
        prediction = self.pipeline.predict(images)
        return prediction.coeffs, prediction.fine_albedo

    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict, dict]:
        terms, weighted, visuals = self.terms(batch, generator)
        total = sum(weighted[k] * v for k, v in terms.items())
        return total, {k: float(v.detach()) for k, v in terms.items()}, visuals

    def terms(self, batch: dict, generator: torch.Generator | None = None) -> tuple[dict, dict, dict]:
        """(terms: scalar tensors by name, their weights in eq. 5, visuals)."""
        image, w = batch["image"], self.weights
        with torch.no_grad():
            mask = skin_mask(self.parsing_net, image)
        # The input's identity and attribute features, once: the FAID vector, L_id, L_att and L_rob all read them.
        targets = feature_targets(*self.nets, image)
        prediction = self.pipeline.predict(image, skin=mask, targets=targets)
        size = image.shape[-1]
        rendered = self.pipeline.render(prediction.coeffs, prediction.fine_albedo, size)
        terms = face_terms(self.pipeline, self.nets, w, image, prediction.coeffs, rendered, mask, batch, targets)
        weighted = {k: getattr(w, k) for k in terms}
        if w.coarse_photo:
            coarse = self.pipeline.render(prediction.coeffs, None, size)
            terms["coarse_photo"] = photometric_loss(image, coarse.image, coarse.mask * mask)
            weighted["coarse_photo"] = w.coarse_photo
            if w.reflectance:
                terms["reflectance"] = albedo_flatness(coarse.geometry.albedo, self.pipeline.model.skin_mask)
                weighted["reflectance"] = w.reflectance
        if w.albedo_gain:
            model = self.pipeline.model
            terms["albedo_gain"] = albedo_gain(prediction.coarse_albedo, model.mean_albedo, model.skin_mask)
            weighted["albedo_gain"] = w.albedo_gain
        correction = (prediction.fine_albedo - prediction.coarse_albedo).pow(2).sum(-1).mean()
        terms["correction"], weighted["correction"] = correction, self.correction_weight
        if self.mirror is not None:
            terms["albedo_symmetry"] = albedo_symmetry(prediction.fine_albedo, self.mirror, self.pipeline.model.skin_mask)
            weighted["albedo_symmetry"] = w.albedo_symmetry
        augmented = None
        if self.augmentation is not None:
            augmented = self.augmentation(self.reconstruct, image, prediction.coeffs, prediction.fine_albedo, generator)
            _, robust = robust_loss(self.nets[0], self.nets[1], image, mask, augmented, ROBUST_WEIGHTS, targets)
            rob = sum(ROBUST_WEIGHTS.id * v for k, v in robust.items() if k.startswith("rob_id")) + \
                sum(ROBUST_WEIGHTS.att * v for k, v in robust.items() if k.startswith("rob_att"))
            photo = [v for k, v in robust.items() if k.startswith("sa_photo")]
            if w.rob and not isinstance(rob, int):
                terms["rob"], weighted["rob"] = rob, w.rob
            if w.sa_photo and photo:
                terms["sa_photo"], weighted["sa_photo"] = sum(photo) / len(photo), w.sa_photo
        composite = rendered.image * rendered.mask + image * (1 - rendered.mask)
        visuals = {"composite": composite, "mask": mask, "rendered": rendered, "prediction": prediction,
                   "augmented": augmented}
        return terms, weighted, visuals


def step_generator(seed: int, step: int) -> torch.Generator:
    """The self-augmentation's random stream for one step (so a resumed run draws the same poses)."""
    return torch.Generator().manual_seed((seed * 7_919 + step) % (2 ** 63 - 1))


__all__ = ["FineObjective", "ROBUST_WEIGHTS", "self_augmentation_for", "step_generator"]
