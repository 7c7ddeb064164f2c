import torch

from benchmarks.bench_render import BFM_VERTICES, bfm_sized_face_surface
from benchmarks.run import TABLE_END, TABLE_START, markdown_table
from benchmarks.timing import entry


def test_bfm_sized_surface_has_bfm_counts_and_faces_the_camera():
    verts, tris = bfm_sized_face_surface()
    assert verts.shape == (BFM_VERTICES, 3)
    assert 65_000 < tris.shape[0] < 72_000 and int(tris.max()) < BFM_VERTICES
    v0, v1, v2 = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    normals_z = torch.cross(v1 - v0, v2 - v0, dim=-1)[:, 2]
    assert (normals_z > 0).float().mean() > 0.95  # counter-clockwise seen from the camera (+z)


def test_results_table_lists_every_entry_with_its_unit():
    rows = [entry("raster_fwd_bwd_ms_per_image", 12.3456789, "ms", device="cpu", batch=8),
            entry("raster_over_resnet50", 0.4, "ratio", device="cpu")]
    table = markdown_table(rows)
    assert "| raster_fwd_bwd_ms_per_image | 12.3457 | ms | cpu | batch=8 |" in table
    assert table.count("\n") == 3 and TABLE_START != TABLE_END
