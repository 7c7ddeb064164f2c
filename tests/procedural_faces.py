"""Procedural face pictures for the perception-net tests (test_attributes, test_parsing).

A skin-toned ellipse on a random background, roughly aligned like real crops, with the five
landmarks the occluder samplers place glasses, masks and hands by. Each test pastes its own
occluders on top and derives its own labels. Drawing is deterministic given the generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from augment.occluders import composite, sample_background

LIGHT_SKIN = (0.9, 0.72, 0.6)
DARK_SKIN = (0.42, 0.28, 0.18)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Module-scoped autouse fixture for the modules that import it: torch on one thread, since on a
    shared 2-core machine more threads stall on OpenMP oversubscription."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """One draw from U(low, high)."""
    return low + (high - low) * float(torch.rand((), generator=generator))


@dataclass
class ProceduralFace:
    """image: (3, S, S) in [0, 1]; face_alpha: (S, S) face coverage in [0, 1]; landmarks: (5, 2)
    pixels (eyes, nose tip, mouth corners); dark_skin: which of the two skin tones was drawn."""

    image: torch.Tensor
    face_alpha: torch.Tensor
    landmarks: torch.Tensor
    dark_skin: bool


def draw_face(generator: torch.Generator, size: int, eyes: bool = False) -> ProceduralFace:
    """A face ellipse (light or dark skin, 50/50) on a random background; eyes=True adds two
    black pupils at the eye landmarks. Images are size x size pixels."""
    image = sample_background(size, generator)
    cx, cy = size * uniform(generator, 0.45, 0.55), size * uniform(generator, 0.5, 0.56)
    rx = size * uniform(generator, 0.3, 0.36)
    ry = rx * uniform(generator, 1.2, 1.3)
    dark = uniform(generator) < 0.5
    tone = torch.tensor(DARK_SKIN if dark else LIGHT_SKIN) + 0.1 * (torch.rand(3, generator=generator) - 0.5)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    face = ((1 - torch.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)) * rx + 0.5).clamp(0, 1)
    image = composite(image, tone[:, None, None].expand(3, size, size), face[None])
    landmarks = torch.tensor([(cx - 0.38 * rx, cy - 0.15 * ry), (cx + 0.38 * rx, cy - 0.15 * ry), (cx, cy + 0.15 * ry),
                              (cx - 0.3 * rx, cy + 0.45 * ry), (cx + 0.3 * rx, cy + 0.45 * ry)])
    if eyes:
        for x, y in landmarks[:2].tolist():
            image = composite(image, torch.zeros(3, size, size), (torch.hypot(xs - x, ys - y) < 0.07 * rx).float()[None])
    return ProceduralFace(image, face, landmarks, dark)
