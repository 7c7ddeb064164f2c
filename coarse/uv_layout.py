"""UV layouts for texture export: the model's own UVs, or an xatlas atlas computed once and cached.

SynthFace ships UVs (its grid parameters), so its layout is the identity: one UV per vertex. BFM
ships none, so `ensure_uv` computes an atlas with xatlas (a maintained, widely used UV unwrapper:
it cuts the mesh into low-distortion charts that never overlap and packs them with gutters, which a
planar or cylindrical projection cannot promise around the nostrils, lips and eyelids) and caches it.

xatlas cuts seams: a vertex on a seam gets one UV per chart, so the layout has M >= N vertices.
`UVLayout.vertex_map` (M,) says which model vertex each layout vertex copies; textured exports
(.obj, .glb) use the layout's M vertices, per-vertex exports (.ply) the model's N.

The cache file is keyed by a hash of the triangles and the vertex count (the layout is valid for
any vertex positions of that topology), the packing settings and the xatlas version, and is
written atomically.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from coarse.morphable_model import MorphableModel
from fileio import write_bytes_atomically

# Charts are packed for this texture side with this many texels of gutter between them (it scales
# with the texture: 2 texels at 256, 8 at 1024); texture baking dilates into the gutters.
ATLAS_RESOLUTION = 512
ATLAS_PADDING_TEXELS = 4
CACHE_FORMAT_VERSION = 1


@dataclass
class UVLayout:
    """A texture layout for one mesh topology.

    uv: (M, 2) float32 texture coordinates in [0, 1], v = 0 at the image bottom (OBJ convention).
    triangles: (F, 3) int64 indices into the M layout vertices (same triangle order as the model).
    vertex_map: (M,) int64 model vertex copied by each layout vertex.
    source: "model" (the model's own UVs, M = N) or "xatlas".
    """

    uv: torch.Tensor
    triangles: torch.Tensor
    vertex_map: torch.Tensor
    source: str

    @property
    def num_vertices(self) -> int:
        return self.uv.shape[0]

    def expand(self, values: torch.Tensor) -> torch.Tensor:
        """Per-model-vertex values (..., N, C) -> per-layout-vertex values (..., M, C)."""
        return values[..., self.vertex_map.to(values.device), :]


def topology_key(model: MorphableModel) -> str:
    """Hex digest identifying the model's topology, packing settings and the xatlas version."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(model.triangles.cpu().numpy().astype(np.int64)).tobytes())
    settings = (model.num_vertices, ATLAS_RESOLUTION, ATLAS_PADDING_TEXELS, CACHE_FORMAT_VERSION, _xatlas_version())
    digest.update(repr(settings).encode())
    return digest.hexdigest()[:24]


def _xatlas_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xatlas")
    except PackageNotFoundError:
        return "unknown"


def compute_xatlas_layout(vertices: np.ndarray, triangles: np.ndarray) -> UVLayout:
    """Unwrap a mesh with xatlas. vertices: (N, 3) float; triangles: (F, 3) int. Raises RuntimeError when
    xatlas is missing or packs the charts into more than one atlas page."""
    try:
        import xatlas
    except ImportError:
        raise RuntimeError("xatlas is not installed; run `pip install xatlas==0.0.11` (needed to texture a "
                           "model without UVs, such as BFM)") from None
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(triangles, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = ATLAS_RESOLUTION
    pack.padding = ATLAS_PADDING_TEXELS
    atlas.generate(xatlas.ChartOptions(), pack)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas packed the charts into {atlas.atlas_count} pages; expected one")
    vertex_map, indices, uv = atlas[0]
    return UVLayout(
        uv=torch.from_numpy(np.asarray(uv, dtype=np.float32)),
        triangles=torch.from_numpy(np.asarray(indices, dtype=np.int64)),
        vertex_map=torch.from_numpy(np.asarray(vertex_map, dtype=np.int64)),
        source="xatlas",
    )


def _read_cached(path: Path, model: MorphableModel) -> UVLayout | None:
    """The layout stored at path, or None when it is absent, unreadable or does not fit the model."""
    try:
        with np.load(path) as stored:
            layout = UVLayout(
                uv=torch.from_numpy(stored["uv"].astype(np.float32)),
                triangles=torch.from_numpy(stored["triangles"].astype(np.int64)),
                vertex_map=torch.from_numpy(stored["vertex_map"].astype(np.int64)),
                source="xatlas",
            )
    except (OSError, KeyError, ValueError):
        return None
    mapped = layout.vertex_map[layout.triangles] if layout.triangles.numel() else layout.triangles
    if mapped.shape != model.triangles.shape or not torch.equal(mapped, model.triangles.cpu().long()):
        return None
    return layout


def _write_atomically(path: Path, layout: UVLayout) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, uv=layout.uv.numpy(), triangles=layout.triangles.numpy(), vertex_map=layout.vertex_map.numpy())
    write_bytes_atomically(path, buffer.getvalue())


def ensure_uv(model: MorphableModel, cache_dir: str | os.PathLike | None) -> UVLayout:
    """The model's texture layout: its own UVs when it has them, else an xatlas atlas.

    The atlas is read from `cache_dir/uv_<key>.npz` when present and valid, else computed (seconds to a
    minute for BFM's 35,709 vertices) and written there atomically; cache_dir None computes without caching.
    """
    if model.uv is not None:
        n = model.num_vertices
        return UVLayout(uv=model.uv.detach().cpu().float(), triangles=model.triangles.detach().cpu().long(),
                        vertex_map=torch.arange(n), source="model")
    path = None if cache_dir is None else Path(cache_dir) / f"uv_{topology_key(model)}.npz"
    if path is not None and path.is_file():
        layout = _read_cached(path, model)
        if layout is not None:
            return layout
    layout = compute_xatlas_layout(model.mean_shape.detach().cpu().numpy(), model.triangles.detach().cpu().numpy())
    if path is not None:
        _write_atomically(path, layout)
    return layout
