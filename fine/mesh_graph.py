"""Mesh graphs and the multi-resolution mesh hierarchy the graph networks of fine/ run on.

Level 0 is the full mesh; level l+1 is level l decimated about ``factors[l]`` times by quadric edge
collapse (``fast-simplification``, Garland-Heckbert). Each decimation's collapse history is replayed
to get the map "fine vertex i was merged into coarse vertex c(i)". The two resampling operators are
sparse matrices whose rows sum to 1:

- down (n_{l+1}, n_l): every coarse vertex averages the fine vertices collapsed into it,
  ``D[c, i] = 1 / |{j : c(j) = c}|`` if ``c(i) = c``. Averaging (not picking one vertex) low-passes
  the signal before it is subsampled. The coarse vertex is placed at that cluster's centroid
  (``V_{l+1} = D V_l``) rather than at the decimator's quadric optimum.
- up (n_l, n_{l+1}): as in COMA (Ranjan et al. 2018), each fine vertex p is written in the
  barycentric coordinates (a, b, g) of the point of the coarse mesh closest to it, on triangle
  (u, v, w): ``U[p, u] = a, U[p, v] = b, U[p, w] = g``, a + b + g = 1, all >= 0.

Every level's graph is made connected (a Chebyshev filter cannot move information between
components): each smaller component is linked by one edge, between its vertex and the vertex of the
largest component that are closest to each other.

Imports nothing of ours: meshes come in as tensors.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fine.sparse import SparseOperator, as_operator

# Bump when the hierarchy construction changes, so that stale cache files are not reused.
HIERARCHY_FORMAT_VERSION = 1
# A decimated level needs a few triangles for barycentric up-sampling to mean anything.
MIN_COARSE_TRIANGLES = 8
# Fine vertices are projected onto the triangles around their k nearest coarse vertices.
PROJECTION_NEAREST_VERTICES = 4
# Rows of fine vertices handled at once while projecting (bounds peak memory on large meshes).
PROJECTION_CHUNK = 4096


def _check_mesh(vertices: torch.Tensor, triangles: torch.Tensor) -> None:
    if vertices.dim() != 2 or vertices.shape[1] != 3 or not vertices.is_floating_point():
        raise ValueError(f"fine/mesh_graph.py: vertices must be a float (N, 3) tensor, got "
                         f"{tuple(vertices.shape)} {vertices.dtype}")
    _check_triangles(triangles, vertices.shape[0])


def _check_triangles(triangles: torch.Tensor, num_vertices: int) -> None:
    if triangles.dim() != 2 or triangles.shape[1] != 3 or triangles.is_floating_point():
        raise ValueError(f"fine/mesh_graph.py: triangles must be an integer (F, 3) tensor, got "
                         f"{tuple(triangles.shape)} {triangles.dtype}")
    if triangles.numel() and (int(triangles.min()) < 0 or int(triangles.max()) >= num_vertices):
        raise ValueError(f"fine/mesh_graph.py: triangle indices must lie in [0, {num_vertices}), got "
                         f"[{int(triangles.min())}, {int(triangles.max())}]")


def edge_index_from_triangles(triangles: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """The undirected vertex graph of a triangle mesh.

    triangles: (F, 3) integer vertex indices in [0, num_vertices).
    Returns (2, E) int64 on the triangles' device: both directions of every mesh edge, each once,
    sorted by (source, target), with no self loops (degenerate triangles add none).
    """
    _check_triangles(triangles, num_vertices)
    tri = triangles.long()
    src = torch.cat([tri[:, 0], tri[:, 1], tri[:, 2]])
    dst = torch.cat([tri[:, 1], tri[:, 2], tri[:, 0]])
    src, dst = torch.cat([src, dst]), torch.cat([dst, src])
    keep = src != dst
    key = torch.unique(src[keep] * num_vertices + dst[keep])
    return torch.stack([key // num_vertices, key % num_vertices])


def connected_components(edge_index: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Component label of every vertex: (N,) int64, the smallest vertex index of its component.

    edge_index: (2, E) undirected (both directions present). Min-label propagation with pointer
    jumping, so it converges in O(log diameter) rounds on meshes.
    """
    labels = torch.arange(num_vertices, device=edge_index.device)
    src, dst = edge_index[0], edge_index[1]
    while True:
        previous = labels
        smallest = labels.scatter_reduce(0, dst, labels[src], reduce="amin")
        labels = smallest[smallest]  # pointer jumping
        while True:
            jumped = labels[labels]
            if torch.equal(jumped, labels):
                break
            labels = jumped
        if torch.equal(labels, previous):
            return labels


def connect_components(edge_index: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Make a graph connected by linking every smaller component to its closest vertex elsewhere.

    edge_index: (2, E) undirected; vertices: (N, 3) positions. Returns (2, E') undirected, sorted,
    equal to edge_index when the graph is already connected. Each added edge joins the closest pair
    (vertex of the component, vertex of the largest component).
    """
    num_vertices = vertices.shape[0]
    labels = connected_components(edge_index, num_vertices)
    roots, counts = torch.unique(labels, return_counts=True)
    if roots.numel() <= 1:
        return edge_index
    main = labels == roots[counts.argmax()]
    main_index = main.nonzero().squeeze(1)
    added = []
    for root in roots[roots != roots[counts.argmax()]]:
        member_index = (labels == root).nonzero().squeeze(1)
        distances = torch.cdist(vertices[member_index].double(), vertices[main_index].double())
        flat = int(distances.argmin())
        a = member_index[flat // main_index.numel()]
        b = main_index[flat % main_index.numel()]
        added.append(torch.stack([a, b]))
    new = torch.stack(added, dim=1)
    merged = torch.cat([edge_index, new, new.flip(0)], dim=1)
    key = torch.unique(merged[0] * num_vertices + merged[1])
    return torch.stack([key // num_vertices, key % num_vertices])


def _sparse(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values.float(), size,
                                   check_invariants=True).coalesce()


def _closest_barycentrics(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Barycentrics of the point of triangle (a, b, c) closest to p (Ericson, Real-Time Collision
    Detection 5.1.5), vectorised. points, a, b, c: (..., 3) float64 -> (..., 3), >= 0, summing to 1."""
    def dot(x, y):
        return (x * y).sum(-1)

    tiny = torch.finfo(points.dtype).tiny
    ab, ac, ap = b - a, c - a, points - a
    bp, cp = points - b, points - c
    d1, d2 = dot(ab, ap), dot(ac, ap)
    d3, d4 = dot(ab, bp), dot(ac, bp)
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def safe(num, den):
        return num / torch.where(den.abs() > tiny, den, torch.full_like(den, tiny))

    # Interior (the default), then the Voronoi regions overriding it in reverse order of Ericson's tests,
    # so that the first test that holds wins.
    total = va + vb + vc
    v_in, w_in = safe(vb, total), safe(vc, total)
    bary = torch.stack([1 - v_in - w_in, v_in, w_in], -1)

    def region(mask, value):
        return torch.where(mask.unsqueeze(-1), value, bary)

    one, zero = torch.ones_like(d1), torch.zeros_like(d1)
    w_bc = safe(d4 - d3, (d4 - d3) + (d5 - d6))
    bary = region((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), torch.stack([zero, 1 - w_bc, w_bc], -1))
    w_ac = safe(d2, d2 - d6)
    bary = region((vb <= 0) & (d2 >= 0) & (d6 <= 0), torch.stack([1 - w_ac, zero, w_ac], -1))
    bary = region((d6 >= 0) & (d5 <= d6), torch.stack([zero, zero, one], -1))
    v_ab = safe(d1, d1 - d3)
    bary = region((vc <= 0) & (d1 >= 0) & (d3 <= 0), torch.stack([1 - v_ab, v_ab, zero], -1))
    bary = region((d3 >= 0) & (d4 <= d3), torch.stack([zero, one, zero], -1))
    bary = region((d1 <= 0) & (d2 <= 0), torch.stack([one, zero, zero], -1))
    return bary.clamp(0, 1) / bary.clamp(0, 1).sum(-1, keepdim=True)


def _vertex_triangles(triangles: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """(n, max valence) int64 triangles around each vertex, padded with -1."""
    corner_vertex = triangles.reshape(-1)
    corner_triangle = torch.arange(triangles.shape[0]).repeat_interleave(3)
    order = torch.argsort(corner_vertex, stable=True)
    corner_vertex, corner_triangle = corner_vertex[order], corner_triangle[order]
    valence = torch.bincount(corner_vertex, minlength=num_vertices)
    start = torch.cumsum(valence, 0) - valence
    slot = torch.arange(corner_vertex.numel()) - start[corner_vertex]
    table = torch.full((num_vertices, max(int(valence.max()), 1)), -1, dtype=torch.long)
    table[corner_vertex, slot] = corner_triangle
    return table


def upsampling_matrix(fine_vertices: torch.Tensor, coarse_vertices: torch.Tensor,
                      coarse_triangles: torch.Tensor) -> torch.Tensor:
    """COMA up-sampling: each fine vertex as barycentrics of the closest point on the coarse mesh.

    fine_vertices: (n_f, 3), coarse_vertices: (n_c, 3), coarse_triangles: (F_c, 3).
    Returns a sparse COO float32 (n_f, n_c) matrix with 3 non-negative entries per row summing to 1.
    The closest triangle is searched among those around the fine vertex's
    ``PROJECTION_NEAREST_VERTICES`` nearest coarse vertices (exact on the smooth, evenly decimated
    meshes used here; a full point-to-mesh search would cost n_f x F_c).
    """
    fine = fine_vertices.detach().cpu().double()
    coarse = coarse_vertices.detach().cpu().double()
    tri = coarse_triangles.detach().cpu().long()
    around = _vertex_triangles(tri, coarse.shape[0])
    k = min(PROJECTION_NEAREST_VERTICES, coarse.shape[0])
    rows, cols, values = [], [], []
    for start in range(0, fine.shape[0], PROJECTION_CHUNK):
        points = fine[start:start + PROJECTION_CHUNK]
        nearest = torch.cdist(points, coarse).topk(k, dim=1, largest=False).indices      # (P, k)
        candidates = around[nearest].reshape(points.shape[0], -1)                         # (P, k*deg)
        valid = candidates >= 0
        corners = coarse[tri[candidates.clamp(min=0)]]                                   # (P, C, 3, 3)
        p = points.unsqueeze(1).expand(-1, candidates.shape[1], -1)
        bary = _closest_barycentrics(p, corners[..., 0, :], corners[..., 1, :], corners[..., 2, :])
        closest = (bary.unsqueeze(-1) * corners).sum(-2)
        distance = (closest - p).square().sum(-1).masked_fill(~valid, float("inf"))
        best = distance.argmin(1)
        pick = torch.arange(points.shape[0])
        rows.append((start + pick).repeat_interleave(3))
        cols.append(tri[candidates[pick, best]].reshape(-1))
        values.append(bary[pick, best].reshape(-1))
    return _sparse(torch.cat(rows), torch.cat(cols), torch.cat(values), (fine.shape[0], coarse.shape[0]))


def downsampling_matrix(cluster: torch.Tensor, num_coarse: int) -> torch.Tensor:
    """Average of each cluster. cluster: (n_f,) int64 coarse vertex each fine vertex was merged into;
    every coarse vertex must receive at least one.

    Returns a sparse COO float32 (n_c, n_f) matrix whose rows sum to 1.
    """
    size = torch.bincount(cluster, minlength=num_coarse)
    if cluster.numel() and (int(cluster.min()) < 0 or int(cluster.max()) >= num_coarse or int(size.min()) == 0):
        raise ValueError("fine/mesh_graph.py: the decimation map leaves a coarse vertex without fine vertices "
                         "or points outside the coarse mesh")
    fine_index = torch.arange(cluster.numel())
    return _sparse(cluster, fine_index, 1.0 / size[cluster].double(), (num_coarse, cluster.numel()))


def resample(transform: torch.Tensor | SparseOperator, x: torch.Tensor) -> torch.Tensor:
    """Apply a sparse resampling matrix to batched vertex features.

    transform: sparse (n_out, n_in), or its SparseOperator; x: (B, n_in, C) -> (B, n_out, C). Differentiable in x.
    """
    return resample_vertex_major(transform, x.transpose(0, 1)).transpose(0, 1)


def resample_vertex_major(transform: torch.Tensor | SparseOperator, x: torch.Tensor) -> torch.Tensor:
    """``resample`` on vertex-major features: x (n_in, B, C) -> (n_out, B, C)."""
    transform = as_operator(transform)
    if x.dtype != transform.dtype:  # e.g. half-precision activations under autocast
        x = x.to(transform.dtype)
    n, b, c = x.shape
    return (transform @ x.reshape(n, b * c)).view(-1, b, c)


@dataclass
class MeshHierarchy:
    """A mesh and its successive decimations, with graphs and resampling operators.

    Level 0 is the full mesh (n_0 = N vertices), level L-1 the coarsest.
    num_vertices: [n_0, ..., n_{L-1}].
    edge_index: L tensors (2, E_l) int64, undirected, connected graph of each level.
    down: L-1 sparse COO float32 (n_{l+1}, n_l), rows sum to 1 (cluster averages).
    up: L-1 sparse COO float32 (n_l, n_{l+1}), rows sum to 1 (barycentrics on the coarse mesh).
    vertices: L tensors (n_l, 3) float32 positions (level 0 is the input mesh).
    triangles: L tensors (F_l, 3) int64.
    factors: the decimation factors it was built with.
    """

    num_vertices: list[int]
    edge_index: list[torch.Tensor]
    down: list[torch.Tensor]
    up: list[torch.Tensor]
    vertices: list[torch.Tensor]
    triangles: list[torch.Tensor]
    factors: tuple[float, ...]

    @property
    def num_levels(self) -> int:
        return len(self.num_vertices)

    def downsample(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """x: (B, n_level, C) -> (B, n_{level+1}, C)."""
        return resample(self.down[level], x)

    def upsample(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """x: (B, n_{level+1}, C) -> (B, n_level, C)."""
        return resample(self.up[level], x)

    def to(self, device: torch.device | str) -> "MeshHierarchy":
        """A copy with every tensor on ``device``."""
        return MeshHierarchy(
            num_vertices=list(self.num_vertices),
            edge_index=[e.to(device) for e in self.edge_index],
            down=[d.to(device) for d in self.down],
            up=[u.to(device) for u in self.up],
            vertices=[v.to(device) for v in self.vertices],
            triangles=[t.to(device) for t in self.triangles],
            factors=tuple(self.factors),
        )

    def state(self) -> dict:
        """Plain tensors, ints and lists (no sparse tensors), loadable with ``weights_only=True``."""
        def sparse_state(m):
            m = m.coalesce().cpu()
            return {"indices": m.indices(), "values": m.values(), "size": list(m.shape)}

        return {
            "format_version": HIERARCHY_FORMAT_VERSION,
            "num_vertices": list(self.num_vertices),
            "edge_index": [e.cpu() for e in self.edge_index],
            "down": [sparse_state(d) for d in self.down],
            "up": [sparse_state(u) for u in self.up],
            "vertices": [v.cpu() for v in self.vertices],
            "triangles": [t.cpu() for t in self.triangles],
            "factors": [float(f) for f in self.factors],
        }

    @classmethod
    def from_state(cls, state: dict) -> "MeshHierarchy":
        if state.get("format_version") != HIERARCHY_FORMAT_VERSION:
            raise ValueError(f"fine/mesh_graph.py: hierarchy state has format version "
                             f"{state.get('format_version')}, expected {HIERARCHY_FORMAT_VERSION}; rebuild it")

        def sparse(s):
            return torch.sparse_coo_tensor(s["indices"], s["values"], tuple(s["size"]),
                                           check_invariants=True).coalesce()

        return cls(
            num_vertices=[int(n) for n in state["num_vertices"]],
            edge_index=list(state["edge_index"]),
            down=[sparse(s) for s in state["down"]],
            up=[sparse(s) for s in state["up"]],
            vertices=list(state["vertices"]),
            triangles=list(state["triangles"]),
            factors=tuple(state["factors"]),
        )

    def save(self, path: str | Path) -> None:
        """Write atomically (temporary file in the same folder, then os.replace)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(handle)
        try:
            torch.save(self.state(), temporary)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> "MeshHierarchy":
        return cls.from_state(torch.load(path, map_location="cpu", weights_only=True))


def hierarchy_cache_key(vertices: torch.Tensor, triangles: torch.Tensor, factors) -> str:
    """sha1 of (format version, triangles, vertex count, vertex positions, factors).

    Positions are included because quadric decimation and the up-sampling weights depend on them:
    two models sharing a topology but not a mean shape must not share a hierarchy.
    """
    digest = hashlib.sha1()
    digest.update(f"v{HIERARCHY_FORMAT_VERSION};n={vertices.shape[0]};f={[float(f) for f in factors]};".encode())
    digest.update(np.ascontiguousarray(triangles.detach().cpu().numpy().astype("<i8")).tobytes())
    digest.update(np.ascontiguousarray(vertices.detach().cpu().numpy().astype("<f4")).tobytes())
    return digest.hexdigest()


def _decimate(vertices: np.ndarray, triangles: np.ndarray, factor: float):
    """One quadric decimation step -> (coarse vertices (n_c, 3), coarse triangles (F_c, 3),
    cluster (n_f,) coarse vertex each fine vertex was merged into, -1 for unreferenced vertices)."""
    import fast_simplification

    target = int(round(triangles.shape[0] / factor))
    if target < MIN_COARSE_TRIANGLES:
        raise ValueError(f"fine/mesh_graph.py: decimating {triangles.shape[0]} triangles by {factor} leaves "
                         f"fewer than {MIN_COARSE_TRIANGLES}; use fewer or smaller factors")
    _, _, collapses = fast_simplification.simplify(vertices, triangles.astype(np.int32), target_count=target,
                                                   return_collapses=True)
    # Replaying the collapse history gives the same mesh as simplify() plus the vertex mapping.
    coarse_vertices, coarse_triangles, cluster = fast_simplification.replay_simplification(
        vertices, triangles.astype(np.int32), collapses)
    return coarse_vertices, coarse_triangles.astype(np.int64), cluster.astype(np.int64)


def _repair_decimation(fine_v: torch.Tensor, coarse_v: torch.Tensor, coarse_t: torch.Tensor,
                       cluster: torch.Tensor):
    """Make the decimation map a partition of the fine vertices onto coarse vertices that are all used.

    Fine vertices in no triangle (the decimator skips them: cluster -1) join the closest coarse vertex.
    Coarse vertices that no fine vertex maps to (possible when a tiny component collapses away) are
    dropped, and the triangles renumbered.
    """
    unreferenced = (cluster < 0) | (cluster >= coarse_v.shape[0])
    if bool(unreferenced.any()):
        cluster = cluster.clone()
        cluster[unreferenced] = torch.cdist(fine_v[unreferenced].double(), coarse_v.double()).argmin(1)
    used = torch.zeros(coarse_v.shape[0], dtype=torch.bool)
    used[cluster] = True
    if not bool(used.all()):
        renumber = torch.cumsum(used.long(), 0) - 1
        keep_triangles = used[coarse_t].all(1)
        coarse_v, coarse_t, cluster = coarse_v[used], renumber[coarse_t[keep_triangles]], renumber[cluster]
    return coarse_v, coarse_t, cluster


def build_mesh_hierarchy(vertices: torch.Tensor, triangles: torch.Tensor, factors=(4, 4, 4, 4),
                         cache_dir: str | Path | None = None) -> MeshHierarchy:
    """Decimate a mesh ``len(factors)`` times into a ``MeshHierarchy`` (on the CPU).

    vertices: (N, 3) float positions (e.g. the morphable model's mean shape).
    triangles: (F, 3) integer vertex indices.
    factors: reduction of each step (> 1): the decimator targets round(F_l / factor) triangles, which
        cuts the vertex count by about the same factor; (4, 4, 4, 4) gives 5 levels, e.g.
        9,025 -> 2,295 -> 582 -> 150 -> 40 vertices for the default SynthFace. A step that would
        leave fewer than MIN_COARSE_TRIANGLES triangles raises ValueError.
    cache_dir: if given, the hierarchy is read from / written to
        ``cache_dir/<hierarchy_cache_key>.pt`` (written atomically).
    """
    _check_mesh(vertices, triangles)
    factors = tuple(float(f) for f in factors)
    if any(f <= 1 for f in factors):
        raise ValueError(f"fine/mesh_graph.py: every decimation factor must be > 1, got {factors}")
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"{hierarchy_cache_key(vertices, triangles, factors)}.pt"
        if cache_path.is_file():
            try:
                return MeshHierarchy.load(cache_path)
            except (OSError, RuntimeError, ValueError, EOFError, KeyError):
                pass  # unreadable cache entry: rebuild it and overwrite

    level_vertices = [vertices.detach().cpu().float()]
    level_triangles = [triangles.detach().cpu().long()]
    down, up = [], []
    for factor in factors:
        fine_v, fine_t = level_vertices[-1], level_triangles[-1]
        coarse_v, coarse_t, cluster = _decimate(fine_v.double().numpy(), fine_t.numpy(), factor)
        coarse_v = torch.from_numpy(coarse_v).float()
        coarse_t = torch.from_numpy(coarse_t)
        cluster = torch.from_numpy(cluster)
        coarse_v, coarse_t, cluster = _repair_decimation(fine_v, coarse_v, coarse_t, cluster)
        down.append(downsampling_matrix(cluster, coarse_v.shape[0]))
        # Coarse vertices sit at their cluster's centroid (not the quadric optimum), so that
        # down-sampling the positions gives the coarse positions: with the up-sampling's
        # barycentrics, down-then-up then reproduces linear signals about 5x more closely.
        coarse_v = torch.sparse.mm(down[-1].double(), fine_v.double()).float()
        up.append(upsampling_matrix(fine_v, coarse_v, coarse_t))
        level_vertices.append(coarse_v)
        level_triangles.append(coarse_t)

    edge_index = [connect_components(edge_index_from_triangles(t, v.shape[0]), v)
                  for v, t in zip(level_vertices, level_triangles)]
    hierarchy = MeshHierarchy(
        num_vertices=[v.shape[0] for v in level_vertices], edge_index=edge_index, down=down, up=up,
        vertices=level_vertices, triangles=level_triangles, factors=factors)
    if cache_path is not None:
        hierarchy.save(cache_path)
    return hierarchy
