"""The robust loss (the paper's eq. 9) and the self-augmentation consistency terms (§3.2.3).

Both compare the input I, or the augmented images, with renders of what the network reconstructs
from the augmented images (see augment.self_augmentation). Per branch ("rot": random pose,
"occ": synthetic occluders):

    feature level (eq. 9, L_rob)
        rob_id_<b>, rob_att_<b>     I  vs the branch's reconstruction rendered in the original view
                                    (over I). The network must recover the same identity and
                                    attributes from a turned or occluded copy of its own prediction.
        rob_id_rot_view,            I_rot vs I_r_rot (the reconstruction of I_rot in the view it
        rob_att_rot_view            predicts for itself, over I_rot's background).
    image level (self-augmentation consistency)
        sa_photo_rot                I_rot vs I_r_rot, over I_rot's render mask times I_r_rot's.
        sa_photo_occ                I_R (the clean first-pass render) vs I_r_occ, over I_R's render
                                    mask times I_r_occ's: the known face under the occluder.
        sa_photo_orig_<b>           I vs the original-view render, over the skin mask M times its
                                    render mask. The occluder of I_occ does not matter: the target
                                    is the clean input I.

Without feedback (the "w/o SA" ablation) only rob_id_<b> and rob_att_<b> remain, between I and the
augmented render itself (I_rot, or I_occ), which carries the gradient to the first pass.

Weights (`RobustWeights`) are per kind of term, shared by the branches. Inside this loss they keep
eq. 5's relative weights L_photo : L_id : L_att = 1 : 0.2 : 0.005, scaled so id = 1:
id 1.0, att 0.025, photo 5.0. The caller multiplies the total by the paper's outer L_rob weight
(0.001 in eq. 5). A zero weight skips its terms (and their cost).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from losses.perceptual import FeatureTargets, attribute_loss, identity_loss
from losses.photometric import photometric_loss


@dataclass(frozen=True)
class RobustWeights:
    """Relative weights of the robust-loss terms (see the module docstring for the grounds)."""

    id: float = 1.0
    att: float = 0.025
    photo: float = 5.0


def robust_loss(identity_net, attribute_net, image: torch.Tensor, skin_mask: torch.Tensor, augmentation_output,
                weights: RobustWeights = RobustWeights(), targets: FeatureTargets | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted robust + self-augmentation loss.

    identity_net: a perception identity net (unit embeddings of aligned crops), or None when weights.id is 0.
    attribute_net: a perception.attributes.AttributeNet (`.features`, `.image_size`), or None when
        weights.att is 0. Both are frozen; the target side carries no gradient.
    image: (B, 3, S, S) the input I in [0, 1]. skin_mask: (B, 1, S, S) the parsing mask M of I in [0, 1].
    augmentation_output: an augment.self_augmentation.SelfAugmentationOutput for this batch.
    targets: the nets' features of I when the caller has them (`losses.perceptual.feature_targets`); the terms
        against I then reuse them instead of running the nets on I again.
    Returns (total: scalar, terms: unweighted scalar tensors by name, for logging). With no branch in
    the output the total is a zero tensor and the terms are empty.
    """
    if weights.id and identity_net is None:
        raise ValueError("losses/robust.py: weights.id > 0 needs an identity net (or set weights.id = 0)")
    if weights.att and attribute_net is None:
        raise ValueError("losses/robust.py: weights.att > 0 needs an attribute net (or set weights.att = 0)")
    id_target, att_target = targets if targets is not None else (None, None)
    terms: dict[str, torch.Tensor] = {}
    kinds: dict[str, float] = {}

    def add(name: str, kind: str, compute) -> None:
        weight = getattr(weights, kind)
        if weight:
            terms[name], kinds[name] = compute(), weight

    for branch, view in augmentation_output.branches().items():
        if not view.fed_back:  # "w/o SA": the first-pass prediction re-rendered under the new view / occluder
            add(f"rob_id_{branch}", "id", lambda: identity_loss(identity_net, image, view.image, id_target))
            add(f"rob_att_{branch}", "att", lambda: attribute_loss(attribute_net, image, view.image, att_target))
            continue
        original = view.original_view_image
        add(f"rob_id_{branch}", "id", lambda: identity_loss(identity_net, image, original, id_target))
        add(f"rob_att_{branch}", "att", lambda: attribute_loss(attribute_net, image, original, att_target))
        add(f"sa_photo_orig_{branch}", "photo",
            lambda: photometric_loss(image, original, skin_mask * view.original_view_mask))
        if branch == "rot":
            add("rob_id_rot_view", "id", lambda: identity_loss(identity_net, view.image, view.recon_image))
            add("rob_att_rot_view", "att", lambda: attribute_loss(attribute_net, view.image, view.recon_image))
            add("sa_photo_rot", "photo",
                lambda: photometric_loss(view.image, view.recon_image, view.render_mask * view.recon_mask))
        elif augmentation_output.rendered is not None:
            add("sa_photo_occ", "photo", lambda: photometric_loss(
                augmentation_output.rendered, view.recon_image, augmentation_output.rendered_mask * view.recon_mask))
    total = sum((kinds[name] * value for name, value in terms.items()), image.new_zeros(()))
    return total, terms
