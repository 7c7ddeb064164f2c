"""Writing a reconstructed face as files 3D tools open: textured OBJ, binary glTF and coloured PLY.

For a stem S, `export_face_meshes` writes into one folder:
    S.obj + S.mtl + S_texture.png   mesh with UVs; the material's map_Kd is the albedo texture (unlit
                                    albedo, no shading baked in), so Blender and Unity show it
    S.glb                           the same mesh and texture as binary glTF 2.0 (browsers, three.js)
    S.ply                           the model's own vertices with per-vertex albedo colours (RGBA uint8)

Frame: model space, not posed. +y is up, +x is the subject's left, +z points out of the face (the face
looks down +z, glTF's convention for an asset's front), in metres (one model unit is about 10 cm for BFM
and SynthFace alike: BFM's micrometres divided by 1e5, as Deep3D does). The origin is the model's mean
vertex. Blender's glTF and OBJ importers (default: +y up, -z forward) turn it into Blender's +z-up world
with the face looking toward -y, i.e. at Blender's front view; Unity takes +z as an asset's forward too.

Vertex counts: .obj and .glb carry the UV layout's vertices (`coarse.uv_layout.UVLayout`): the model's
own N for a model with UVs (SynthFace), more for an xatlas layout, where each seam vertex is repeated
once per chart (trimesh, like glTF, stores one UV per vertex). .ply always has the model's N.

Every file is built in memory first, then written to a temporary folder inside the destination and
moved into place with os.replace: an exception leaves no partial file behind.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

from coarse.face_model import compute_normals
from coarse.morphable_model import build_point_buf
from coarse.uv_layout import UVLayout
from render.image_io import to_uint8
from render.uv_bake import UVBaker

METRES_PER_MODEL_UNIT = 0.1
OBJ_DIGITS = 6  # decimals in the OBJ text: 1 micrometre for positions, 1e-6 of the texture for UVs
# zlib effort of the texture PNG, which trimesh encodes twice (the OBJ's file and the GLB's buffer): Pillow's
# default 6 took about 50 ms a 512-px texture, a quarter of a photo's reconstruction; 1 is faster and the files larger
TEXTURE_PNG_LEVEL = 1
EXPORT_SUFFIXES = (".obj", ".mtl", "_texture.png", ".glb", ".ply")


def export_file_names(stem: str) -> dict[str, str]:
    """{"obj", "mtl", "texture", "glb", "ply"} -> file name for a stem."""
    return dict(zip(("obj", "mtl", "texture", "glb", "ply"), (stem + suffix for suffix in EXPORT_SUFFIXES)))


def write_file(path: Path, data: bytes) -> None:
    """Write bytes to a new file. Not fsynced: the outputs can be recomputed, and what keeps readers from
    ever seeing a partial file is the rename that follows, not durability."""
    with open(path, "wb") as handle:
        handle.write(data)


def write_files_atomically(out_dir: str | os.PathLike, files: dict[str, bytes]) -> dict[str, Path]:
    """Write {file name: bytes} into out_dir: all into a temporary folder there, then os.replace each.

    Returns {file name: final path}. On an exception no temporary file is left, and no destination file
    is partially written (files already replaced stay complete).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
    try:
        for name, data in files.items():
            write_file(staging / name, data)
        written = {}
        for name in files:
            os.replace(staging / name, out_dir / name)
            written[name] = out_dir / name
        return written
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)


def png_bytes(image: np.ndarray, compress_level: int = 6) -> bytes:
    """(H, W, 3) uint8 -> PNG file bytes (compress_level 0-9: zlib effort, Pillow's default 6)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _textured_trimesh(vertices: np.ndarray, normals: np.ndarray, layout: UVLayout, material) -> trimesh.Trimesh:
    visual = trimesh.visual.TextureVisuals(uv=layout.uv.numpy(), material=material)
    # process=False keeps xatlas' seam vertices apart (merging them would drop the UV split).
    return trimesh.Trimesh(vertices=vertices, faces=layout.triangles.numpy(), vertex_normals=normals, visual=visual,
                           process=False)


class FaceMeshExporter:
    """Builds the export files of one model topology; the UV rasterization and the normals' adjacency are
    prepared once, so each face costs only the baking gather and the file encoders.

    layout: the model's `coarse.uv_layout.UVLayout`; triangles: (F, 3) the model's triangles;
    texture_size: texture side (pixels); padding_px: texture dilation past the UV islands.
    """

    def __init__(self, layout: UVLayout, triangles: torch.Tensor, texture_size: int = 512, padding_px: int = 4):
        self.layout, self.texture_size = layout, int(texture_size)
        self.triangles = triangles.detach().cpu().long()
        self._point_buf: torch.Tensor | None = None
        self.baker = UVBaker(layout.uv, layout.triangles, self.texture_size, padding_px)

    def files(self, stem: str, vertices: torch.Tensor, albedo: torch.Tensor) -> dict[str, bytes]:
        """vertices: (N, 3) unposed model space, model units; albedo: (N, 3) in [0, 1] (clamped here).
        Returns {file name: bytes} named as `export_file_names(stem)`."""
        names, layout, triangles = export_file_names(stem), self.layout, self.triangles
        vertices = vertices.detach().cpu().float()
        albedo = albedo.detach().cpu().float().clamp(0, 1)
        if self._point_buf is None or self._point_buf.shape[0] != vertices.shape[0]:
            self._point_buf = build_point_buf(triangles, vertices.shape[0])
        normals = compute_normals(vertices[None], triangles, self._point_buf)[0]
        # Seam vertices share their model vertex's normal, so shading shows no seams.
        layout_vertices = (layout.expand(vertices) * METRES_PER_MODEL_UNIT).numpy()
        layout_normals = layout.expand(normals).numpy()

        image = Image.fromarray(to_uint8(self.baker(layout.expand(albedo))))
        image.encoderinfo = {"compress_level": TEXTURE_PNG_LEVEL}  # Pillow applies it to every save of this image
        texture_name = Path(names["texture"]).stem  # trimesh names the image after the material
        # Kd white so viewers that multiply it by map_Kd show the texture as is; Ka and Ks black because
        # Blender's importer reads Ka as metallic and Ks as specular (a face is neither); Ns 1 = rough.
        obj_material = trimesh.visual.material.SimpleMaterial(
            image=image, diffuse=(255, 255, 255, 255), ambient=(0, 0, 0, 255), specular=(0, 0, 0, 255),
            glossiness=1.0, name=texture_name)
        obj_text, obj_files = trimesh.exchange.obj.export_obj(
            _textured_trimesh(layout_vertices, layout_normals, layout, obj_material), include_normals=True,
            include_texture=True, return_texture=True, write_texture=False, mtl_name=names["mtl"], digits=OBJ_DIGITS)
        if set(obj_files) != {names["mtl"], names["texture"]}:
            raise RuntimeError(f"trimesh wrote OBJ companions {sorted(obj_files)}, expected {names['mtl']} and "
                               f"{names['texture']}; check the trimesh version (requirements.txt pins it)")

        glb_material = trimesh.visual.material.PBRMaterial(
            name=texture_name, baseColorTexture=image, baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0,
            roughnessFactor=1.0)
        glb = trimesh.Scene(_textured_trimesh(layout_vertices, layout_normals, layout, glb_material)).export(
            file_type="glb", include_normals=True)

        rgb = (albedo.numpy() * 255 + 0.5).astype(np.uint8)  # the rounding of render.image_io.to_uint8
        colours = np.concatenate([rgb, np.full((rgb.shape[0], 1), 255, np.uint8)], axis=1)
        ply_mesh = trimesh.Trimesh(vertices=(vertices * METRES_PER_MODEL_UNIT).numpy(), faces=triangles.numpy(),
                                   vertex_colors=colours, process=False)
        ply = trimesh.exchange.ply.export_ply(ply_mesh, encoding="binary")
        return {
            names["obj"]: obj_text.encode("utf-8"),
            names["mtl"]: obj_files[names["mtl"]],
            names["texture"]: obj_files[names["texture"]],
            names["glb"]: glb,
            names["ply"]: ply,
        }

    def export(self, out_dir: str | os.PathLike, stem: str, vertices: torch.Tensor,
               albedo: torch.Tensor) -> dict[str, Path]:
        """Write the files into out_dir atomically. Returns {"obj", "mtl", "texture", "glb", "ply"} -> path."""
        written = write_files_atomically(out_dir, self.files(stem, vertices, albedo))
        return {key: written[name] for key, name in export_file_names(stem).items()}


def export_face_meshes(
    out_dir: str | os.PathLike,
    stem: str,
    vertices: torch.Tensor,
    triangles: torch.Tensor,
    albedo: torch.Tensor,
    layout: UVLayout,
    texture_size: int = 512,
    padding_px: int = 4,
) -> dict[str, Path]:
    """Write <stem>.obj/.mtl/_texture.png/.glb/.ply into out_dir atomically (see the module docstring).

    vertices: (N, 3) unposed model-space shape, model units; triangles: (F, 3); albedo: (N, 3) in [0, 1];
    layout: `coarse.uv_layout.ensure_uv(model, ...)`. Returns {"obj", "mtl", "texture", "glb", "ply"} -> path.
    For many faces of one model, keep a `FaceMeshExporter` instead.
    """
    return FaceMeshExporter(layout, triangles, texture_size, padding_px).export(out_dir, stem, vertices, albedo)
