"""One coarse training step (regressor forward/backward, render, all losses) at 224 px, batch 8.

The perception nets have their trained architecture but untrained weights: speed does not depend on them.
The entry `train_samples_per_s` is what SynthFaces has to keep up with (compare synthfaces_samples_per_s).
"""
from __future__ import annotations

import torch

from benchmarks.timing import entry, median_ms
from coarse.regressor import CoarseRegressor
from data.samples import collate_face_samples
from data.synthfaces import SYNTHFACES_ATTRIBUTES, SynthFaces, SynthFacesConfig
from experiments.config import load_config
from experiments.train import CoarseObjective
from perception.attributes import AttributeNet
from perception.identity import build_identity_net
from perception.parsing import ParsingNet


def run(quick: bool = False) -> list[dict]:
    batch_size, size = 8, 224
    cfg = load_config("experiments/configs/default.yaml")
    data = SynthFaces("train", size=batch_size, config=SynthFacesConfig(image_size=size))
    batch = collate_face_samples([data[i] for i in range(batch_size)])
    regressor = CoarseRegressor(imagenet_weights=False)
    optimiser = torch.optim.Adam(regressor.parameters(), lr=1e-4)
    objective = CoarseObjective(
        cfg, data.model, build_identity_net("dlib").eval(),
        AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=cfg.perception.attributes_train.image_size).eval().requires_grad_(False),
        ParsingNet(image_size=cfg.perception.parsing_train.image_size).eval().requires_grad_(False),
    )

    def step():
        loss, _, _ = objective(regressor(batch["image"]), batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    ms = median_ms(step, repeats=2 if quick else 4)
    config = {"batch": batch_size, "image_size": size, "device": "cpu", "threads": torch.get_num_threads()}
    return [
        entry("train_step_ms", ms, "ms", **config),
        entry("train_samples_per_s", batch_size * 1e3 / ms, "samples/s", **config),
    ]
