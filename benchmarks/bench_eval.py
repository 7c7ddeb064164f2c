"""The whole evaluation per image (experiments.evaluate.evaluate_pipeline), next to a same-run ResNet-50 yardstick.

    python -m benchmarks.bench_eval [--quick]        (or: python -m benchmarks.run --only eval)

One "image" is one SynthFaces test sample at 224 px, evaluated as `make eval-synth` does it: the sample is
rendered (SynthFaces), then both protocols (clean, occluded) run the trained and the mean-face pipelines,
render every method, score PSNR/SSIM (face and crop), dlib ID cosine, albedo, landmark and pose errors, and
the ID-consistency embeddings. The model is loaded before timing: checkpoints/default/last.pt when it exists,
otherwise an untrained coarse pipeline on SynthFace (same compute as a coarse checkpoint). Rounds alternate
the evaluation and torchvision's ResNet-50 forward (batch 8, no grad) so both see the same machine load.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.timing import entry, resnet50_fwd_ms_per_image

CHECKPOINT = Path("checkpoints/default/last.pt")


def _pipeline():
    from experiments.pipeline import FacePipeline

    if CHECKPOINT.is_file():
        return FacePipeline.from_checkpoint(CHECKPOINT), str(CHECKPOINT)
    from coarse.regressor import CoarseRegressor
    from coarse.synthface import build_synthface

    return FacePipeline(build_synthface(), CoarseRegressor(imagenet_weights=False), 224).eval(), "untrained coarse"


def run(quick: bool = False) -> list[dict]:
    """eval_ms_per_image, resnet50_fwd_ms_per_image and their ratio (CPU). quick: 2 images, 1 round."""
    from experiments.evaluate import evaluate_pipeline, synthfaces_test_set
    from perception.identity import build_identity_net

    images, rounds = (2, 1) if quick else (8, 3)
    pipeline, source = _pipeline()
    dataset = synthfaces_test_set(pipeline.model, size=images, image_size=224)
    nets = {"dlib": build_identity_net("dlib").eval()}
    evaluate_pipeline(pipeline, dataset, identity_nets=nets, limit=1, progress=False)  # warm-up
    evaluation, yardstick = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        evaluate_pipeline(pipeline, dataset, identity_nets=nets, batch_size=8, progress=False)
        evaluation.append((time.perf_counter() - started) * 1e3 / images)
        yardstick.append(resnet50_fwd_ms_per_image(batch=8, size=224, repeats=2 if quick else 3))
    config = {"images": images, "image_size": 224, "device": "cpu", "threads": torch.get_num_threads(),
              "rounds": rounds, "statistic": "median", "pipeline": source,
              "methods": "mean_face,coarse" + (",fine" if pipeline.has_fine else ""), "protocols": "clean,occluded"}
    eval_ms, resnet_ms = statistics.median(evaluation), statistics.median(yardstick)
    return [
        entry("eval_ms_per_image", eval_ms, "ms", **config),
        entry("resnet50_fwd_ms_per_image", resnet_ms, "ms", **config),
        entry("eval_over_resnet50_fwd", statistics.median(e / r for e, r in zip(evaluation, yardstick)), "ratio", **config),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 images, 1 round")
    for result in run(quick=parser.parse_args().quick):
        print(json.dumps(result))
