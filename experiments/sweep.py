"""Ablations (the paper's Table 2): train five variants on the same budget and seed, evaluate each the same way.

    python -m experiments.sweep [--quick] [--out reports/ablations] [--config YAML]      # make ablations [QUICK=1]
    python -m experiments.sweep --variants full,no_sa --stage1 checkpoints/default   # VARIANTS=full,no_sa STAGE1=...

Variants, in the paper's column order (each is the base config plus these overrides):
    photo_id  photo+id          losses.att = 0, losses.rob = 0, no self-augmentation (L_rob is what uses it)
    att       +att              losses.rob = 0, no self-augmentation
    full      +att+rob (full)   the base config
    no_sa     w/o SA            augment.feedback = false: I_rot and I_occ are rendered and L_rob compares them
                                with the input, but they are not fed back through the network
    no_fa     w/o FA            fine.use_attributes = false (the FAID vector holds identity features only)

Beyond Table 2, trained only when --variants names it (EXTRA_VARIANTS):
    no_sym    w/o symmetry      losses.albedo_symmetry = 0 (the embedded default's albedo symmetry prior off)

Stage 1 (warm start + coarse) does not depend on these switches' stage-2 parts, so it is trained once
(``fine.enabled: false``, into <checkpoints>/stage1) and its checkpoint files are copied into every variant's
checkpoint folder before that variant trains: experiments.train then resumes past stage 1 and only stage 2
(fine + self-augmentation) differs between variants. ``--stage1 DIR`` (``make ablations STAGE1=DIR``) takes
stage 1 from a finished run instead, e.g. ``checkpoints/default`` after ``make train``: its coarse.pt must
be trained for the same model and image size, and at least as many steps as the sweep's config asks. A variant
whose config is the one that run's stage 2 was trained under (its last.pt records the config and the perception
nets' SHA-1), typically ``full`` on the default config, is evaluated from that run's last.pt instead of trained.
With --quick and no --stage1, the base config's own run is reused when it has finished stage 1, since a
minutes-long stage 1 from random weights leaves nothing for the variants to differ on.

Resuming: a variant whose <out>/<variant>/metrics.json records the same config hash is finished and not
retrained. An interrupted variant resumes from its checkpoint folder (the training loop resumes). A
checkpoint folder written under another config (its sweep_config.json hash differs) is moved aside to
<folder>.stale and started again from stage 1; the old run stays there until the new one has finished and
been evaluated, then it is deleted (a variant's checkpoints are about 1 GB). The hash covers the resolved config
except names and folders, plus the stage-1 hash.

Writes <out>/<variant>/{metrics.json, report.md, report.html, grid.png, ...} (experiments.evaluate on the
SynthFaces test split) and <out>/metrics.json, report.md, report.html, ablations.png (experiments.report).
--quick is the CPU-sized version (QUICK_OVERRIDES: 64-px images, tens of steps per stage, small pools).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from fileio import write_json_atomically

STAGE1_NAME = "stage1"
SWEEP_CONFIG_FILE = "sweep_config.json"    # in a checkpoint folder: the hash it was trained under
STAGE1_DONE_FILE = "stage1_done.json"
STAGE1_FILES = ("warm_start.pt", "coarse.pt")  # what a variant folder is seeded with


@dataclass(frozen=True)
class Variant:
    """One Table-2 column: a name (folder), the paper's label, and nested config overrides."""

    name: str
    label: str
    overrides: dict = field(default_factory=dict)


_NO_SELF_AUGMENTATION = {"augment": {"pose": False, "occlusion": False}}
VARIANTS: tuple[Variant, ...] = (
    Variant("photo_id", "photo+id", {"losses": {"att": 0.0, "rob": 0.0}, **_NO_SELF_AUGMENTATION}),
    Variant("att", "+att", {"losses": {"rob": 0.0}, **_NO_SELF_AUGMENTATION}),
    Variant("full", "+att+rob (full)", {}),
    Variant("no_sa", "w/o SA", {"augment": {"feedback": False}}),
    Variant("no_fa", "w/o FA", {"fine": {"use_attributes": False}}),
)
# Switches of this implementation that are not in the paper's Table 2: trained only when --variants names them.
EXTRA_VARIANTS: tuple[Variant, ...] = (
    Variant("no_sym", "w/o symmetry", {"losses": {"albedo_symmetry": 0.0}}),
)


def variants_for(only: tuple[str, ...] | None) -> tuple[Variant, ...]:
    """Table 2's variants, plus the EXTRA_VARIANTS that `only` (the --variants names) asks for."""
    return VARIANTS + tuple(v for v in EXTRA_VARIANTS if only is not None and v.name in only)


# Minutes per variant on a 2-core CPU.
QUICK_OVERRIDES = {
    "data": {"image_size": 64, "val_size": 16},
    "coarse": {"steps": 40, "pool_size": 512, "warm_start": {"steps": 40, "pool_size": 128}},
    "fine": {"steps": 60},
    "train": {"eval_size": 0, "checkpoint_every": 20, "image_every": 20},  # the sweep evaluates each variant itself
}
QUICK_EVAL = {"limit": 64, "image_size": 64}
FULL_EVAL = {"limit": 256, "image_size": 224}
# Not part of what a variant computes (they only say where things go).
_UNHASHED = (("name",), ("train", "checkpoint_dir"), ("train", "log_dir"))


class SweepStopped(RuntimeError):
    """Training stopped early (Ctrl-C / SIGTERM); rerun the same command to resume."""


def merge(*dicts: dict) -> dict:
    """Nested dict merge, later wins."""
    out: dict = {}
    for extra in dicts:
        for key, value in extra.items():
            out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def config_hash(values: dict, *extra: str) -> str:
    """16 hex digits of the SHA-256 of a config (as a dict) without names and folders, plus extra strings."""
    trimmed = json.loads(json.dumps(values, default=str))
    for path in _UNHASHED:
        node = trimmed
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    text = json.dumps(trimmed, sort_keys=True) + "".join(extra)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _resolved(cfg) -> dict:
    from dataclasses import is_dataclass

    return asdict(cfg) if is_dataclass(cfg) else dict(cfg)


def _was_stopped(summary) -> bool:
    """True when a training summary (or any stage summary inside it) says it stopped early."""
    if isinstance(summary, dict):
        return bool(summary.get("stopped")) or any(_was_stopped(v) for v in summary.values() if isinstance(v, dict))
    return False


def _read_hash(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("config_hash")
    except (OSError, ValueError, AttributeError):
        return None


def _claim_folder(folder: Path, wanted_hash: str, seed_from: Path | None) -> None:
    """Make `folder` a checkpoint folder for `wanted_hash`: keep it when it already is one (resume), move it
    aside when another config wrote it, and start an empty one from seed_from's checkpoint files."""
    marker = folder / SWEEP_CONFIG_FILE
    if folder.is_dir() and any(folder.iterdir()):
        recorded = _read_hash(marker)
        if recorded == wanted_hash:
            return
        stale = folder.with_name(folder.name + ".stale")
        if stale.exists():
            shutil.rmtree(stale)
        folder.rename(stale)
        print(f"{folder}: trained under another config ({recorded}); moved to {stale}")
    folder.mkdir(parents=True, exist_ok=True)
    if seed_from is not None:
        for name in STAGE1_FILES:
            if (seed_from / name).is_file():
                shutil.copy2(seed_from / name, folder / name)
    write_json_atomically(marker, {"config_hash": wanted_hash})


def _drop_stale(folder: Path) -> None:
    """Delete the run `_claim_folder` moved aside for `folder`, once `folder`'s own run has finished."""
    stale = folder.with_name(folder.name + ".stale")
    if stale.is_dir():
        shutil.rmtree(stale)
        print(f"[sweep] {folder}: finished under the new config; deleted the old run in {stale}")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def reusable_stage1(folder: Path, cfg) -> str | None:
    """Why `folder` cannot seed stage 1 for `cfg`, or None when it can (a finished coarse.pt of the same model
    and image size, trained at least cfg.coarse.steps steps)."""
    from perception.training import CheckpointError, read_checkpoint
    from experiments.pipeline import CHECKPOINT_FORMAT

    path = folder / "coarse.pt"
    try:
        payload = read_checkpoint(path, CHECKPOINT_FORMAT)
    except CheckpointError as error:
        return str(error)
    trained = payload.get("config", {})
    if trained.get("model") != asdict(cfg.model):
        return f"{path}: trained for another morphable model ({trained.get('model')})"
    if trained.get("data", {}).get("image_size") != cfg.data.image_size:
        return f"{path}: trained at {trained.get('data', {}).get('image_size')} px, the sweep uses {cfg.data.image_size}"
    if int(payload.get("step", 0)) < cfg.coarse.steps:
        return f"{path}: only {payload.get('step')} of {cfg.coarse.steps} coarse steps trained; finish that run first"
    return None


def finished_stage2(folder: Path) -> dict | None:
    """What `reusable_variant` compares of folder/last.pt, read once: its path, steps, config hash and the perception
    nets' SHA-1 it recorded; None unless it holds a finished stage 2."""
    from experiments.pipeline import CHECKPOINT_FORMAT
    from perception.training import CheckpointError, read_checkpoint

    path = folder / "last.pt"
    try:
        payload = read_checkpoint(path, CHECKPOINT_FORMAT)
    except CheckpointError:
        return None
    if payload.get("stage") != "fine":
        return None
    return {"path": path, "step": int(payload.get("step", 0)), "config_hash": config_hash(payload.get("config") or {}),
            "inputs": {key: value for key, value in payload.items() if key.endswith("_net_sha1")}}


def reusable_variant(run: dict | None, cfg) -> Path | None:
    """The run's last.pt (`finished_stage2`) when it was trained under cfg itself (names and folders aside), for
    cfg's steps and with the perception nets cfg points at, so that the variant needs no training; else None. A
    finished `make train` is the full model of a sweep on its own config, for example."""
    from experiments.pipeline import file_sha1, fine_stage_inputs

    if run is None or run["step"] < cfg.fine.steps or run["config_hash"] != config_hash(_resolved(cfg)):
        return None
    if any(run["inputs"].get(key) != file_sha1(file) for key, file in fine_stage_inputs(cfg).items()):
        return None
    return run["path"]


def default_train(cfg) -> dict:
    from experiments.train import train

    return train(cfg)


def default_evaluate(cfg, checkpoint: Path, out_dir: Path, quick: bool) -> dict:
    """experiments.evaluate on the SynthFaces test split (QUICK_EVAL / FULL_EVAL sizes); returns the metrics."""
    from experiments.evaluate import run_evaluation
    from perception.training import resolve_device

    settings = QUICK_EVAL if quick else FULL_EVAL
    return run_evaluation("synthfaces", None, checkpoint, out_dir, settings["limit"], cfg,
                          resolve_device(cfg.train.device), synth_image_size=settings["image_size"])


def run_sweep(out_dir: str | Path = "reports/ablations", quick: bool = False,
              base_config: str | Path | None = "experiments/configs/default.yaml",
              checkpoint_root: str | Path | None = None, log_root: str | Path | None = None,
              variants: tuple[Variant, ...] = VARIANTS, train_fn: Callable | None = None,
              evaluate_fn: Callable | None = None, stage1_from: str | Path | None = None,
              only: tuple[str, ...] | None = None) -> dict:
    """Train (or resume, or skip) every variant, evaluate it, and write the comparison. Returns <out>/metrics.json.

    train_fn(cfg) -> summary dict (default experiments.train.train); evaluate_fn(cfg, checkpoint, out_dir, quick)
    -> metrics dict (default: experiments.evaluate on SynthFaces). stage1_from: a finished run's checkpoint folder
    to take stage 1 from (see the module doc). only: the names of the variants to train; the others enter the
    comparison only when <out> already holds their finished evaluation under the same config. Raises SweepStopped
    when training stopped early, stage1_from cannot be used, or `only` names an unknown variant.
    """
    from experiments.config import load_config
    from experiments.evaluate import git_commit, write_evaluation
    from experiments.report import write_ablation_report

    train_fn = train_fn or default_train
    evaluate_fn = evaluate_fn or default_evaluate
    out_dir = Path(out_dir)
    suffix = "ablations_quick" if quick else "ablations"
    checkpoint_root = Path(checkpoint_root or Path("checkpoints") / suffix)
    log_root = Path(log_root or Path("runs") / suffix)
    common = QUICK_OVERRIDES if quick else {}

    def folders(name: str) -> dict:
        return {"name": f"ablation_{name}", "train": {"checkpoint_dir": str(checkpoint_root / name),
                                                      "log_dir": str(log_root / name)}}

    stage1_overrides = merge(common, {"fine": {"enabled": False}}, folders(STAGE1_NAME))
    stage1_cfg = load_config(base_config, stage1_overrides)
    if stage1_from is not None:
        stage1_dir = Path(stage1_from)
        problem = reusable_stage1(stage1_dir, stage1_cfg)
        if problem:
            raise SweepStopped(f"--stage1 {stage1_dir}: {problem}")
        stage1_hash = _file_digest(stage1_dir / "coarse.pt")
        print(f"[sweep] stage 1: reused from {stage1_dir} (coarse.pt {stage1_hash})")
    else:
        stage1_hash = config_hash(_resolved(stage1_cfg))
        stage1_dir = checkpoint_root / STAGE1_NAME
        if _read_hash(stage1_dir / STAGE1_DONE_FILE) == stage1_hash:
            print(f"[sweep] stage 1: done ({stage1_dir})")
        else:
            print(f"[sweep] stage 1 (warm start + coarse), shared by every variant -> {stage1_dir}")
            _claim_folder(stage1_dir, stage1_hash, None)
            if _was_stopped(train_fn(stage1_cfg)):
                raise SweepStopped(f"stage 1 stopped early; its checkpoint is in {stage1_dir}; rerun to resume")
            write_json_atomically(stage1_dir / STAGE1_DONE_FILE, {"config_hash": stage1_hash})
            _drop_stale(stage1_dir)

    if only is not None:
        unknown = sorted(set(only) - {v.name for v in variants})
        if unknown or not only:
            raise SweepStopped(f"unknown variant(s) {', '.join(unknown) or '(none given)'}; "
                               f"choose from {', '.join(v.name for v in variants)}")
    # The --stage1 run's last.pt (300 MB) is read at most once, and only when a variant is about to be trained.
    finished_run = functools.cache(lambda: finished_stage2(stage1_dir) if stage1_from is not None else None)
    entries = {}
    for variant in variants:
        overrides = merge(common, variant.overrides, folders(variant.name))
        cfg = load_config(base_config, overrides)
        digest = config_hash(_resolved(cfg), stage1_hash)
        variant_out = out_dir / variant.name
        metrics_path = variant_out / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
        if metrics is not None and metrics.get("sweep", {}).get("config_hash") == digest:
            print(f"[sweep] {variant.name} ({variant.label}): finished, not retrained")
        elif only is not None and variant.name not in only:
            print(f"[sweep] {variant.name} ({variant.label}): not selected (--variants) and not finished; left out")
            continue
        else:
            checkpoint_dir = checkpoint_root / variant.name
            reused = reusable_variant(finished_run(), cfg)
            if reused is not None:
                print(f"[sweep] {variant.name} ({variant.label}): {reused} was trained under this variant's "
                      "config; evaluated, not trained again")
                checkpoint = reused
            else:
                print(f"[sweep] {variant.name} ({variant.label}): training stage 2")
                _claim_folder(checkpoint_dir, digest, stage1_dir)
                if _was_stopped(train_fn(cfg)):
                    raise SweepStopped(f"{variant.name} stopped early; its checkpoint is in {checkpoint_dir}; "
                                       "rerun to resume")
                checkpoint = checkpoint_dir / "last.pt"
            metrics = evaluate_fn(cfg, checkpoint, variant_out, quick)
            metrics["sweep"] = {"variant": variant.name, "label": variant.label, "config_hash": digest,
                                "overrides": variant.overrides, "quick": quick, "checkpoint": str(checkpoint)}
            write_evaluation(metrics, variant_out)
            if reused is None:
                _drop_stale(checkpoint_dir)
            metrics = json.loads(metrics_path.read_text())
        entries[variant.name] = {"label": variant.label, "config_hash": digest, "overrides": variant.overrides,
                                 "metrics": {k: metrics.get(k) for k in ("methods", "methods_absent", "identity_nets",
                                                                         "protocols", "samples_evaluated")}}
    settings = QUICK_EVAL if quick else FULL_EVAL
    summary = {"quick": quick, "commit": git_commit(), "stage1_hash": stage1_hash, "base_config": str(base_config),
               "stage1": str(stage1_dir),
               "evaluation": f"SynthFaces test, first {settings['limit']} samples at {settings['image_size']} px",
               "variants": entries}
    write_json_atomically(out_dir / "metrics.json", summary)
    write_ablation_report(out_dir)
    return summary


def own_finished_stage1(base_config: str | Path) -> Path | None:
    """The base config's own `make train` checkpoint folder when its stage 1 can seed a quick sweep, else None."""
    from experiments.config import load_config

    own_run = Path(load_config(base_config).train.checkpoint_dir)
    quick_stage1 = load_config(base_config, merge(QUICK_OVERRIDES, {"fine": {"enabled": False}}))
    return own_run if reusable_stage1(own_run, quick_stage1) is None else None


def main(argv: list[str] | None = None) -> int:
    from experiments.config import ConfigError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU-sized: 64 px, tens of steps per stage")
    parser.add_argument("--out", default="reports/ablations")
    parser.add_argument("--config", default="experiments/configs/default.yaml", help="base config")
    parser.add_argument("--checkpoints", default=None,
                        help="checkpoint root (default checkpoints/ablations, or checkpoints/ablations_quick)")
    parser.add_argument("--stage1", default=None,
                        help="take stage 1 from this finished run's checkpoint folder (e.g. checkpoints/default)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated subset to train, e.g. full,no_sa (default: all of "
                             + ",".join(v.name for v in VARIANTS) + "; also "
                             + ",".join(v.name for v in EXTRA_VARIANTS) + ", only when named)")
    args = parser.parse_args(argv)
    try:
        stage1 = args.stage1 or (own_finished_stage1(args.config) if args.quick else None)
        only = tuple(n.strip() for n in args.variants.split(",") if n.strip()) if args.variants is not None else None
        run_sweep(args.out, args.quick, args.config, args.checkpoints, variants=variants_for(only), stage1_from=stage1,
                  only=only)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (SweepStopped, KeyboardInterrupt) as error:
        print(f"\n{error or 'interrupted'}; rerun the same command to resume", file=sys.stderr)
        return 130
    print(f"wrote {args.out}/metrics.json, {args.out}/report.md, {args.out}/report.html, {args.out}/ablations.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
