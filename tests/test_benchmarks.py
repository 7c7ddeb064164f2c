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


def test_cuda_entries_survive_a_cpu_run_and_merge_in_from_a_gpu_machine(tmp_path, monkeypatch):
    import json

    from benchmarks import run as bench_run

    (tmp_path / "bench").mkdir()
    monkeypatch.setattr(bench_run, "ROOT", tmp_path / "bench")
    (tmp_path / "BENCHMARKS.md").write_text(f"# B\n\nabove\n{TABLE_START}\nold\n{TABLE_END}\nbelow\n")
    cpu = dict(entry("coarse_step_ms", 900.0, "ms", device="cpu"), module="train")
    old_gpu = dict(entry("fine_step_ms_cuda", 500.0, "ms", device="cuda"), module="train_cuda")
    bench_run.write_results({"cpu": "x"}, [cpu, old_gpu])
    # A CPU-only machine re-running train_cuda keeps the earlier GPU entries; a GPU machine replaces them.
    kept = bench_run.kept_results(tmp_path / "bench" / "results.json", {"train", "train_cuda"}, cuda=False)
    assert kept == [old_gpu]
    assert bench_run.kept_results(tmp_path / "bench" / "results.json", {"train", "train_cuda"}, cuda=True) == []
    gpu_machine = tmp_path / "gpu.json"
    new_gpu = dict(entry("fine_step_ms_cuda", 350.0, "ms", device="cuda"), module="train_cuda")
    gpu_machine.write_text(json.dumps({"machine": {"torch": "2.11.0+cu130", "gpu": "NVIDIA H200", "cores": 16},
                                       "results": [dict(cpu, value=300.0), new_gpu]}))
    bench_run.merge_cuda_entries(gpu_machine)
    merged = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert merged["machine"] == {"cpu": "x"}
    assert [(r["name"], r["value"]) for r in merged["results"]] == [("coarse_step_ms", 900.0), ("fine_step_ms_cuda", 350.0)]
    assert merged["results"][1]["config"] == {"torch": "2.11.0+cu130", "gpu": "NVIDIA H200", "device": "cuda"}
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "above" in text and "below" in text and "old" not in text and "| fine_step_ms_cuda | 350.0 |" in text


def test_gpu_training_benchmark_times_whole_steps_and_measures_nothing_without_a_gpu():
    """CI has no GPU, so the module's step-building and timing run here on the CPU at a tiny size."""
    from benchmarks import bench_train_cuda
    from experiments.config import load_config

    if not torch.cuda.is_available():
        assert bench_train_cuda.run(quick=True) == []
    found = bench_train_cuda._case(load_config("experiments/configs/default.yaml"), "tiny", 48, 2, 41, 1,
                                   torch.device("cpu"))
    names = [r["name"] for r in found]
    for name in ("coarse_step_ms_cuda", "fine_step_ms_cuda", "fine_it_per_s_cuda", "fine_over_coarse_step_cuda"):
        assert names.count(name) == 2, name  # fp32 and TF32
    assert all(r["value"] > 0 for r in found)
    assert {r["config"]["vertices"] for r in found} == {1681}


def test_alternating_timer_calls_the_functions_in_turn_and_returns_each_ones_median():
    import time

    from benchmarks.timing import alternating_median_ms

    calls = []

    def sleeper(name, seconds):
        def run():
            calls.append(name)
            time.sleep(seconds)
        return run

    ms = alternating_median_ms({"short": sleeper("short", 0.002), "long": sleeper("long", 0.02)}, repeats=3, warmup=1)
    assert calls == ["short", "long"] * 4  # one untimed round, then three timed ones, alternating
    assert set(ms) == {"short", "long"}
    assert 2 <= ms["short"] < ms["long"] and ms["long"] >= 20
