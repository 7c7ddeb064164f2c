"""Fine stage: mesh hierarchy, Chebyshev residual blocks, mesh-wise refiner, FAID decoder, fusion.

Imports nothing of ours: meshes, albedos and feature vectors come in as tensors.
"""
from fine.chebyshev_block import ChebResidualBlock, LaplacianChebConv, scaled_laplacian
from fine.mesh_graph import (MeshHierarchy, build_mesh_hierarchy, connected_components,
                             edge_index_from_triangles)
from fine.refiners import FAIDDecoder, FineOutput, FineStage, MeshRefiner

__all__ = [
    "ChebResidualBlock", "LaplacianChebConv", "scaled_laplacian", "MeshHierarchy", "build_mesh_hierarchy",
    "connected_components", "edge_index_from_triangles", "FAIDDecoder", "FineOutput", "FineStage",
    "MeshRefiner",
]
