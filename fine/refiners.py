"""The fine stage: a mesh-wise albedo refiner, a FAID feature decoder, and their fusion.

Both branches are Chebyshev residual graph networks over a ``MeshHierarchy`` (level 0 = full mesh,
level L = coarsest, L = len(channels)); channel count at level l is ``channels[min(l, L - 1)]``.

- ``MeshRefiner`` (Lin et al., CVPR 2020): coarse per-vertex albedo -> U-Net-like encoder-decoder ->
  residual albedo correction. Encoder: one residual block per level 0..L-1, each followed by cluster
  average pooling; one block at level L; decoder: per level L-1..0, up-sample, concatenate the encoder
  features of that level, one residual block.
- ``FAIDDecoder`` (Mohaghegh et al.): face-attribute + identity feature vector -> fully connected layer
  to the coarsest level -> one block there -> per level: up-sample, one residual block -> correction.
- ``FineStage``: T_f = T + fused correction, with T the coarse albedo.

Every branch ends in a zero-initialised per-vertex linear layer, so the corrections are exactly zero
at initialisation and the fine albedo starts equal to the coarse albedo. Nothing is clamped:
the albedo range ([0, 1]) is the caller's business.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fine.chebyshev_block import ChebResidualBlock, scaled_laplacian
from fine.mesh_graph import MeshHierarchy, resample_vertex_major
from fine.sparse import SparseOperator

FUSIONS = ("average", "learned")


class _LevelOperators(nn.Module):
    """The hierarchy's per-level scaled Laplacians and resampling matrices as module buffers.

    Each is stored in CSR form with its transpose (``SparseOperator.parts``) as dense buffers (not persistent:
    they come from the hierarchy, not the checkpoint) so that ``.to(device)``, ``.double()`` and
    DistributedDataParallel's buffer broadcast all work; the sparse views are rebuilt per call, which costs
    no copy.
    """

    def __init__(self, hierarchy: MeshHierarchy, num_levels: int):
        super().__init__()
        if hierarchy.num_levels < num_levels:
            raise ValueError(f"fine/refiners.py: the network needs {num_levels} mesh levels (len(channels) + 1) "
                             f"but the hierarchy has {hierarchy.num_levels}; build it with more factors "
                             f"or pass fewer channels")
        self.num_vertices = list(hierarchy.num_vertices[:num_levels])
        for level in range(num_levels):
            laplacian = scaled_laplacian(hierarchy.edge_index[level].cpu(), self.num_vertices[level])
            self._store(f"laplacian{level}", laplacian)
        for level in range(num_levels - 1):
            self._store(f"down{level}", hierarchy.down[level].cpu())
            self._store(f"up{level}", hierarchy.up[level].cpu())

    def _store(self, name: str, matrix: torch.Tensor) -> None:
        for part, tensor in SparseOperator.parts(matrix.float()).items():
            self.register_buffer(f"{name}_{part}", tensor, persistent=False)
        setattr(self, f"_{name}_size", tuple(matrix.shape))

    def _operator(self, name: str) -> SparseOperator:
        return SparseOperator.from_parts(getattr(self, f"_{name}_size"),
                                         **{part: getattr(self, f"{name}_{part}") for part in SparseOperator.PARTS})

    def laplacian(self, level: int) -> SparseOperator:
        """The (n_level, n_level) scaled Laplacian (see ``scaled_laplacian``)."""
        return self._operator(f"laplacian{level}")

    def downsample(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """Vertex-major (n_level, B, C) -> (n_{level+1}, B, C)."""
        return resample_vertex_major(self._operator(f"down{level}"), x)

    def upsample(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """Vertex-major (n_{level+1}, B, C) -> (n_level, B, C)."""
        return resample_vertex_major(self._operator(f"up{level}"), x)



def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _check_channels(channels) -> tuple[int, ...]:
    channels = tuple(int(c) for c in channels)
    if not channels or any(c <= 0 for c in channels):
        raise ValueError(f"fine/refiners.py: channels must be a non-empty tuple of positive ints, got {channels}")
    return channels


class MeshRefiner(nn.Module):
    r"""Mesh-wise albedo refiner: coarse per-vertex albedo -> residual correction.

    .. math::
        \Delta T = \mathrm{Dec}(\mathrm{Enc}(T)), \qquad \Delta T = 0 \text{ at initialisation}

    hierarchy: MeshHierarchy with at least len(channels) + 1 levels (level 0 = the albedo's mesh).
    channels: feature size per level (encoder level l and decoder level l use channels[l];
    the coarsest level uses channels[-1]). K: Chebyshev order of every convolution.
    Blocks: len(channels) down, one at the coarsest level, len(channels) up.
    """

    def __init__(self, hierarchy: MeshHierarchy, channels=(16, 32, 32, 64), K: int = 6,
                 in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        self.channels = _check_channels(channels)
        depth = len(self.channels)
        self.operators = _LevelOperators(hierarchy, depth + 1)
        width = [self.channels[min(level, depth - 1)] for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            ChebResidualBlock(in_channels if level == 0 else width[level - 1], width[level], K)
            for level in range(depth))
        self.bottleneck = ChebResidualBlock(width[depth - 1], width[depth], K)
        # decoder[l] runs at level l on [up-sampled level l+1 features, encoder features of level l].
        self.decoder = nn.ModuleList(
            ChebResidualBlock(width[level + 1] + width[level], width[level], K) for level in range(depth))
        self.output = _zero_linear(width[0], out_channels)

    def reset_parameters(self) -> None:
        for block in [*self.encoder, self.bottleneck, *self.decoder]:
            block.reset_parameters()
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, coarse_albedo: torch.Tensor) -> torch.Tensor:
        """coarse_albedo: (B, N, 3) per-vertex albedo in [0, 1] on the hierarchy's level-0 mesh.
        Returns the correction (B, N, 3) (zero at initialisation)."""
        ops = self.operators
        x, skips = coarse_albedo.transpose(0, 1).contiguous(), []  # vertex-major (N, B, C) throughout
        for level, block in enumerate(self.encoder):
            x = block.vertex_major(x, ops.laplacian(level))
            skips.append(x)
            x = ops.downsample(x, level)
        x = self.bottleneck.vertex_major(x, ops.laplacian(len(self.encoder)))
        for level in reversed(range(len(self.decoder))):
            x = torch.cat([ops.upsample(x, level), skips[level]], dim=-1)
            x = self.decoder[level].vertex_major(x, ops.laplacian(level))
        return self.output(x).transpose(0, 1)


class FAIDDecoder(nn.Module):
    r"""FAID decoder: a feature vector (identity + attribute embeddings) -> per-vertex albedo correction.

    .. math::
        X_L = \mathrm{reshape}(W f + b) \in \mathbb{R}^{n_L \times C_L}, \qquad
        X_l = \mathrm{Block}_l(U_l X_{l+1}), \qquad \Delta T = X_0 \Theta_{out} \ (= 0 \text{ at init})

    hierarchy: MeshHierarchy with at least len(channels) + 1 levels; feature_dim: D;
    channels, K: as MeshRefiner (the same decoder family, without encoder skips).
    """

    def __init__(self, hierarchy: MeshHierarchy, feature_dim: int, channels=(16, 32, 32, 64), K: int = 6,
                 out_channels: int = 3):
        super().__init__()
        if not isinstance(feature_dim, int) or feature_dim <= 0:
            raise ValueError(f"fine/refiners.py: FAIDDecoder needs a positive integer feature_dim, got {feature_dim!r}")
        self.channels = _check_channels(channels)
        self.feature_dim = feature_dim
        depth = len(self.channels)
        self.operators = _LevelOperators(hierarchy, depth + 1)
        width = [self.channels[min(level, depth - 1)] for level in range(depth + 1)]
        self._coarsest = (self.operators.num_vertices[depth], width[depth])
        self.fc = nn.Linear(feature_dim, self._coarsest[0] * self._coarsest[1])
        self.bottleneck = ChebResidualBlock(width[depth], width[depth], K)
        self.decoder = nn.ModuleList(ChebResidualBlock(width[level + 1], width[level], K) for level in range(depth))
        self.output = _zero_linear(width[0], out_channels)

    def reset_parameters(self) -> None:
        self.fc.reset_parameters()
        for block in [self.bottleneck, *self.decoder]:
            block.reset_parameters()
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (B, D) concatenated identity and attribute embeddings.
        Returns the correction (B, N, 3) on the level-0 mesh (zero at initialisation)."""
        ops = self.operators
        x = self.fc(features).view(features.shape[0], *self._coarsest).transpose(0, 1).contiguous()  # vertex-major
        x = self.bottleneck.vertex_major(x, ops.laplacian(len(self.decoder)))
        for level in reversed(range(len(self.decoder))):
            x = self.decoder[level].vertex_major(ops.upsample(x, level), ops.laplacian(level))
        return self.output(x).transpose(0, 1)


@dataclass
class FineOutput:
    """albedo: (B, N, 3) fine albedo = coarse albedo + fused correction (not clamped).
    mesh_correction, faid_correction: (B, N, 3) each branch's correction, None if the branch is off."""

    albedo: torch.Tensor
    mesh_correction: torch.Tensor | None
    faid_correction: torch.Tensor | None


class FineStage(nn.Module):
    r"""The fine stage: refine the coarse albedo with the mesh-wise and/or the FAID branch.

    .. math::
        T_f = T + \tfrac{1}{2}(\Delta_{mesh} + \Delta_{faid})  \quad \text{("average": the mean of the two
        branches' albedos } T + \Delta_{mesh} \text{ and } T + \Delta_{faid})

        T_f = T + w \odot \Delta_{mesh} + (1 - w) \odot \Delta_{faid},\ w = \sigma(a) \in (0, 1)^N
        \quad \text{("learned": per-vertex logits a, initialised to 0, i.e. } w = 0.5)

    With one branch on (e.g. use_faid=False, the paper's "without FA/ID" ablation) T_f = T + Delta of
    that branch, and fusion must be "average".

    hierarchy: MeshHierarchy of the albedo's mesh; feature_dim: D of the FAID vector (needed when
    use_faid); channels, K: of both branches.
    """

    def __init__(self, hierarchy: MeshHierarchy, feature_dim: int | None = None, fusion: str = "average",
                 use_mesh: bool = True, use_faid: bool = True, channels=(16, 32, 32, 64), K: int = 6,
                 mesh_in_channels: int = 3):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fine/refiners.py: fusion must be one of {FUSIONS}, got {fusion!r}")
        if not (use_mesh or use_faid):
            raise ValueError("fine/refiners.py: FineStage needs use_mesh or use_faid (or both) to be True")
        if fusion == "learned" and not (use_mesh and use_faid):
            raise ValueError("fine/refiners.py: fusion='learned' weighs two branches; with only one branch "
                             "on, use fusion='average'")
        if use_faid and (not isinstance(feature_dim, int) or feature_dim <= 0):
            raise ValueError(f"fine/refiners.py: use_faid=True needs a positive integer feature_dim, "
                             f"got {feature_dim!r}")
        self.fusion, self.use_mesh, self.use_faid = fusion, use_mesh, use_faid
        self.num_vertices = hierarchy.num_vertices[0]
        self.feature_dim = feature_dim if use_faid else None
        self.mesh_refiner = MeshRefiner(hierarchy, channels, K, in_channels=mesh_in_channels) if use_mesh else None
        self.faid_decoder = FAIDDecoder(hierarchy, feature_dim, channels, K) if use_faid else None
        if fusion == "learned":
            self.fusion_logit = nn.Parameter(torch.zeros(self.num_vertices, 1))
        else:
            self.register_parameter("fusion_logit", None)

    def reset_parameters(self) -> None:
        for branch in (self.mesh_refiner, self.faid_decoder):
            if branch is not None:
                branch.reset_parameters()
        if self.fusion_logit is not None:
            nn.init.zeros_(self.fusion_logit)

    def forward(self, coarse_albedo: torch.Tensor, features: torch.Tensor | None = None,
                mesh_input: torch.Tensor | None = None) -> FineOutput:
        """coarse_albedo: (B, N, 3) per-vertex albedo on the hierarchy's level-0 mesh.
        features: (B, D) FAID vector (identity + attribute embeddings); required when use_faid,
        ignored otherwise. mesh_input: (B, N, mesh_in_channels) what the mesh-wise refiner reads (e.g. the
        coarse albedo with the photo's colours unwrapped onto the vertices, as Lin et al.); None reads the
        coarse albedo. Returns FineOutput."""
        if coarse_albedo.dim() != 3 or coarse_albedo.shape[1:] != (self.num_vertices, 3):
            raise ValueError(f"fine/refiners.py: coarse_albedo must be (B, {self.num_vertices}, 3), "
                             f"got {tuple(coarse_albedo.shape)}")
        mesh_correction = faid_correction = None
        if self.use_mesh:
            mesh_correction = self.mesh_refiner(coarse_albedo if mesh_input is None else mesh_input)
        if self.use_faid:
            if features is None or features.dim() != 2 or features.shape != (coarse_albedo.shape[0], self.feature_dim):
                got = None if features is None else tuple(features.shape)
                raise ValueError(f"fine/refiners.py: use_faid=True needs features of shape "
                                 f"({coarse_albedo.shape[0]}, {self.feature_dim}), got {got}")
            faid_correction = self.faid_decoder(features)
        if mesh_correction is None:
            correction = faid_correction
        elif faid_correction is None:
            correction = mesh_correction
        elif self.fusion == "learned":
            weight = torch.sigmoid(self.fusion_logit)
            correction = weight * mesh_correction + (1 - weight) * faid_correction
        else:
            correction = 0.5 * (mesh_correction + faid_correction)
        return FineOutput(coarse_albedo + correction, mesh_correction, faid_correction)
