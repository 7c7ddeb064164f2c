"""Render the morphable model's mean face and a few random faces to PNGs.

    python -m experiments.render_demo -o out/render_demo [--bfm BFM_model_front.mat] [--count 8]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from coarse import coefficients as C
from coarse.bfm import BFMFormatError
from coarse.face_model import assemble_face
from coarse.load_model import load_morphable_model
from coarse.priors import CoefficientPrior, neutral_coefficients
from render.image_io import contact_sheet, save_png
from render.rasterizer import render_mesh


def render_coefficients(model, coeffs: torch.Tensor, image_size: int, background: float = 0.5) -> torch.Tensor:
    """(B, 257) -> (B, 3, H, W) shaded renders over a grey background."""
    face = assemble_face(model, coeffs, image_size)
    bg = torch.full((coeffs.shape[0], 3, image_size, image_size), background)
    return render_mesh(face.screen, model.triangles, face.colors, image_size, background=bg).image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", default="out/render_demo", help="output folder")
    parser.add_argument("--bfm", default=None, help="BFM_model_front.mat (default: the embedded SynthFace model)")
    parser.add_argument("--count", type=int, default=8, help="number of random faces")
    parser.add_argument("--size", type=int, default=224, help="image size in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        model = load_morphable_model(args.bfm)
    except BFMFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    with torch.no_grad():
        mean = neutral_coefficients(3)
        mean[1, C.ANGLE.start + 1] = math.radians(-45)
        mean[2, C.ANGLE.start + 1] = math.radians(45)
        mean_renders = render_coefficients(model, mean, args.size)
        randoms = render_coefficients(model, CoefficientPrior().sample(args.count, torch.Generator().manual_seed(args.seed)), args.size)
    names = ["mean_front", "mean_yaw-45", "mean_yaw+45"] + [f"random_{i:02d}" for i in range(args.count)]
    images = list(mean_renders) + list(randoms)
    for name, image in zip(names, images):
        save_png(image, out / f"{name}.png")
    save_png(contact_sheet(images, columns=min(len(images), 6), labels=names), out / "contact_sheet.png")
    print(f"wrote {len(images)} renders of {model.name} ({model.num_vertices} vertices) and contact_sheet.png to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
