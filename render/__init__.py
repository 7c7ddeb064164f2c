"""Camera, differentiable rasterizer, SH shading and image formation (imports nothing of ours)."""
from render.camera import PerspectiveCamera
from render.rasterizer import Fragments, RenderOutput, composite, interpolate, rasterize, render_mesh
from render.shading import fit_sh_light, sh_basis, sh_shading
from render.texture_sampling import sample_at_pixels, visible_vertices
from render.uv_bake import UVBaker, bake_texture, sample_texture

__all__ = [
    "PerspectiveCamera", "Fragments", "RenderOutput", "composite", "interpolate", "rasterize",
    "render_mesh", "fit_sh_light", "sh_basis", "sh_shading", "sample_at_pixels", "visible_vertices", "UVBaker", "bake_texture",
    "sample_texture",
]
