"""SynthFaces generation speed (single process), to compare with the training step rate."""
from __future__ import annotations

import time

import torch

from benchmarks.timing import entry
from data.synthfaces import SynthFaces, SynthFacesConfig


def run(quick: bool = False) -> list[dict]:
    count = 10 if quick else 60
    results = []
    for size in (224, 96):
        data = SynthFaces("train", size=count + 1, config=SynthFacesConfig(image_size=size))
        data[count]  # warm-up: imports, first allocation
        start = time.perf_counter()
        for i in range(count):
            data[i]
        rate = count / (time.perf_counter() - start)
        results.append(entry("synthfaces_samples_per_s", rate, "samples/s", image_size=size, device="cpu",
                             workers=0, threads=torch.get_num_threads(), samples=count))
    return results
