"""Timing and memory helpers shared by the benchmark modules."""
from __future__ import annotations

import resource
import statistics
import time
from typing import Callable

import torch


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of `fn()` in milliseconds after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def alternating_median_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """{name: median wall time of fn() in ms}, the functions called in turn for `repeats` rounds (after `warmup`
    untimed rounds), so that every one of them sees the same machine load: for ratios between them."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def entry(name: str, value: float, unit: str, **config) -> dict:
    return {"name": name, "value": round(float(value), 4), "unit": unit, "config": config}


def resnet50_fwd_ms_per_image(batch: int, size: int, repeats: int, device: str = "cpu") -> float:
    """The same-run yardstick: torchvision ResNet-50 inference, eval mode, no grad."""
    import torchvision

    net = torchvision.models.resnet50(weights=None).eval().to(device)
    images = torch.rand(batch, 3, size, size, device=device)
    with torch.no_grad():
        return median_ms(lambda: net(images), repeats, device=device) / batch
