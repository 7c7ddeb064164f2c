"""Training-step costs of every stage, next to the same-run ResNet-50 yardstick.

coarse_step_ms: one self-supervised coarse step (regressor forward/backward, render, dlib identity, attribute
and parsing nets, all losses, Adam) at the default training size and at 224 px (batch 8).
warm_start_step_ms: one supervised warm-start step at the default size.
fine_step_ms: one stage-2 step (regressor + both GCNs + render + perception losses + self-augmentation with its
second pass through the whole network) at the default size, batch 8, with a breakdown; the target is
fine_step_ms <= 4 x coarse_step_ms at the same size and batch.
train_samples_per_s: samples a coarse step consumes per second at the default size.
parsing_train_step_ms, attribute_train_step_ms: one training step of each perception net at its configured
size and batch (on a 2-core CPU without bfloat16, about a quarter of `make train`), in the channels-last layout the nets use and
in NCHW beside it (`*_nchw_over_channels_last`), so the layout choice is a same-run ratio.
Everything runs at the default config's training precision (train.precision: bf16 where this CPU computes it
natively); the warm-start step is also timed in fp32 beside it, and under bf16 the coarse and fine steps again with
the identity and attribute nets in fp32 (`loss_nets`), so the speed-ups are same-run ratios. The fine step is also
timed with narrower GCNs (NARROW_GCNS, entries marked `gcn_channels`; see README, "The GCNs' width").
The perception nets have their trained architecture but untrained weights: speed does not depend on them.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from benchmarks.timing import alternating_median_ms, entry, median_ms, resnet50_fwd_ms_per_image
from coarse.regressor import CoarseRegressor, resolve_precision
from data.samples import collate_face_samples
from data.synthfaces import SYNTHFACES_ATTRIBUTES, SynthFaces, SynthFacesConfig
from experiments.config import load_config
from experiments.objectives.coarse import CoarseObjective
from experiments.objectives.fine import FineObjective, step_generator
from experiments.objectives.warm_start import WarmStartObjective
from experiments.pipeline import FacePipeline, build_fine_parts, reading_options, skin_reader, solve_light
from losses import feature_targets, skin_mask
from perception.attributes import AttributeNet
from perception.identity import build_identity_net
from perception.parsing import ParsingNet


def adam_step(objective, parameters, batch, generator=None):
    """A callable running one training step of `objective` (Adam) on `batch`, drawing from `generator` if given."""
    optimiser = torch.optim.Adam(parameters, lr=1e-5)

    def run():
        loss, _, _ = objective(batch) if generator is None else objective(batch, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return run


def run(quick: bool = False) -> list[dict]:
    cfg = load_config("experiments/configs/default.yaml")
    batch_size, repeats = 8, 2 if quick else 3
    threads = torch.get_num_threads()
    nets = (build_identity_net("dlib").eval(),
            AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=cfg.perception.attributes_train.image_size).eval().requires_grad_(False),
            ParsingNet(image_size=cfg.perception.parsing_train.image_size).eval().requires_grad_(False))
    results = []
    precision = resolve_precision(cfg.train.precision)
    for net in nets:  # as experiments.train sets them
        net.precision = precision
    yardstick = resnet50_fwd_ms_per_image(batch_size, 224, repeats)
    common = {"batch": batch_size, "device": "cpu", "threads": threads, "precision": precision}
    results.append(entry("resnet50_fwd_ms_per_image", yardstick, "ms", image_size=224, **common))
    for size in sorted({cfg.data.image_size, 224}):
        data = SynthFaces("train", size=batch_size, config=SynthFacesConfig(image_size=size))
        batch = collate_face_samples([data[i] for i in range(batch_size)])
        pipeline = FacePipeline(data.model, CoarseRegressor(imagenet_weights=False, precision=precision), size,
                                light=cfg.coarse.light)
        coarse_step = adam_step(CoarseObjective(pipeline, cfg.losses, *nets), pipeline.parameters(), batch)
        if size != cfg.data.image_size:
            ms = median_ms(coarse_step, repeats)
            results.append(entry("coarse_step_ms", ms, "ms", image_size=size, **common))
            results.append(entry("coarse_step_over_resnet50_fwd", ms / batch_size / yardstick, "ratio", image_size=size,
                                 **common))
            continue
        warm = WarmStartObjective(pipeline, cfg.coarse.warm_start.landmark)
        warm_ms = {}
        for each in dict.fromkeys(("fp32", precision)):
            pipeline.regressor.precision = each
            warm_ms[each] = median_ms(adam_step(warm, pipeline.parameters(), batch), repeats)
            results.append(entry("warm_start_step_ms", warm_ms[each], "ms", image_size=size, **{**common, "precision": each}))
        pipeline.regressor.precision = precision
        if precision != "fp32":
            results.append(entry("warm_start_fp32_over_bf16", warm_ms["fp32"] / warm_ms[precision], "ratio",
                                 image_size=size, **common))
        results += step_comparison_entries(cfg, data, batch, nets, coarse_step, yardstick, repeats, common)
    results += perception_train_entries(cfg, repeats, common)
    return results


def perception_train_entries(cfg, repeats: int, common: dict) -> list[dict]:
    """The parsing and attribute nets' training steps (Adam, random data: speed does not depend on it), in their
    channels-last layout and in NCHW, alternately."""
    out = []
    builders = {"parsing": (cfg.perception.parsing_train, lambda size: ParsingNet(image_size=size)),
                "attribute": (cfg.perception.attributes_train,
                              lambda size: AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=size))}
    for name, (train, build) in builders.items():
        images = torch.rand(train.batch_size, 3, train.image_size, train.image_size)
        steps = {}
        for layout in ("channels_last", "nchw"):
            net = build(train.image_size).train()
            if layout == "nchw":
                net.to(memory_format=torch.contiguous_format)
            steps[layout] = adam_step(lambda batch, net=net: (net(batch["image"]).float().square().mean(), None, None),
                                  net.parameters(), {"image": images})
        ms = alternating_median_ms(steps, repeats)  # alternated, so both layouts see the same machine load
        config = {**common, "batch": train.batch_size, "image_size": train.image_size, "precision": "fp32"}
        out.append(entry(f"{name}_train_step_ms", ms["channels_last"], "ms", **config))
        out.append(entry(f"{name}_train_nchw_over_channels_last", ms["nchw"] / ms["channels_last"], "ratio", **config))
    return out


# Narrower GCNs (fine.channels) than the default's, timed beside it: README, "The GCNs' width".
NARROW_GCNS = (8, 16, 32, 64)


def fine_pipeline(cfg, model, size: int, nets, precision: str = "fp32", device: torch.device | str = "cpu") -> FacePipeline:
    """A stage-2 pipeline as `make train` builds it (untrained weights) around the given perception nets, on device."""
    pipeline = FacePipeline(model, CoarseRegressor(imagenet_weights=False, precision=precision), size,
                            **reading_options(cfg))
    pipeline.fine, pipeline.identity_net, pipeline.attribute_net = build_fine_parts(cfg, model, device, nets=nets[:2])
    pipeline.parsing_net = skin_reader(cfg, device, net=nets[2])
    return pipeline.to(device)


def fine_step(cfg, data, batch, nets, precision: str):
    """(pipeline, objective, generator, step): one stage-2 Adam step as `make train` runs it, on untrained weights."""
    size = batch["image"].shape[-1]
    pipeline = fine_pipeline(cfg, data.model, size, nets, precision)
    objective = FineObjective(pipeline, cfg.losses, cfg.augment, cfg.fine.correction_weight, *nets, size)
    generator = step_generator(0, 1)
    return pipeline, objective, generator, adam_step(objective, pipeline.parameters(), batch, generator)


def with_loss_nets(nets, precision: str, step):
    """`step`, run with the identity and attribute nets (nets[0], nets[1]) at `precision`, then set back."""
    def run():
        before = nets[0].precision, nets[1].precision
        nets[0].precision = nets[1].precision = precision
        try:
            return step()
        finally:
            nets[0].precision, nets[1].precision = before
    return run


def step_comparison_entries(cfg, data, batch, nets, coarse_step, yardstick: float, repeats: int,
                            common: dict) -> list[dict]:
    """At the default size: the stage-1 and stage-2 steps, the stage-2 step with narrower GCNs (NARROW_GCNS) and,
    under bf16, both steps with the identity and attribute nets in fp32, timed in alternating rounds so that their
    ratios are same-load ratios; then the stage-2 step's breakdown."""
    size, batch_size, precision = batch["image"].shape[-1], batch["image"].shape[0], common["precision"]
    pipeline, objective, generator, step = fine_step(cfg, data, batch, nets, precision)
    narrow = dataclasses.replace(cfg, fine=dataclasses.replace(cfg.fine, channels=NARROW_GCNS))
    steps = {"coarse": coarse_step, "fine": step, "fine_narrow": fine_step(narrow, data, batch, nets, precision)[3]}
    if precision != "fp32":
        steps.update(coarse_loss_nets_fp32=with_loss_nets(nets, "fp32", coarse_step),
                     fine_loss_nets_fp32=with_loss_nets(nets, "fp32", step))
    ms = alternating_median_ms(steps, repeats + 2)
    narrow_gcns = {**common, "gcn_channels": ",".join(map(str, NARROW_GCNS))}
    out = [entry("coarse_step_ms", ms["coarse"], "ms", image_size=size, **common),
           entry("coarse_step_over_resnet50_fwd", ms["coarse"] / batch_size / yardstick, "ratio", image_size=size,
                 **common),
           entry("train_samples_per_s", batch_size * 1e3 / ms["coarse"], "samples/s", image_size=size, **common),
           entry("fine_step_ms", ms["fine"], "ms", image_size=size, **common),
           entry("fine_over_coarse_step", ms["fine"] / ms["coarse"], "ratio", image_size=size, target="<= 4", **common),
           entry("fine_step_ms", ms["fine_narrow"], "ms", image_size=size, **narrow_gcns),
           entry("fine_over_coarse_step", ms["fine_narrow"] / ms["coarse"], "ratio", image_size=size, target="<= 4",
                 **narrow_gcns)]
    if precision != "fp32":
        fp32 = {**common, "loss_nets": "fp32"}
        out += [entry("coarse_step_ms", ms["coarse_loss_nets_fp32"], "ms", image_size=size, **fp32),
                entry("fine_step_ms", ms["fine_loss_nets_fp32"], "ms", image_size=size, **fp32),
                entry("coarse_step_loss_nets_fp32_over_bf16", ms["coarse_loss_nets_fp32"] / ms["coarse"], "ratio",
                      image_size=size, **common),
                entry("fine_step_loss_nets_fp32_over_bf16", ms["fine_loss_nets_fp32"] / ms["fine"], "ratio",
                      image_size=size, **common)]
    return out + fine_part_entries(pipeline, objective, generator, data, batch, nets, repeats, common)


def fine_part_entries(pipeline, objective, generator, data, batch, nets, repeats: int, common: dict) -> list[dict]:
    """The stage-2 step's breakdown: forward-only timings of its parts on the same batch, and the GCNs' forward
    and backward over a whole step's faces."""
    image = batch["image"]
    size = image.shape[-1]

    def timed(fn):
        with torch.no_grad():
            return median_ms(fn, repeats)

    coeffs = pipeline.regressor(image).detach()
    albedo = pipeline.predict(image, stage="coarse").coarse_albedo
    with torch.no_grad():  # the perception nets' share is timed on its own below
        skin, targets = skin_mask(nets[2], image), feature_targets(*nets[:2], image)
    parts = {
        "regressor_fwd": lambda: pipeline.regressor(image),
        "light_solve_fwd": lambda: solve_light(data.model, image, coeffs, size, skin),
        "gcns_fwd": lambda: pipeline.refine(image, coeffs, albedo, skin=skin, targets=targets),
        "render_fwd": lambda: pipeline.render(coeffs, albedo, size),
        "perception_fwd": lambda: (nets[0](image), nets[1].features(image), nets[2].predict_mask(image)),
        "self_augmentation_fwd": lambda: objective.augmentation(objective.reconstruct, image, coeffs, albedo, generator),
    }
    out = [entry(f"fine_part_{name}_ms", timed(fn), "ms", image_size=size, **common) for name, fn in parts.items()]
    # The GCNs' whole share of a step: forward and backward over the first pass's B faces and the second pass's 2B.
    thrice = [t.detach().repeat(3, *[1] * (t.dim() - 1)) for t in (image, coeffs, albedo, skin, *targets)]

    def gcns_fwd_bwd():
        output, _ = pipeline.refine(*thrice[:3], skin=thrice[3], targets=type(targets)(*thrice[4:]))
        output.albedo.square().mean().backward()

    out.append(entry("fine_part_gcns_fwd_bwd_ms", median_ms(gcns_fwd_bwd, repeats), "ms", image_size=size,
                     **{**common, "batch": 3 * common["batch"]}))
    return out


if __name__ == "__main__":
    start = time.time()
    for r in run(quick=True):
        print(r)
    print(f"{time.time() - start:.0f} s")
