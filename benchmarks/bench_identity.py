"""Latency of the dlib identity network (IdentityNet, 224 aligned input) against a ResNet-50 yardstick.

    python -m benchmarks.bench_identity [--quick]       (or: python -m benchmarks.run --only identity)

Per image, median over rounds after warm-up. Each round times IdentityNet forward (no_grad), IdentityNet
forward + backward to the input (frozen weights, as in the identity loss) and torchvision's ResNet-50
(weights=None, eval, no_grad) on the same batch back to back, so the ratios see the same machine load even
when other processes share the CPU.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from benchmarks.timing import entry, median_ms


def _measure(device: str, batch: int, warmup: int, rounds: int) -> dict[str, float]:
    import torchvision

    from perception.identity import build_identity_net

    images = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    idnet = build_identity_net("dlib", device=device)
    resnet50 = torchvision.models.resnet50(weights=None).eval().to(device)

    def idnet_forward() -> None:
        with torch.no_grad():
            idnet(images)

    def idnet_forward_backward() -> None:
        inputs = images.clone().requires_grad_(True)
        idnet(inputs).sum().backward()

    def resnet50_forward() -> None:
        with torch.no_grad():
            resnet50(images)

    steps = {"fwd": idnet_forward, "fwd_bwd": idnet_forward_backward, "resnet50": resnet50_forward}
    for step in steps.values():
        for _ in range(warmup):
            step()
    per_round = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            per_round[name].append(median_ms(step, repeats=1, warmup=0, device=device) / batch)
    medians = {name: statistics.median(times) for name, times in per_round.items()}
    for name in ("fwd", "fwd_bwd"):
        medians[f"{name}_ratio"] = statistics.median(
            mine / yardstick for mine, yardstick in zip(per_round[name], per_round["resnet50"]))
    return medians


def run(quick: bool = False) -> list[dict]:
    """Entries for idnet_dlib_fwd_ms_per_image, idnet_dlib_fwd_bwd_ms_per_image, resnet50_fwd_ms_per_image
    and their ratios, on the CPU (and CUDA when available). quick: batch 4, 1 warm-up, 2 rounds."""
    batch, warmup, rounds = (4, 1, 2) if quick else (16, 2, 5)
    results = []
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        measured = _measure(device, batch, warmup, rounds)
        config = {"batch": batch, "image_size": 224, "device": device, "threads": torch.get_num_threads(),
                  "rounds": rounds, "statistic": "median"}
        results += [
            entry("idnet_dlib_fwd_ms_per_image", measured["fwd"], "ms", **config),
            entry("idnet_dlib_fwd_bwd_ms_per_image", measured["fwd_bwd"], "ms", **config),
            entry("resnet50_fwd_ms_per_image", measured["resnet50"], "ms", **config),
            entry("idnet_dlib_fwd_over_resnet50_fwd", measured["fwd_ratio"], "ratio", **config),
            entry("idnet_dlib_fwd_bwd_over_resnet50_fwd", measured["fwd_bwd_ratio"], "ratio", **config),
        ]
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 4, fewer rounds")
    for result in run(quick=parser.parse_args().quick):
        print(json.dumps(result))
