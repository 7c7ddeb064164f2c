"""Stage 0 of the embedded default: a supervised warm start on SynthFaces' ground truth.

No ImageNet ResNet-50 can be downloaded here, and a regressor trained from random weights with only
self-supervised losses does not find the head pose in a CPU budget. This stage stands in for the
ImageNet initialisation: the regressor learns pose, translation, shape, expression, albedo and light
from SynthFaces' true coefficients, plus the 68 projected landmarks. The self-supervised stage that
follows is the paper's, unchanged. It is off when ImageNet weights or a Deep3D checkpoint are given.
"""
from __future__ import annotations

import math

import torch

from coarse import coefficients as C
from coarse.face_model import project_landmarks
from coarse.priors import CoefficientPrior
from experiments.config import IDENTITY_WEIGHTINGS
from losses import landmark_loss


def coefficient_scales(prior: CoefficientPrior = CoefficientPrior()) -> torch.Tensor:
    """(257,) the prior's standard deviation of every coefficient, so each group's error is unit-free.

    Uniform ranges +-a have standard deviation a / sqrt(3).
    """
    scale = torch.ones(C.N_COEFFS)
    scale[C.ID] = prior.id_std
    scale[C.EXP] = prior.exp_std
    scale[C.TEX] = prior.tex_std
    scale[C.ANGLE] = torch.tensor([prior.max_pitch, prior.max_yaw, prior.max_roll]) / math.sqrt(3)
    scale[C.GAMMA] = 0.1
    scale[C.TRANS] = torch.tensor([prior.max_shift, prior.max_shift, prior.max_depth_shift]) / math.sqrt(3)
    return scale


# Pose and position matter most for the self-supervised stage that follows, and a regressor trained from
# random weights starts to generalise on them only when they dominate the loss: with shape, albedo and light
# weighted like the pose (0.5/0.25), the held-out pose error had not moved after 8,000 samples at 64 px;
# with these weights it fell from 12.6 to 8.7 degrees within 6,400 (measured, see the session note).
GROUP_WEIGHTS = {"angle": 1.0, "trans": 1.0, "id": 0.1, "exp": 0.1, "tex": 0.05, "gamma": 0.05}


def identity_mode_weights(model, weighting: str = "uniform") -> torch.Tensor | None:
    """(80,) weights of the identity modes in the coefficient term, mean 1; None for "uniform" (all 1).

    "size": each mode's squared vertex norm, so the term is the shape error in vertex space. The modes differ a
    lot (SynthFace: the first five weigh 28, 12, 9, 8 and 7 times the mean, the last ones about 0), and the first
    ones move the landmarks most: with only the first 3 of 80 modes true the identity's landmark error falls
    from 3.45 to 1.96 px (`make diagnose`).
    """
    if weighting == "uniform":
        return None
    if weighting not in IDENTITY_WEIGHTINGS:
        raise ValueError(f"experiments/objectives/warm_start.py: identity weighting must be one of "
                         f"{', '.join(IDENTITY_WEIGHTINGS)}, got {weighting!r}")
    size = model.id_base.pow(2).sum(0)
    return size / size.mean()


class WarmStartObjective:
    """Supervised loss of predicted (B, 257) coefficients against SynthFaces' true ones.

    loss = sum_g w_g mean_{k in g} ((pred_k - true_k) / scale_k)^2 + landmark_weight * L_lmk68
    (with identity_weighting "size", the identity modes' squared errors are weighted by `identity_mode_weights`)
    where L_lmk68 is Deep3D's weighted 68-point loss (image-size units) of the projected predicted face
    against the true projected landmarks.
    """

    name = "warm_start"

    def __init__(self, pipeline, landmark_weight: float, prior: CoefficientPrior = CoefficientPrior(),
                 appearance: float = GROUP_WEIGHTS["tex"], appearance_after: int = 0,
                 identity_weighting: str = "uniform"):
        self.pipeline, self.model, self.landmark_weight = pipeline, pipeline.model, landmark_weight
        self.appearance, self.appearance_after = appearance, appearance_after
        self.scale = coefficient_scales(prior).to(pipeline.model.device)
        self.identity_weights = identity_mode_weights(pipeline.model, identity_weighting)

    def group_weights(self, step: int) -> dict[str, float]:
        """GROUP_WEIGHTS, with tex and gamma raised to `appearance` from step `appearance_after` on."""
        if step < self.appearance_after:
            return GROUP_WEIGHTS
        return {**GROUP_WEIGHTS, "tex": self.appearance, "gamma": self.appearance}

    def __call__(self, batch: dict, step: int = 0) -> tuple[torch.Tensor, dict, dict]:
        coeffs = self.pipeline.regress(batch["image"])  # its own light: the one this stage supervises
        true = batch["coeffs"]
        error = ((coeffs - true) / self.scale) ** 2
        groups = {"angle": C.ANGLE, "trans": C.TRANS, "id": C.ID, "exp": C.EXP, "tex": C.TEX, "gamma": C.GAMMA}
        terms = {f"coeff_{g}": error[:, s].mean() for g, s in groups.items()}
        if self.identity_weights is not None:
            terms["coeff_id"] = (error[:, C.ID] * self.identity_weights).mean()
        size = batch["image"].shape[-1]
        predicted = project_landmarks(self.model, coeffs, size) - 0.5  # renderer pixels -> data's pixel-index units
        terms["landmark"] = landmark_loss(predicted, batch["landmarks68"], size)
        weights = self.group_weights(step)
        total = sum(weights[g] * terms[f"coeff_{g}"] for g in groups) + self.landmark_weight * terms["landmark"]
        with torch.no_grad():
            pose_deg = torch.rad2deg((coeffs[:, C.ANGLE] - true[:, C.ANGLE]).abs()).mean()
            landmark_px = (predicted - batch["landmarks68"]).norm(dim=-1).mean()
        metrics = {k: float(v.detach()) for k, v in terms.items()}
        metrics.update(pose_deg=float(pose_deg), landmark68_px=float(landmark_px))
        return total, metrics, {"coeffs": coeffs, "landmarks68": predicted}
