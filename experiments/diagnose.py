"""Where the held-out error comes from: SynthFaces' ground truth swapped into a trained pipeline's prediction.

    python -m experiments.diagnose [--checkpoint checkpoints/default/last.pt] [--limit 128] [--out reports/diagnosis]
    make diagnose

On SynthFaces every true coefficient is known, so each coefficient group of the prediction (pose,
translation, identity, expression, albedo, light) can be replaced by the truth, one at a time:
- "group true": the error left when only that group is fixed (how much fixing it would gain);
- "only group predicted": the error that group causes on its own (everything else true).
Both for the 68-point landmark error and the face-region PSNR of the coarse render (PCA albedo),
computed as the held-out table computes them (clean protocol, the val split at 224 px).

The albedo section scores the mean, coarse and fine albedos as they are and after the least-squares gain per
face and colour channel, and gives the floor that the light/albedo ambiguity puts under any method: Lambertian
shading shows only the product of the albedo and the light, so a face's albedo brightness can be told only
as far as the photo's colour predicts it. The floor is the error of an oracle that knows the true albedo's
pattern and has to guess only its gain per channel, with the best log-linear predictor from the face's mean
colour, fitted on `--fit-faces` SynthFaces train faces (never on the faces it is scored on).
It also scores what the mesh-wise refiner reads: the photo unwrapped onto the vertices (divided by the shading),
through the predicted geometry and light and through the true ones.

The identity section splits the identity's share: the landmark error of the truth with only the first k
identity modes true and the rest at the mean (the modes are ordered by size, so this says how many of them a
regressor must get right to reach a landmark error), and the regressor's correlation with the truth per mode.

Writes diagnosis.json, report.md and diagnosis.png to --out.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from coarse import coefficients as C
from coarse.face_model import assemble_face, compute_albedo, project_landmarks
from experiments import metrics as M
from experiments.evaluate import git_commit, load_pipeline, paste, synthfaces_test_set
from fileio import write_bytes_atomically, write_json_atomically, write_text_atomically

GROUPS = {"pose": C.ANGLE, "translation": C.TRANS, "identity": C.ID, "expression": C.EXP, "albedo": C.TEX,
          "light": C.GAMMA}
DEFAULT_CHECKPOINT = "checkpoints/default/last.pt"
TARGETS = {"landmarks_px": 3.0, "psnr_db": 24.0}  # issue #7's targets for the coarse stage, drawn on the plot
IMAGE_SIZE = 224
IDENTITY_MODES = (0, 1, 2, 3, 5, 10, 20, 40, C.N_ID)  # "first k identity modes true" rows
CORRELATED_MODES = 10  # per-mode correlation reported for the first this many identity modes


class DiagnosisError(RuntimeError):
    """A diagnosis that cannot run (no checkpoint, no ground truth); the message says what to do."""


def with_true(predicted: torch.Tensor, true: torch.Tensor, groups) -> torch.Tensor:
    """(B, 257) predicted coefficients with the named groups replaced by the true ones."""
    mixed = predicted.clone()
    for name in groups:
        mixed[:, GROUPS[name]] = true[:, GROUPS[name]]
    return mixed


def best_gain(predicted: torch.Tensor, true: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """predicted scaled by the least-squares gain per face and channel over the visible vertices.

    predicted, true: (B, N, 3); visible: (B, N) bool. Returns (B, N, 3) = g * predicted,
    g = sum(p t) / sum(p^2) over visible vertices (1 where none is visible).
    """
    w = visible.unsqueeze(-1).to(predicted.dtype)
    num, den = (predicted * true * w).sum(1), (predicted * predicted * w).sum(1)
    gain = torch.where(den > 0, num / den.clamp(min=1e-12), torch.ones_like(den))
    return predicted * gain.unsqueeze(1)


def visible_means(values: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) per-vertex values -> (B, 3) their mean over the visible vertices (NaN where none is)."""
    w = visible.unsqueeze(-1).to(values.dtype)
    return (values * w).sum(1) / w.sum(1)


class GainPredictor:
    """The best log-linear guess of a face's mean albedo per channel from its mean colour (albedo x shading).

    log A_c = a_c + sum_d b_cd log P_d, fitted by least squares. Colours are clamped to >= 0.01 before the log
    (a face lit from behind can have a negative mean SH shading in a channel).
    """

    FLOOR = 1e-2

    def __init__(self, coefficients: torch.Tensor):
        self.coefficients = coefficients  # (4, 3): intercepts, then the 3x3 slopes

    @classmethod
    def fit(cls, mean_albedo: torch.Tensor, mean_colour: torch.Tensor) -> "GainPredictor":
        """mean_albedo, mean_colour: (F, 3) per face; faces with a non-finite value (nothing visible) are left out."""
        keep = torch.isfinite(mean_albedo).all(1) & torch.isfinite(mean_colour).all(1)
        if int(keep.sum()) < 8:
            raise DiagnosisError(f"the gain predictor needs at least 8 faces with visible skin, got {int(keep.sum())}; "
                                 "raise --fit-faces")
        x = torch.cat([torch.ones(int(keep.sum()), 1, dtype=torch.float64),
                       mean_colour[keep].double().clamp(min=cls.FLOOR).log()], 1)
        y = mean_albedo[keep].double().clamp(min=cls.FLOOR).log()
        return cls(torch.linalg.lstsq(x, y, driver="gelsd").solution.float())

    def __call__(self, mean_colour: torch.Tensor) -> torch.Tensor:
        """(B, 3) mean colours -> (B, 3) guessed mean albedos."""
        logs = mean_colour.float().clamp(min=self.FLOOR).log()
        return (self.coefficients[0] + logs @ self.coefficients[1:]).exp()


# The photo unwrapped onto the vertices (divided by the shading) as the mesh-wise refiner reads it, through the
# prediction's geometry and light and through the true ones: how good stage 2's input is, and how much of its
# error the coarse geometry puts there.
UNWRAPPED = {"unwrapped_predicted": "the photo unwrapped through the predicted shape, pose and light",
             "unwrapped_true": "the photo unwrapped through the true shape, pose and light"}


def unwrapped_albedos(pipeline, image: torch.Tensor, prediction, true: torch.Tensor,
                      skin: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """{UNWRAPPED key: (B, N, 3)} the photo divided by the shading at the vertices it sees, read as the mesh-wise
    refiner reads it (`FacePipeline.read_photo`), the predicted coarse albedo where it sees nothing; once with the
    predicted coefficients (light as `predict` gives it), once with the true ones. skin: the parsing net's mask of
    image, when the caller has it."""
    skin = pipeline.skin(image, skin) if pipeline.refine_reads_skin else None  # the parsing net once, for both
    found = {}
    for key, coeffs in zip(UNWRAPPED, (prediction.coeffs.float(), true)):
        observed, seen = pipeline.read_photo(image, coeffs, skin)
        found[key] = torch.where(seen > 0, observed, prediction.coarse_albedo)
    return found


def _truth(model, batch: dict) -> tuple:
    face = assemble_face(model, batch["coeffs"], IMAGE_SIZE)
    visible = M.visible_vertices(face.vertices, face.normals, face.screen, model.triangles, model.skin_mask, IMAGE_SIZE)
    colour = batch["albedo"] * face.shading
    return visible, visible_means(batch["albedo"], visible), visible_means(colour, visible)


def _batches(dataset, count: int, batch_size: int, progress: bool, label: str):
    from data.samples import collate_face_samples

    with tqdm(total=count, desc=label, disable=not progress, leave=False) as bar:
        for start in range(0, count, batch_size):
            samples = [dataset[i] for i in range(start, min(count, start + batch_size))]
            bar.update(len(samples))
            yield collate_face_samples(samples)


def first_modes_true(true: torch.Tensor, k: int) -> torch.Tensor:
    """(B, 257) true coefficients with identity modes k.. set to the mean (0): only the first k modes true."""
    coeffs = true.clone()
    coeffs[:, C.ID.start + k:C.ID.stop] = 0
    return coeffs


def mode_correlations(predicted: torch.Tensor, true: torch.Tensor) -> list[float]:
    """Pearson correlation per column of (N, K) predicted and true values (NaN where either is constant)."""
    p, t = predicted - predicted.mean(0), true - true.mean(0)
    denominator = (p.square().sum(0) * t.square().sum(0)).sqrt()
    return ((p * t).sum(0) / denominator).tolist()


def _mean(values: list[float]) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


@torch.no_grad()
def fit_gain_predictor(model, fit_set, count: int, batch_size: int = 32, progress: bool = True) -> GainPredictor:
    """Fit GainPredictor on the first `count` faces of fit_set (true albedo and shading, visible skin only)."""
    albedos, colours = [], []
    for batch in _batches(fit_set, count, batch_size, progress, "gain fit"):
        _, albedo, colour = _truth(model, batch)
        albedos.append(albedo)
        colours.append(colour)
    return GainPredictor.fit(torch.cat(albedos), torch.cat(colours))


@torch.no_grad()
def diagnose(pipeline, dataset, gain: GainPredictor, limit: int, batch_size: int = 8, progress: bool = True) -> dict:
    """Score `pipeline` on the first `limit` faces of a SynthFaces set (clean images) with groups swapped.

    gain: (B, 3) mean face colours -> (B, 3) guessed mean albedos (a GainPredictor) for the oracle floor.

    Returns {"landmarks_px": {row: mean}, "psnr_db": {row: mean}, "albedo": {...}, "identity": {...},
    "samples": n}; rows are "predicted", "true", "<group> true" and "only <group> predicted" per GROUPS.
    identity: "first_modes_true_landmarks_px" {k: the truth's landmark error with only the first k identity modes
    true} and "correlation" (per identity mode, the regressor's prediction against the truth).
    """
    model = pipeline.model
    rows = {"predicted": [], "true": list(GROUPS)}  # row -> the groups taken from the truth
    for name in GROUPS:
        rows[f"{name} true"] = [name]
        rows[f"only {name} predicted"] = [g for g in GROUPS if g != name]
    landmarks = {row: [] for row in rows}
    psnr = {row: [] for row in rows}
    albedo = {key: [] for name in ("mean_face", "coarse", "fine", *UNWRAPPED) for key in (name, f"{name}_gain")}
    albedo["oracle_gain_floor"] = []
    first_modes = {k: [] for k in IDENTITY_MODES}
    identities = {"predicted": [], "true": []}
    count = 0
    for batch in _batches(dataset, limit, batch_size, progress, "diagnose"):
        if batch.get("coeffs") is None or batch.get("albedo") is None:
            raise DiagnosisError("the data set has no true coefficients; the diagnosis runs on SynthFaces only")
        image = batch["clean_image"] if batch.get("clean_image") is not None else batch["image"]
        skin = pipeline.skin(image)  # the parsing net's mask, once: the light solve and the unwrapped rows read it
        prediction = pipeline.predict(image, skin=skin)
        true = batch["coeffs"].float()
        for row, groups in rows.items():
            coeffs = with_true(prediction.coeffs.float(), true, groups)
            rendered = pipeline.render(coeffs, None, IMAGE_SIZE)
            landmarks[row] += M.landmark_error_px(rendered.landmarks68, batch["landmarks68"], IMAGE_SIZE).tolist()
            pasted = paste(rendered, image)
            region = rendered.mask * batch["face_mask"] if batch.get("face_mask") is not None else rendered.mask
            psnr[row] += M.image_metrics(image, pasted, region)["psnr_face_db"].tolist()
        for k in IDENTITY_MODES:
            landmarks68 = project_landmarks(model, first_modes_true(true, k), IMAGE_SIZE) - 0.5  # as the render's
            first_modes[k] += M.landmark_error_px(landmarks68, batch["landmarks68"], IMAGE_SIZE).tolist()
        identities["predicted"].append(prediction.coeffs[:, C.ID].float())
        identities["true"].append(true[:, C.ID])
        visible, true_mean, colour_mean = _truth(model, batch)
        estimates = {"mean_face": compute_albedo(model, torch.zeros_like(true[:, C.TEX])),
                     "coarse": prediction.coarse_albedo}
        if prediction.fine_albedo is not None:
            estimates["fine"] = prediction.fine_albedo
        estimates.update(unwrapped_albedos(pipeline, image, prediction, true, skin))
        for name, estimate in estimates.items():
            estimate = estimate.expand_as(batch["albedo"]).clamp(0, 1)
            albedo[name] += M.albedo_error(estimate, batch["albedo"], visible).tolist()
            albedo[f"{name}_gain"] += M.albedo_error(best_gain(estimate, batch["albedo"], visible), batch["albedo"],
                                                     visible).tolist()
        guessed = gain(colour_mean)
        oracle = batch["albedo"] * (guessed / true_mean).nan_to_num(1.0).unsqueeze(1)
        albedo["oracle_gain_floor"] += M.albedo_error(oracle, batch["albedo"], visible).tolist()
        count += image.shape[0]
    return {"landmarks_px": {k: _mean(v) for k, v in landmarks.items()},
            "psnr_db": {k: _mean(v) for k, v in psnr.items()},
            "albedo": {k: _mean(v) for k, v in albedo.items() if v},
            "identity": {"first_modes_true_landmarks_px": {str(k): _mean(v) for k, v in first_modes.items()},
                         "correlation": mode_correlations(torch.cat(identities["predicted"]),
                                                          torch.cat(identities["true"]))},
            "gain_predictor": getattr(gain, "coefficients", torch.empty(0)).tolist(), "samples": count}


def _correlation_line(correlation: list[float]) -> str:
    if not np.isfinite(correlation).any():
        return "The regressor predicts the same identity for every face: no correlation with the truth."
    shown = ", ".join("–" if not np.isfinite(c) else f"{c:.2f}" for c in correlation[:CORRELATED_MODES])
    return (f"The regressor's correlation with the truth, modes 1-{CORRELATED_MODES}: {shown}; "
            f"mean over all {len(correlation)}: {_mean(correlation):.2f}.")


def markdown(result: dict) -> str:
    lines = ["# Where the held-out error comes from", "",
             f"checkpoint: `{result.get('checkpoint', '?')}` · SynthFaces {result.get('split', 'val')}, "
             f"first {result['samples']} faces, clean, {IMAGE_SIZE} px · gain predictor fitted on "
             f"{result.get('fit_faces', '?')} train faces · commit {result.get('commit') or '?'}", "",
             "## Coefficient groups (coarse render, PCA albedo)", "",
             "| group | landmarks px, group true | landmarks px, only group predicted | PSNR dB, group true "
             "| PSNR dB, only group predicted |", "|---|---:|---:|---:|---:|"]
    lm, ps = result["landmarks_px"], result["psnr_db"]
    lines.append(f"| none true (the prediction) | {lm['predicted']:.2f} | | {ps['predicted']:.2f} | |")
    for name in GROUPS:
        lines.append(f"| {name} | {lm[f'{name} true']:.2f} | {lm[f'only {name} predicted']:.2f} | "
                     f"{ps[f'{name} true']:.2f} | {ps[f'only {name} predicted']:.2f} |")
    lines.append(f"| all true | {lm['true']:.2f} | | {ps['true']:.2f} | |")
    al = result["albedo"]
    lines += ["", "## Albedo (MAE over visible skin vertices)", "",
              "| albedo | as predicted | after the least-squares gain per face and channel |", "|---|---:|---:|"]
    for name, label in (("mean_face", "mean face"), ("coarse", "coarse (PCA)"), ("fine", "fine"), *UNWRAPPED.items()):
        if name in al:
            lines.append(f"| {label} | {al[name]:.4f} | {al[f'{name}_gain']:.4f} |")
    lines += [f"| oracle: true pattern, gain guessed from the face's mean colour | {al['oracle_gain_floor']:.4f} | |",
              "", "The oracle knows the true albedo's pattern and only guesses how the face's brightness splits "
              "between albedo and light, from the face's mean colour (a log-linear law fitted on train faces). A method "
              "that must also find the pattern is not expected to beat it: read it as a floor for the first column."]
    if "coarse" in al:
        lines.append(f"Floor / coarse: {al['oracle_gain_floor'] / al['coarse']:.2f}.")
    if "unwrapped_true" in al:
        lines += ["", "The unwrapped rows are what the mesh-wise refiner reads (the photo divided by the shading at "
                  "the vertices it sees, at the regressor's input size; the coarse albedo elsewhere). Through the true "
                  "geometry and light they bound what reading the photo can give at that size; through the "
                  "predicted ones, the error the coarse geometry and light put into stage 2's input."]
    identity = result.get("identity")
    if identity:
        budget, correlation = identity["first_modes_true_landmarks_px"], identity["correlation"]
        lines += ["", "## Identity: how many of its modes must be right", "",
                  "Landmark error of the truth with only the first k identity modes true and the rest at the mean "
                  "(pose, expression, translation true): the identity's share of the landmark error if a regressor "
                  "got exactly those modes right.", "",
                  "| first k modes true | " + " | ".join(budget) + " |", "|---|" + "---:|" * len(budget),
                  "| landmarks px | " + " | ".join(f"{v:.2f}" for v in budget.values()) + " |", "",
                  _correlation_line(correlation)]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(GROUPS)
    identity = result.get("identity")
    figure, axes = plt.subplots(1, 3 if identity else 2, figsize=(15 if identity else 10, 3.6))
    for axis, key, label in ((axes[0], "landmarks_px", "68-pt landmark error (px @224)"),
                             (axes[1], "psnr_db", "face PSNR (dB)")):
        values = result[key]
        x = np.arange(len(names))
        axis.bar(x - 0.2, [values[f"{n} true"] for n in names], 0.4, label="group true, rest predicted")
        axis.bar(x + 0.2, [values[f"only {n} predicted"] for n in names], 0.4, label="only group predicted")
        axis.axhline(values["predicted"], color="k", lw=1, ls="--", label="all predicted")
        axis.axhline(TARGETS[key], color="C3", lw=1, ls=":", label="target (#7)")
        if key == "psnr_db":
            shown = [values[f"{n} true"] for n in names] + [values[f"only {n} predicted"] for n in names]
            axis.set_ylim(min(shown + [TARGETS[key]]) - 2, max(shown) + 1)
        axis.set_xticks(x, names, rotation=20)
        axis.set_title(label, fontsize=10)
        axis.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    if identity:
        budget = identity["first_modes_true_landmarks_px"]
        modes = [int(k) for k in budget]
        axes[2].plot(modes, list(budget.values()), "o-", label="truth, first k identity modes true, rest mean")
        axes[2].axhline(result["landmarks_px"]["only identity predicted"], color="k", lw=1, ls="--",
                        label="truth with the predicted identity")
        axes[2].axhline(TARGETS["landmarks_px"], color="C3", lw=1, ls=":", label="target (#7), whole error")
        axes[2].set_xscale("symlog", linthresh=1)
        axes[2].set_xlim(-0.1, modes[-1] * 1.15)
        axes[2].set_xticks(modes, [str(m) for m in modes])
        axes[2].set_xlabel("identity modes true (k)")
        axes[2].set_title("identity's share of the landmark error (px @224)", fontsize=10)
        axes[2].grid(alpha=0.3)
        axes[2].legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return write_bytes_atomically(path, buffer.getvalue())


def write_diagnosis(result: dict, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out_dir / "diagnosis.json", result, indent=1)
    plot(result, out_dir / "diagnosis.png")
    return write_text_atomically(out_dir / "report.md", markdown(result) + "\n![groups](diagnosis.png)\n")


def main(argv: list[str] | None = None) -> int:
    from experiments.config import ConfigError, load_config
    from perception.training import CheckpointError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--config", default="experiments/configs/default.yaml")
    parser.add_argument("--limit", type=int, default=128, help="val faces scored (the held-out table's 128)")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--fit-faces", type=int, default=512, help="train faces the gain predictor is fitted on")
    parser.add_argument("--out", default="reports/diagnosis")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        if cfg.data.dataset != "synthfaces":
            raise DiagnosisError(f"{args.config}: data set '{cfg.data.dataset}' has no true coefficients; the "
                                 "diagnosis runs on SynthFaces (the embedded default)")
        if not Path(args.checkpoint).is_file():
            raise DiagnosisError(f"{args.checkpoint}: no checkpoint; run `make train` first or pass --checkpoint")
        pipeline = load_pipeline(args.checkpoint, torch.device("cpu"), cfg.model.bfm)
        model = pipeline.model
        fit_set = synthfaces_test_set(model, size=args.fit_faces, image_size=IMAGE_SIZE, seed=cfg.data.synth_seed,
                                      split="train")
        gain = fit_gain_predictor(model, fit_set, args.fit_faces, progress=not args.no_progress)
        dataset = synthfaces_test_set(model, size=args.limit, image_size=IMAGE_SIZE, seed=cfg.data.synth_seed,
                                      split=args.split)
        result = diagnose(pipeline, dataset, gain, args.limit, args.batch_size, progress=not args.no_progress)
    except (DiagnosisError, ConfigError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result.update(checkpoint=str(args.checkpoint), split=args.split, fit_faces=args.fit_faces, commit=git_commit())
    path = write_diagnosis(result, args.out)
    print(markdown(result))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
