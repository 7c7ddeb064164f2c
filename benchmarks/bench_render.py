"""Rasterizer speed and memory on a BFM-sized face-shaped surface, with ResNet-50 as yardstick."""
from __future__ import annotations

import math

import torch

from benchmarks.timing import entry, median_ms, peak_rss_mib, resnet50_fwd_ms_per_image
from coarse.face_model import camera_for
from render.rasterizer import render_mesh

BFM_VERTICES = 35_709


def bfm_sized_face_surface(num_vertices: int = BFM_VERTICES) -> tuple[torch.Tensor, torch.Tensor]:
    """A face-shaped height field (ellipsoidal cap with a nose bump) with exactly `num_vertices`.

    Returns vertices (N, 3) in model units (about 1.7 wide, centred) and triangles (F, 3).
    """
    side = math.ceil(math.sqrt(num_vertices))
    ys, xs = torch.meshgrid(torch.linspace(-1.1, 1.1, side), torch.linspace(-0.85, 0.85, side), indexing="ij")
    r2 = (xs / 0.95) ** 2 + (ys / 1.25) ** 2
    z = 0.7 * torch.sqrt((1 - r2).clamp(min=0)) + 0.25 * torch.exp(-(xs**2 + (ys + 0.05) ** 2) / 0.02)
    verts = torch.stack([xs, ys, z], -1).reshape(-1, 3)
    idx = torch.arange(side * side).reshape(side, side)
    a, b, c, d = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1), idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    tris = torch.cat([torch.stack([a, b, c], 1), torch.stack([b, d, c], 1)])  # counter-clockwise from +z
    tris = tris[(tris < num_vertices).all(1)]  # drop the few surplus corner vertices
    verts = verts[:num_vertices]
    return verts - verts.mean(0), tris


def _raster_case(batch: int, size: int, device: str):
    verts, tris = bfm_sized_face_surface()
    screen = camera_for(size).project(verts.to(device)).unsqueeze(0).repeat(batch, 1, 1)
    colours = torch.rand(batch, verts.shape[0], 3, device=device)
    tris = tris.to(device)

    def step():
        s = screen.clone().requires_grad_()
        c = colours.clone().requires_grad_()
        out = render_mesh(s, tris, c, size)
        out.image.sum().backward()
        return out

    return step, tris.shape[0]


def run(quick: bool = False) -> list[dict]:
    batch, size = 8, 224
    repeats = 2 if quick else 5
    results = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        step, n_faces = _raster_case(batch, size, device)
        config = {"batch": batch, "image_size": size, "vertices": BFM_VERTICES, "triangles": n_faces,
                  "device": device, "threads": torch.get_num_threads()}
        rss_before = peak_rss_mib()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        raster = median_ms(step, repeats, device=device) / batch
        if device == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**20
            mem_name, mem_note = "raster_peak_gpu_mib", "torch.cuda.max_memory_allocated"
        else:
            peak = peak_rss_mib() - rss_before
            mem_name, mem_note = "raster_peak_rss_increase_mib", "process peak RSS increase (run first)"
        resnet = resnet50_fwd_ms_per_image(batch, size, repeats, device)
        suffix = "" if device == "cpu" else "_cuda"
        results += [
            entry("raster_fwd_bwd_ms_per_image" + suffix, raster, "ms", **config),
            entry("resnet50_fwd_ms_per_image" + suffix, resnet, "ms", **config),
            entry("raster_over_resnet50" + suffix, raster / resnet, "ratio", **config, target="<= 0.5 on CPU"),
            entry(mem_name, peak, "MiB", **config, how=mem_note),
        ]
    return results
