"""experiments.sweep: shared stage 1, resume, no retraining of finished variants (fast stand-in training)."""
import json
from pathlib import Path

import pytest

from experiments import sweep as S

VARIANTS = S.VARIANTS[:2]  # photo_id, att


class FakeTraining:
    """Stands in for experiments.train.train: writes stage files into cfg.train.checkpoint_dir.

    `stop_once`: variant names whose first call stops early (as Ctrl-C would), leaving a partial checkpoint.
    """

    def __init__(self, stop_once=()):
        self.calls: list[tuple[str, bool]] = []  # (config name, resumed from a partial checkpoint)
        self.stop_once = set(stop_once)

    def __call__(self, cfg) -> dict:
        folder = Path(cfg.train.checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        resumed = (folder / "fine.partial").is_file()
        self.calls.append((cfg.name, resumed))
        if not cfg.fine.enabled:
            for stage in ("warm_start", "coarse", "last"):
                (folder / f"{stage}.pt").write_text("stage 1")
            return {"stopped": False}
        assert (folder / "coarse.pt").read_text() == "stage 1", "stage 1 was not copied in"
        if cfg.name in self.stop_once:
            self.stop_once.discard(cfg.name)
            (folder / "fine.partial").write_text("half")
            return {"fine": {"step": 3, "stopped": True}}
        (folder / "last.pt").write_text(f"fine att={cfg.losses.att} rob={cfg.losses.rob}")
        return {"fine": {"step": cfg.fine.steps, "stopped": False}}


def fake_evaluate(cfg, checkpoint, out_dir, quick):
    assert Path(checkpoint).read_text().startswith("fine"), "evaluated before stage 2 finished"
    psnr = 20.0 + 100 * cfg.losses.att
    fields = {"psnr_face_db": {"mean": psnr, "std": 0.5, "count": 4}, "ssim_face": {"mean": 0.8, "std": 0.01, "count": 4},
              "id_cosine_dlib": {"mean": 0.9, "std": 0.02, "count": 4}}
    return {"methods": ["mean_face", "coarse", "fine"], "methods_absent": {}, "identity_nets": ["dlib"],
            "samples_evaluated": 4, "protocols": {"clean": {"fine": fields}, "occluded": {"fine": fields}}}


def _run(tmp_path, training, variants=VARIANTS):
    return S.run_sweep(tmp_path / "reports", quick=True, base_config=None, checkpoint_root=tmp_path / "ck",
                       log_root=tmp_path / "runs", variants=variants, train_fn=training, evaluate_fn=fake_evaluate)


def test_an_interrupted_sweep_resumes_without_retraining_finished_parts(tmp_path):
    training = FakeTraining(stop_once={"ablation_att"})
    with pytest.raises(S.SweepStopped, match="att stopped early"):
        _run(tmp_path, training)
    assert (tmp_path / "reports" / "photo_id" / "metrics.json").is_file()
    assert not (tmp_path / "reports" / "att" / "metrics.json").exists()

    summary = _run(tmp_path, training)
    assert training.calls == [("ablation_stage1", False), ("ablation_photo_id", False), ("ablation_att", False),
                              ("ablation_att", True)]
    assert list(summary["variants"]) == ["photo_id", "att"]
    recorded = json.loads((tmp_path / "reports" / "att" / "metrics.json").read_text())["sweep"]
    assert recorded["config_hash"] == summary["variants"]["att"]["config_hash"] != summary["variants"]["photo_id"]["config_hash"]

    _run(tmp_path, training)
    assert len(training.calls) == 4  # everything finished: nothing retrained

    report = (tmp_path / "reports" / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| metric"))
    assert header.index("photo+id") < header.index("+att")
    assert "20.00 ± 0.50" in report and "20.50 ± 0.50" in report  # att = 0 vs 0.005
    assert (tmp_path / "reports" / "ablations.png").stat().st_size > 0
    assert 'src="ablations.png"' in (tmp_path / "reports" / "report.html").read_text()


def test_a_variant_whose_config_changed_is_retrained_from_stage_one(tmp_path):
    training = FakeTraining()
    _run(tmp_path, training, VARIANTS[:1])
    changed = (S.Variant("photo_id", "photo+id", {"losses": {"att": 0.0, "rob": 0.0, "id": 0.1}}),)
    training.stop_once = {"ablation_photo_id"}
    with pytest.raises(S.SweepStopped):
        _run(tmp_path, training, changed)
    # The old run is kept while the new one is unfinished ...
    assert (tmp_path / "ck" / "photo_id.stale" / "last.pt").read_text().startswith("fine att=0.0")
    assert (tmp_path / "ck" / "photo_id" / "coarse.pt").read_text() == "stage 1"
    _run(tmp_path, training, changed)
    assert [name for name, _ in training.calls] == ["ablation_stage1"] + ["ablation_photo_id"] * 3
    # ... and deleted once the new one has finished and been evaluated.
    assert not (tmp_path / "ck" / "photo_id.stale").exists()
    assert (tmp_path / "ck" / "photo_id" / "last.pt").is_file()


def test_variants_follow_the_papers_column_order_and_switches():
    assert [v.label for v in S.VARIANTS] == ["photo+id", "+att", "+att+rob (full)", "w/o SA", "w/o FA"]
    by_name = {v.name: v.overrides for v in S.VARIANTS}
    assert by_name["photo_id"]["losses"] == {"att": 0.0, "rob": 0.0}
    assert by_name["no_sa"] == {"augment": {"feedback": False}} and by_name["full"] == {}
    assert by_name["no_fa"] == {"fine": {"use_attributes": False}}


def test_the_symmetry_variant_is_trained_only_when_named_and_turns_the_default_prior_off():
    assert S.variants_for(None) == S.VARIANTS and S.variants_for(("full", "no_sa")) == S.VARIANTS
    chosen = S.variants_for(("full", "no_sym"))
    assert chosen[:-1] == S.VARIANTS and chosen[-1].name == "no_sym"
    from experiments.config import load_config

    default = load_config("experiments/configs/default.yaml")
    variant = load_config("experiments/configs/default.yaml", chosen[-1].overrides)
    assert default.losses.albedo_symmetry > 0 and variant.losses.albedo_symmetry == 0


def test_config_hash_ignores_names_and_folders_but_not_settings():
    base = {"name": "a", "train": {"checkpoint_dir": "x", "log_dir": "y", "seed": 0}, "losses": {"att": 0.005}}
    moved = {"name": "b", "train": {"checkpoint_dir": "z", "log_dir": "w", "seed": 0}, "losses": {"att": 0.005}}
    other = {"name": "a", "train": {"checkpoint_dir": "x", "log_dir": "y", "seed": 1}, "losses": {"att": 0.005}}
    assert S.config_hash(base) == S.config_hash(moved) != S.config_hash(other)
    assert S.config_hash(base, "stage1") != S.config_hash(base)


def _finished_run(folder: Path, image_size: int = 64, coarse_steps: int = 400) -> Path:
    """A `make train` checkpoint folder whose stage 1 is done (tiny stand-in weights, real checkpoint format)."""
    from dataclasses import asdict

    from experiments.config import load_config
    from experiments.pipeline import CHECKPOINT_FORMAT
    from perception.training import save_checkpoint_atomic

    cfg = load_config(None, {"data": {"image_size": image_size}})
    for stage, steps in (("warm_start", 10), ("coarse", coarse_steps), ("fine", 5)):
        save_checkpoint_atomic({"format": CHECKPOINT_FORMAT, "stage": stage, "step": steps, "config": asdict(cfg),
                                "regressor": {}}, folder / f"{stage}.pt")
    return folder


def test_a_sweep_can_take_stage_one_from_a_finished_run(tmp_path):
    run = _finished_run(tmp_path / "default")

    def training(cfg):
        assert cfg.fine.enabled, "stage 1 was trained although it was given"
        folder = Path(cfg.train.checkpoint_dir)
        assert (folder / "coarse.pt").read_bytes() == (run / "coarse.pt").read_bytes()
        assert not (folder / "fine.pt").exists(), "the source run's stage 2 leaked into the variant"
        (folder / "last.pt").write_text("fine")
        return {"fine": {"step": cfg.fine.steps, "stopped": False}}

    summary = S.run_sweep(tmp_path / "reports", quick=True, base_config=None, checkpoint_root=tmp_path / "ck",
                          log_root=tmp_path / "runs", variants=VARIANTS[:1], train_fn=training,
                          evaluate_fn=fake_evaluate, stage1_from=run)
    assert summary["stage1"] == str(run) and not (tmp_path / "ck" / "stage1").exists()


def test_a_run_of_another_image_size_or_unfinished_is_refused_as_stage_one(tmp_path):
    for folder, problem in ((_finished_run(tmp_path / "big", image_size=224), "trained at 224 px"),
                            (_finished_run(tmp_path / "short", coarse_steps=3), "finish that run first"),
                            (tmp_path / "missing", "no such checkpoint")):
        with pytest.raises(S.SweepStopped, match=problem):
            S.run_sweep(tmp_path / "reports", quick=True, base_config=None, checkpoint_root=tmp_path / "ck",
                        variants=VARIANTS[:1], train_fn=None, evaluate_fn=fake_evaluate, stage1_from=folder)


def test_the_variant_a_finished_run_was_trained_as_is_evaluated_from_it_not_trained_again(tmp_path):
    from dataclasses import asdict

    import yaml

    from experiments.config import load_config
    from experiments.pipeline import CHECKPOINT_FORMAT, file_sha1
    from perception.training import save_checkpoint_atomic

    for net in ("attr.pt", "parsing.pt"):
        (tmp_path / net).write_bytes(net.encode())
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"perception": {"attributes_checkpoint": str(tmp_path / "attr.pt"),
                                                   "parsing_checkpoint": str(tmp_path / "parsing.pt")}}))
    cfg = load_config(base, {"train": {"checkpoint_dir": str(tmp_path / "default")}})
    run = tmp_path / "default"
    nets = {"attribute_net_sha1": file_sha1(tmp_path / "attr.pt"), "parsing_net_sha1": file_sha1(tmp_path / "parsing.pt")}
    for stage, steps in (("warm_start", cfg.coarse.warm_start.steps), ("coarse", cfg.coarse.steps),
                         ("last", cfg.fine.steps)):
        save_checkpoint_atomic({"format": CHECKPOINT_FORMAT, "stage": "fine" if stage == "last" else stage,
                                "step": steps, "config": asdict(cfg), **nets}, run / f"{stage}.pt")
    trained, evaluated = [], []

    def training(cfg):
        trained.append(cfg.name)
        (Path(cfg.train.checkpoint_dir) / "last.pt").write_text("fine")
        return {"fine": {"step": cfg.fine.steps, "stopped": False}}

    def evaluate(cfg, checkpoint, out_dir, quick):
        evaluated.append((cfg.name, Path(checkpoint)))
        return fake_evaluate(cfg, tmp_path / "fine.txt", out_dir, quick)

    (tmp_path / "fine.txt").write_text("fine")
    sweep = dict(quick=False, base_config=base, checkpoint_root=tmp_path / "ck", log_root=tmp_path / "runs",
                 variants=S.VARIANTS, train_fn=training, evaluate_fn=evaluate, stage1_from=run)
    summary = S.run_sweep(tmp_path / "reports", only=("full", "no_sa"), **sweep)
    assert trained == ["ablation_no_sa"]  # full is the finished run's own config
    assert evaluated == [("ablation_full", run / "last.pt"), ("ablation_no_sa", tmp_path / "ck" / "no_sa" / "last.pt")]
    assert set(summary["variants"]) == {"full", "no_sa"} and not (tmp_path / "ck" / "full").exists()

    (tmp_path / "attr.pt").write_bytes(b"retrained")  # the run's FAID branch read other attribute features
    S.run_sweep(tmp_path / "reports2", only=("full",), **sweep)
    assert trained == ["ablation_no_sa", "ablation_full"]


def test_variants_trains_only_the_named_ones_and_keeps_finished_others_in_the_table(tmp_path):
    training = FakeTraining()
    first = S.run_sweep(tmp_path / "reports", quick=True, base_config=None, checkpoint_root=tmp_path / "ck",
                        log_root=tmp_path / "runs", variants=S.VARIANTS, train_fn=training,
                        evaluate_fn=fake_evaluate, only=("photo_id",))
    assert list(first["variants"]) == ["photo_id"]
    assert [name for name, _ in training.calls] == ["ablation_stage1", "ablation_photo_id"]

    second = S.run_sweep(tmp_path / "reports", quick=True, base_config=None, checkpoint_root=tmp_path / "ck",
                         log_root=tmp_path / "runs", variants=S.VARIANTS, train_fn=training,
                         evaluate_fn=fake_evaluate, only=("no_fa",))
    assert list(second["variants"]) == ["photo_id", "no_fa"]  # photo_id finished earlier: kept, not retrained
    assert [name for name, _ in training.calls] == ["ablation_stage1", "ablation_photo_id", "ablation_no_fa"]

    with pytest.raises(S.SweepStopped, match="unknown variant"):
        S.run_sweep(tmp_path / "reports", quick=True, base_config=None, checkpoint_root=tmp_path / "ck",
                    variants=S.VARIANTS, train_fn=training, evaluate_fn=fake_evaluate, only=("fulll",))


def _write_variant(folder: Path, index: list[int], psnr: list[float | None]) -> None:
    folder.mkdir(parents=True)
    values = {"psnr_face_db": psnr, "ssim_face": [0.5] * len(psnr)}
    (folder / "samples.json").write_text(json.dumps({"index": index, "values": {"clean": {"fine": values}}}))


def test_the_ablation_report_pairs_each_variant_with_full_over_the_same_faces(tmp_path):
    from experiments.report import paired_differences, write_ablation_report

    fields = {"psnr_face_db": {"mean": 20.0, "std": 1.0, "count": 4}}
    entry = {"metrics": {"methods": ["mean_face", "coarse", "fine"], "protocols": {"clean": {"fine": fields}}}}
    ablation = {"quick": True, "variants": {name: {"label": label, **entry} for name, label in
                                            (("full", "full"), ("no_sa", "w/o SA"), ("att", "+att"))}}
    (tmp_path / "metrics.json").write_text(json.dumps(ablation))
    _write_variant(tmp_path / "full", [0, 1, 2, 3], [21.0, 22.0, 23.0, None])
    _write_variant(tmp_path / "no_sa", [0, 1, 2, 3], [20.0, 21.5, 21.0, 30.0])
    _write_variant(tmp_path / "att", [0, 1, 2, 5], [20.0, 20.0, 20.0, 20.0])  # other faces: not comparable
    header, rows = paired_differences(ablation, tmp_path)
    assert header == ["metric", "full − +att", "full − w/o SA"]
    psnr = next(row for row in rows if row[0] == "clean: PSNR face (dB)")
    # differences 1.0, 0.5, 2.0 (the fourth face has no value for full): mean 1.1667, sd 0.7638, se 0.441
    assert psnr[1] == "–" and psnr[2] == "+1.17 ± 0.44"
    ssim = next(row for row in rows if row[0] == "clean: SSIM face")
    assert ssim[2] == "+0.000 ± 0.000"
    write_ablation_report(tmp_path)
    assert "Paired differences" in (tmp_path / "report.md").read_text()
    del ablation["variants"]["full"]
    assert paired_differences(ablation, tmp_path) is None
