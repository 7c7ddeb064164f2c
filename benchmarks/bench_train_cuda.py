"""Training steps on a CUDA GPU (nothing where none is present): issue #8's GPU target and peak memory.

Two cases, each a whole stage-1 step and a whole stage-2 step (batch statistics, Adam, every loss of the default
objective, self-augmentation with its second pass):
- the embedded default's size: 64 px, batch 8, the 9,025-vertex SynthFace;
- the paper's recipe: 224 px, batch 16, a BFM-sized SynthFace (resolution 189: 35,721 vertices against BFM's
  35,709), so the GCNs' level 0 and the rasterizer see the paper's mesh size.
Entries: coarse_step_ms, fine_step_ms, fine_it_per_s (target at the paper's recipe: >= 10 it/s on an H100),
fine_over_coarse_step, fine_peak_gpu_mib (torch.cuda.max_memory_allocated over the stage-2 steps), and the
ResNet-50 yardstick on the same GPU. Each case runs in fp32 (train.precision "auto" on CUDA) and again with
TF32 matrix products and convolutions allowed, alternately, so the TF32 gain is a same-run ratio.
The perception nets have their trained architecture but untrained weights: speed does not depend on them.
"""
from __future__ import annotations

import contextlib

import torch

from benchmarks.bench_train import adam_step, fine_pipeline
from benchmarks.timing import entry, median_ms, resnet50_fwd_ms_per_image
from coarse.regressor import CoarseRegressor
from coarse.synthface import build_synthface
from data.samples import collate_face_samples
from data.synthfaces import SYNTHFACES_ATTRIBUTES, SynthFaces, SynthFacesConfig
from experiments.config import load_config
from experiments.objectives.coarse import CoarseObjective
from experiments.objectives.fine import FineObjective, step_generator
from experiments.pipeline import FacePipeline
from perception.attributes import AttributeNet
from perception.identity import build_identity_net
from perception.parsing import ParsingNet

BFM_SIZED_RESOLUTION = 189  # 189 x 189 grid vertices: 35,721, BFM has 35,709
CASES = (("default", 64, 8, None), ("paper", 224, 16, BFM_SIZED_RESOLUTION))


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 for CUDA matrix products and cuDNN convolutions on or off inside the block."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def training_steps(cfg, size: int, batch_size: int, resolution: int | None, device: torch.device):
    """{"coarse": step, "fine": step} (each a callable running one whole training step with Adam) and the mesh's
    vertex count, for `batch_size` SynthFaces at `size` px on a SynthFace of `resolution` (None: the default)."""
    model = build_synthface() if resolution is None else build_synthface(resolution=resolution)
    data = SynthFaces("train", size=batch_size, config=SynthFacesConfig(image_size=size), model=model)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
             for k, v in collate_face_samples([data[i] for i in range(batch_size)]).items()}
    torch.manual_seed(0)
    nets = (build_identity_net("dlib", device=device).eval(),
            AttributeNet(SYNTHFACES_ATTRIBUTES, image_size=size).to(device).eval().requires_grad_(False),
            ParsingNet(image_size=size).to(device).eval().requires_grad_(False))
    model = model.to(device)
    coarse = FacePipeline(model, CoarseRegressor(imagenet_weights=False), size, light=cfg.coarse.light).to(device)
    fine = fine_pipeline(cfg, model, size, nets, device=device)
    steps = {"coarse": adam_step(CoarseObjective(coarse, cfg.losses, *nets), coarse.parameters(), batch),
             "fine": adam_step(FineObjective(fine, cfg.losses, cfg.augment, cfg.fine.correction_weight, *nets, size),
                           fine.parameters(), batch, step_generator(0, 1))}
    return steps, int(model.mean_shape.shape[0])


def _case(cfg, name: str, size: int, batch_size: int, resolution: int | None, repeats: int,
          device: torch.device = torch.device("cuda")) -> list[dict]:
    """One case's entries. device: "cuda" (the CPU only to smoke-test this code where no GPU is present)."""
    cuda = device.type == "cuda"
    steps, vertices = training_steps(cfg, size, batch_size, resolution, device)
    times = {(stage, t): [] for stage in steps for t in (False, True)}
    peak = {}
    for round_ in range(repeats):  # alternated, so fp32 and TF32 see the same machine load
        for (stage, allow), found in times.items():
            with tf32(allow):
                if cuda and stage == "fine" and not round_:
                    torch.cuda.reset_peak_memory_stats()
                found.append(median_ms(steps[stage], 1, warmup=0 if round_ else 2, device=device.type))
                if cuda and stage == "fine" and not round_:
                    peak[allow] = torch.cuda.max_memory_allocated() / 2**20
    ms = {key: sorted(t)[len(t) // 2] for key, t in times.items()}
    common = {"device": device.type, "gpu": torch.cuda.get_device_name() if cuda else "none", "case": name, "image_size": size,
              "batch": batch_size, "vertices": vertices, "repeats": repeats, "statistic": "median"}
    out = [entry("resnet50_fwd_ms_per_image_cuda", resnet50_fwd_ms_per_image(batch_size, 224, repeats, device.type), "ms",
                 **{**common, "image_size": 224})]
    for allow in (False, True):
        precision = {**common, "precision": "tf32" if allow else "fp32"}
        out += [entry("coarse_step_ms_cuda", ms["coarse", allow], "ms", **precision),
                entry("fine_step_ms_cuda", ms["fine", allow], "ms", **precision),
                entry("fine_it_per_s_cuda", 1e3 / ms["fine", allow], "it/s", **precision,
                      **({"target": ">= 10 on an H100"} if name == "paper" else {})),
                entry("fine_over_coarse_step_cuda", ms["fine", allow] / ms["coarse", allow], "ratio", **precision),
                *([entry("fine_peak_gpu_mib_cuda", peak[allow], "MiB", **precision, how="torch.cuda.max_memory_allocated")]
                  if cuda else [])]
    out.append(entry("fine_fp32_over_tf32_cuda", ms["fine", False] / ms["fine", True], "ratio", **common))
    return out


def run(quick: bool = False) -> list[dict]:
    if not torch.cuda.is_available():
        print("  no CUDA GPU here: nothing to measure")
        return []
    cfg = load_config("experiments/configs/default.yaml")
    results = []
    for name, size, batch_size, resolution in CASES:
        results += _case(cfg, name, size, batch_size, resolution, 3 if quick else 7)
    return results
