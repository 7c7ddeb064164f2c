"""`experiments.reconstruct` per photo (model loaded) and per `--fit` step, with ResNet-50 as yardstick.

reconstruct_ms_per_image: one 512 x 512 photo (skimage's astronaut) through detection, alignment, the
coarse (and, when the pipeline has one, fine) stage, the overlay render and paste-back, the 512 px texture
bake and every export file written to disk; no --fit. The pipeline is checkpoints/default/last.pt when it
exists, else an untrained one of the same architecture (speed does not depend on the weights); the entry's
config says which and which stages ran. The yardstick is one ResNet-50 forward at 224 px, batch 1 (a
photo is reconstructed alone), measured in the same run. Target: <= 3x, i.e. detection, the GCNs, the
renderer and the exporters together cost less than two more backbones.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import skimage.data
import torch
from PIL import Image

from benchmarks.timing import entry, median_ms, resnet50_fwd_ms_per_image
from experiments.reconstruct import DEFAULT_CHECKPOINT, Reconstructor

IMAGE_SIZE = 224


def benchmark_pipeline(device: str = "cpu"):
    """(FacePipeline, description): the trained default checkpoint, else an untrained coarse + fine pipeline,
    else (fine stage not buildable) an untrained coarse one."""
    from coarse.regressor import CoarseRegressor
    from coarse.synthface import build_synthface
    from experiments.config import load_config
    from experiments.pipeline import FacePipeline, build_fine_parts

    if Path(DEFAULT_CHECKPOINT).is_file():
        return FacePipeline.from_checkpoint(DEFAULT_CHECKPOINT, device=device), DEFAULT_CHECKPOINT
    model = build_synthface().to(device)
    try:
        # The attribute net's checkpoint may be missing; its ResNet-18 at 112 px is a small share.
        cfg = load_config(None, {"fine": {"use_attributes": False}})
        fine, identity_net, _ = build_fine_parts(cfg, model, device)
        pipeline = FacePipeline(model, CoarseRegressor(imagenet_weights=False), IMAGE_SIZE, fine, identity_net, None,
                                use_attributes=False, stage="untrained")
        return pipeline.to(device).eval(), "untrained (no checkpoint), fine without attribute features"
    except Exception as error:  # noqa: BLE001 - the fine stage is optional for this measurement
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:80]
        return FacePipeline.mean_face(model, IMAGE_SIZE).to(device), f"untrained coarse only (fine: {reason})"


def run(quick: bool = False) -> list[dict]:
    from experiments.fit import fit_to_photo
    from perception.detect import FaceDetector
    from perception.identity import build_identity_net

    device = "cpu"
    repeats = 2 if quick else 5
    pipeline, description = benchmark_pipeline(device)
    reconstructor = Reconstructor(pipeline, FaceDetector(device=device), texture_size=512)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "astronaut.jpg"
        Image.fromarray(skimage.data.astronaut()).save(photo, quality=95)
        out = Path(folder) / "out"
        summary = {}

        def reconstruct_once():
            summary.update(reconstructor.reconstruct(photo, out, "astronaut"))

        ms = median_ms(reconstruct_once, repeats)
        resnet = resnet50_fwd_ms_per_image(1, IMAGE_SIZE, repeats, device)
        config = {"photo": "astronaut 512x512", "texture_size": 512, "stages": "+".join(pipeline.stages),
                  "pipeline": description, "flip_average": bool(getattr(pipeline, "flip_average", False)),
                  "device": device, "threads": torch.get_num_threads()}
        phases = ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in summary["timings_ms"].items())
        results += [
            entry("reconstruct_ms_per_image", ms, "ms", **config, last_run_phases_ms=phases),
            entry("resnet50_fwd_ms_per_image", resnet, "ms", batch=1, image_size=IMAGE_SIZE, device=device,
                  threads=torch.get_num_threads()),
            entry("reconstruct_over_resnet50", ms / resnet, "ratio", **config, target="<= 3"),
        ]

        crop = torch.rand(3, IMAGE_SIZE, IMAGE_SIZE)
        identity_net = build_identity_net("dlib", device=device).eval()
        steps = 3 if quick else 8
        fit_to_photo(pipeline, crop, None, 1, identity_net=identity_net)  # warm-up
        report = fit_to_photo(pipeline, crop, torch.rand(68, 2) * IMAGE_SIZE, steps, identity_net=identity_net)[2]
        results.append(entry("fit_ms_per_step", report.ms_per_step, "ms", image_size=IMAGE_SIZE, steps=steps,
                             vertices=pipeline.model.num_vertices, losses="photo+id+landmark68+reg+offset",
                             device=device, threads=torch.get_num_threads()))
    return results
