"""Camera, differentiable rasterizer, SH shading and image formation (imports nothing of ours)."""
from render.camera import PerspectiveCamera
from render.rasterizer import Fragments, RenderOutput, composite, interpolate, rasterize, render_mesh
from render.shading import sh_basis, sh_shading

__all__ = [
    "PerspectiveCamera", "Fragments", "RenderOutput", "composite", "interpolate", "rasterize",
    "render_mesh", "sh_basis", "sh_shading",
]
