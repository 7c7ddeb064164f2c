"""Evaluate a checkpoint on a data set's test split: the paper's Table 1 and what ground truth allows.

    python -m experiments.evaluate --dataset synthfaces                     # make eval-synth
    python -m experiments.evaluate --dataset celeba --root CELEBA_DIR      # make eval-celeba CELEBA_DIR=...
    python -m experiments.evaluate --dataset aflw2000 --root AFLW_DIR      # make eval-aflw AFLW_DIR=...
        [--checkpoint checkpoints/default/last.pt] [--out reports/<dataset>] [--limit N] [--config YAML]

Methods (rows): ``mean_face`` (FacePipeline.mean_face: the untrained baseline), ``coarse`` (the predicted
coefficients with their PCA albedo) and ``fine`` (the GCN-refined albedo; when the checkpoint has no fine
stage the report says "not in this checkpoint"). Protocols: ``clean`` (the input is the clean image) and
``occluded`` (the paper's: the input carries a synthetic occluder and is scored against the clean image).
SynthFaces' occluded inputs are its own occluded ``image`` (occlusion probability 1); on photos an occluder
from ``augment.occluders`` is pasted, drawn from a generator seeded by (seed, sample index), so every run and
every checkpoint sees the same occluders.

Scoring (see experiments.metrics for the exact settings): each method's render is pasted into the clean
reference image (render where the render mask is set, the reference elsewhere), so clean and occluded
numbers differ only through what the network saw. PSNR and SSIM are computed over the face region (render
mask ∩ face mask) and over the whole crop. The face mask is SynthFaces' true face-skin mask, or on photos
the parsing net's skin mask of the clean photo (``perception.parsing_checkpoint``; without it, the render
mask alone, and the report says so). ID cosine compares the identity embeddings of the clean reference and
the pasted render, per identity net present (dlib always, FaceNet when its weights file exists).
SynthFaces adds the albedo error on visible skin vertices, the 68-point landmark and head-pose errors, and
ID consistency: the renders of one identity's views (4 per identity, over mid-grey) against other
identities'. AFLW2000 adds the 68-point NME in |yaw| bins.

Outputs in --out: metrics.json (per protocol, method and metric: mean, std, count), samples.json (per
sample values, for plots), grid.png, and report.md / report.html with plots (experiments.report).
Photos that cannot be read or have no face are counted and listed, not fatal.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from augment.occluders import occlude
from coarse import coefficients as C
from coarse.face_model import assemble_face
from data.align import ALIGNED, AlignmentCache
from fileio import write_json_atomically
from data.images import UnreadableImageError
from data.image_folder import DatasetLayoutError, DatasetNotPreparedError
from data.synthfaces import SynthFaces, SynthFacesConfig
from experiments import metrics as M
from render.image_io import contact_sheet, save_png

METHODS = ("mean_face", "coarse", "fine")
PROTOCOLS = ("clean", "occluded")
DATASETS = ("synthfaces", "celeba", "aflw2000")
DEFAULT_CHECKPOINT = "checkpoints/default/last.pt"
SYNTH_IMAGE_SIZE = C.REFERENCE_IMAGE_SIZE
SYNTH_VIEWS_PER_IDENTITY = 4       # views per identity: enough pairs for ID consistency, 64 identities in 256
SYNTH_DEFAULT_LIMIT = 256          # make eval-synth: a few minutes on a 2-core CPU
NOVEL_VIEW_YAWS_DEG = (-45.0, 45.0)
GREY = 0.5                         # background of the renders the ID-consistency metric embeds
GRID_ROWS = 6
PROTOCOL_NOTES = {
    "clean": "input = clean image; reference = the same image",
    "occluded": "input = clean image with a synthetic occluder; reference = the clean image",
}
NOT_IN_CHECKPOINT = "not in this checkpoint"


class EvaluationError(RuntimeError):
    """An evaluation that cannot start (one line for the user)."""


# ----------------------------------------------------------------------------------------- data sets

def synthfaces_test_set(model, size: int, image_size: int = SYNTH_IMAGE_SIZE, seed: int = 0,
                        views_per_identity: int = SYNTH_VIEWS_PER_IDENTITY, split: str = "test") -> SynthFaces:
    """SynthFaces for evaluation (the test split, or "val" for the held-out table during training): every sample
    occluded (its clean_image is the clean protocol's input) and `views_per_identity` consecutive samples per
    identity."""
    config = SynthFacesConfig(image_size=image_size, occlusion_prob=1.0, views_per_identity=views_per_identity)
    return SynthFaces(split, size=size, seed=seed, config=config, model=model)


def photo_test_set(kind: str, root: str | Path, limit: int | None = None, detector=None,
                   progress: bool = True) -> tuple[Dataset, list[dict]]:
    """The aligned test photos of CelebA ("celeba", list_eval_partition's split 2) or AFLW2000 ("aflw2000").

    The first `limit` test photos (sorted by name) are detected and aligned with data.prepare's cache
    (reused when present, extended otherwise). Returns (data set of the aligned ones, failures: one
    {"path", "status", "reason"} per photo that could not be read or has no face).
    Raises DatasetLayoutError (one line saying what to download) when root is not the data set.
    """
    from data import aflw2000, celeba
    from data.prepare import prepare_alignment

    root = Path(root).expanduser()
    if kind == "celeba":
        image_dir = celeba.find_image_dir(root)
        partition_path = root / celeba.PARTITION_FILE
        if not partition_path.is_file():
            raise DatasetLayoutError(f"{partition_path}: file not found, needed for the test split; "
                                     f"{celeba.DOWNLOAD_HINT}")
        paths = [f"{image_dir}/{name}" for name, split in sorted(celeba.read_partition(partition_path).items())
                 if split == "test"]
        fallback, name = None, "CelebA"
    elif kind == "aflw2000":
        paths = aflw2000.list_aflw_images(root)
        fallback, name = (lambda relative: aflw2000.annotated_landmarks5(root, relative)), "AFLW2000"
    else:
        raise ValueError(f"unknown photo data set '{kind}'; use celeba or aflw2000")
    if not paths:
        raise DatasetLayoutError(f"{root}: no {name} test photos listed")
    paths = paths[:limit] if limit else paths
    summary = prepare_alignment(root, paths, detector, fallback_landmarks5=fallback, progress=progress,
                                dataset_name=name)
    cache = AlignmentCache.load(summary.cache_path)
    failures = [{"path": p, "status": cache.entries[p].status, "reason": cache.entries[p].reason}
                for p in paths if cache.entries[p].status != ALIGNED]
    wanted = {p for p in paths if cache.entries[p].status == ALIGNED}
    if not wanted:
        raise DatasetLayoutError(f"{root}: none of {len(paths)} {name} test photos has a face "
                                 f"({len(failures)} unreadable or without a face; see {summary.cache_path})")
    quiet = logging.getLogger("data.image_folder")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it would warn that the photos beyond `limit` are not aligned: on purpose
    try:
        if kind == "celeba":
            dataset = celeba.CelebAFaces(root, "test", cache_path=summary.cache_path)
        else:
            dataset = aflw2000.AFLW2000Faces(root, cache_path=summary.cache_path)
    finally:
        quiet.setLevel(level)
    indices = [i for i, path in enumerate(dataset.relative_paths) if path in wanted]
    # AFLW2000 leaves out photos whose .mat is unreadable: count those too.
    kept = {dataset.relative_paths[i] for i in indices}
    failures += [{"path": p, "status": "unreadable", "reason": "annotation unreadable"} for p in sorted(wanted - kept)]
    return Subset(dataset, indices), failures


class _Guarded(Dataset):
    """(index, sample or None, failure or None): a photo that fails to load is reported, not raised."""

    def __init__(self, dataset: Dataset, count: int):
        self.dataset, self.count = dataset, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        try:
            return index, self.dataset[index], None
        except (UnreadableImageError, DatasetLayoutError, OSError, ValueError) as error:
            return index, None, {"path": _path_of(self.dataset, index), "status": "unreadable", "reason": str(error)}


def _path_of(dataset: Dataset, index: int) -> str:
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, dataset.indices[index]
    paths = getattr(dataset, "relative_paths", None)
    return str(paths[index]) if paths is not None else f"#{index}"


def _unwrap(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


# ----------------------------------------------------------------------------------------- core

def _stack(samples: list[dict], key: str) -> torch.Tensor | None:
    if all(key in s and isinstance(s[key], torch.Tensor) for s in samples):
        return torch.stack([s[key] for s in samples])
    return None


def paste(rendered, reference: torch.Tensor) -> torch.Tensor:
    """The render where it covers, the reference elsewhere; (B, 3, S, S) in [0, 1]."""
    return (rendered.image * rendered.mask + reference * (1 - rendered.mask)).clamp(0, 1)


def _render(pipeline, coeffs: torch.Tensor, albedo: torch.Tensor, size: int):
    return pipeline.render(coeffs, albedo, size, background=None)


def _occluded_inputs(batch: dict, indices: list[int], seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The occluded protocol's inputs and occluder alpha (B, 1, S, S)."""
    if batch.get("clean_image") is not None:  # SynthFaces: its own occluded image
        alpha = batch.get("occluder_mask")
        return batch["image"], alpha if alpha is not None else torch.zeros_like(batch["image"][:, :1])
    images, alphas = [], []
    for k, index in enumerate(indices):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        landmarks = batch["landmarks5"][k:k + 1] + 0.5 if batch.get("landmarks5") is not None else None
        image, alpha = occlude(batch["image"][k:k + 1], generator, landmarks, p=1.0)
        images.append(image)
        alphas.append(alpha)
    return torch.cat(images), torch.cat(alphas)


def _yaw_deg(batch: dict, fallback_coeffs: torch.Tensor) -> tuple[np.ndarray, str]:
    if batch.get("coeffs") is not None:
        return np.degrees(batch["coeffs"][:, C.ANGLE.start + 1].double().numpy()), "true"
    if batch.get("head_pose") is not None:  # AFLW2000: pitch, yaw, roll
        return np.degrees(batch["head_pose"][:, 1].double().numpy()), "true"
    return np.degrees(fallback_coeffs[:, C.ANGLE.start + 1].double().cpu().numpy()), "predicted"


def _novel_views(pipeline, coeffs: torch.Tensor, albedo: torch.Tensor, size: int) -> list[torch.Tensor]:
    views = []
    for yaw in NOVEL_VIEW_YAWS_DEG:
        turned = coeffs.clone()
        turned[:, C.ANGLE.start + 1] = math.radians(yaw)
        rendered = _render(pipeline, turned, albedo, size)
        views.append((rendered.image * rendered.mask + GREY * (1 - rendered.mask)).clamp(0, 1).cpu())
    return views


class _MeanFacePredictor:
    """The mean-face baseline's predictions. FacePipeline.mean_face ignores its input (zero heads), so once two
    different images gave identical predictions, the first is reused for every image: this saves a ResNet-50
    forward per image and protocol. A baseline that does depend on its input keeps being run."""

    def __init__(self, pipeline):
        self.pipeline, self.constant, self.checked = pipeline, None, False

    def predict(self, images: torch.Tensor):
        b = images.shape[0]
        if self.constant is not None:
            c = self.constant
            return dataclasses.replace(c, coeffs=c.coeffs.expand(b, -1), coarse_albedo=c.coarse_albedo.expand(b, -1, -1))
        prediction = self.pipeline.predict(images)
        if not self.checked and b >= 2 and not torch.equal(images[0], images[1]):
            self.checked = True
            if torch.equal(prediction.coeffs[0], prediction.coeffs[1]):
                self.constant = dataclasses.replace(prediction, coeffs=prediction.coeffs[:1],
                                                    coarse_albedo=prediction.coarse_albedo[:1], fine_albedo=None,
                                                    features=None)
        return prediction


@torch.no_grad()
def evaluate_pipeline(pipeline, dataset: Dataset, *, identity_nets: dict[str, torch.nn.Module] | None = None,
                      parsing_net=None, limit: int | None = None, batch_size: int = 8,
                      protocols: tuple[str, ...] = PROTOCOLS, occlusion_seed: int = 0, grid_rows: int = GRID_ROWS,
                      out_dir: str | Path | None = None, failures: list[dict] | None = None,
                      num_workers: int = 0, progress: bool = True) -> dict:
    """Score a FacePipeline's methods on a data set (the core of experiments.evaluate; train.py calls it too).

    pipeline: an experiments.pipeline.FacePipeline (its mean_face classmethod gives the baseline row).
    dataset: samples as data.samples describes: SynthFaces (ground truth: clean_image, face_mask, coeffs,
        albedo, landmarks68, identity) or aligned photos (CelebAFaces, AFLW2000Faces, a Subset of them).
        Use `synthfaces_test_set` for SynthFaces (occlusion probability 1, several views per identity).
    identity_nets: {name: IdentityNet} (unit embeddings of aligned crops); None or {} skips ID metrics.
    parsing_net: perception.parsing.ParsingNet for the face mask of photos (SynthFaces uses its true mask);
        None: the face region is the render mask alone.
    limit: evaluate the first `limit` samples (default all). out_dir: when given, grid.png is written there.
    failures: photos already known to be unusable (from alignment), merged into the result's list.
    The "coarse" row uses the pipeline's own coefficients with their PCA albedo (after stage 2 these come from
    the jointly trained regressor; evaluate the stage-1 checkpoint for a coarse-only model).
    Runs under torch.no_grad in eval mode and restores the pipeline's train/eval mode afterwards.
    Returns the metrics.json content (JSON-able): protocols -> method -> metric -> {mean, std, count}, plus
    "samples" (per-sample values for plots; evaluate.write_evaluation moves it to samples.json).
    """
    started = time.time()
    identity_nets = dict(identity_nets or {})
    count = len(dataset) if limit is None else min(limit, len(dataset))
    size_hint = None
    methods = [m for m in METHODS if m != "fine" or getattr(pipeline, "has_fine", False)]
    device = next((p.device for p in pipeline.parameters()), torch.device("cpu"))
    mean_pipeline = _MeanFacePredictor(type(pipeline).mean_face(pipeline.model, pipeline.input_size).to(device))
    was_training = pipeline.training
    pipeline.eval()
    model = pipeline.model
    # CelebA's landmarks68 are dlib's predictions, not ground truth: no landmark metrics on them.
    landmarks_are_truth = not getattr(_unwrap(dataset), "uses_predicted_landmarks68", False)
    values: dict[str, dict[str, dict[str, list]]] = {p: {m: {} for m in methods} for p in protocols}
    embeddings = {p: {m: {n: [] for n in identity_nets} for m in ("input", *methods)} for p in protocols}
    per_sample: dict[str, Any] = {"index": [], "path": [], "identity": [], "yaw_deg": [],
                                  "occluded_fraction": {p: [] for p in protocols}}
    yaw_source, face_region = "true", None
    grid: list[list[torch.Tensor]] = []
    failures = list(failures or [])

    loader = DataLoader(_Guarded(dataset, count), batch_size=batch_size, collate_fn=list, num_workers=num_workers)
    bar = tqdm(total=count, desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True)
    for items in loader:
        bar.update(len(items))
        failures += [failure for _, sample, failure in items if failure is not None]
        good = [(index, sample) for index, sample, _ in items if sample is not None]
        if not good:
            continue
        indices = [index for index, _ in good]
        samples = [sample for _, sample in good]
        batch = {key: _stack(samples, key) for key in ("image", "clean_image", "face_mask", "occluder_mask", "coeffs",
                                                        "albedo", "landmarks68", "landmarks5", "head_pose")}
        reference = batch["clean_image"] if batch["clean_image"] is not None else batch["image"]
        size = reference.shape[-1]
        size_hint = size
        reference_device = reference.to(device)
        # The face mask of the reference image (before any render mask is applied).
        if batch["face_mask"] is not None:
            base_region, face_region = batch["face_mask"], "render mask ∩ SynthFaces' true face-skin mask"
        elif parsing_net is not None:
            from losses import skin_mask
            base_region = (skin_mask(parsing_net, reference_device).cpu() >= M.MASK_THRESHOLD).float()
            face_region = "render mask ∩ parsing-net skin mask of the clean photo"
        else:
            base_region, face_region = None, "render mask only (no parsing net checkpoint)"
        reference_embedding = {n: net(reference_device) for n, net in identity_nets.items()}
        truth = None
        if batch["coeffs"] is not None:
            true_face = assemble_face(model, batch["coeffs"].to(device), size)
            truth = M.visible_vertices(true_face.vertices, true_face.normals, true_face.screen, model.triangles,
                                       model.skin_mask, size)
        per_sample["index"] += indices
        per_sample["path"] += [s.get("path", f"#{i}") for i, s in zip(indices, samples)]
        per_sample["identity"] += [int(s["identity"]) if "identity" in s else None for s in samples]
        grid_take = max(0, min(grid_rows - len(grid), len(samples)))
        row_visuals: list[list[torch.Tensor]] = [[] for _ in range(grid_take)]

        for protocol in protocols:
            if protocol == "clean":
                inputs, alpha = reference, torch.zeros_like(reference[:, :1])
            else:
                inputs, alpha = _occluded_inputs(batch, indices, occlusion_seed, size)
            inputs_device = inputs.to(device)
            predictions = {"mean_face": mean_pipeline.predict(inputs_device)}
            trained = pipeline.predict(inputs_device)
            predictions["coarse"] = predictions["fine"] = trained
            for name, net in identity_nets.items():
                embeddings[protocol]["input"][name].append(net(inputs_device).cpu())
            rendered_masks = {}
            for method in methods:
                prediction = predictions[method]
                albedo = prediction.albedo("fine" if method == "fine" else "coarse")
                rendered = _render(pipeline, prediction.coeffs, albedo, size)
                rendered_masks[method] = rendered.mask.cpu()
                pasted = paste(rendered, reference_device)
                region = rendered.mask.cpu() if base_region is None else rendered.mask.cpu() * base_region
                found = M.image_metrics(reference, pasted.cpu(), region)
                for name, net in identity_nets.items():
                    found[f"id_cosine_{name}"] = M.embedding_cosine(net(pasted), reference_embedding[name]).reshape(-1)
                    if batch["coeffs"] is not None:
                        grey = (rendered.image * rendered.mask + GREY * (1 - rendered.mask)).clamp(0, 1)
                        embeddings[protocol][method][name].append(net(grey).cpu())
                if batch["landmarks68"] is not None and landmarks_are_truth:
                    true_landmarks = batch["landmarks68"].to(device)
                    found["landmark_error_px"] = M.landmark_error_px(rendered.landmarks68, true_landmarks, size)
                    found["nme"] = M.nme_bbox(rendered.landmarks68, true_landmarks)
                if batch["coeffs"] is not None:
                    found.update(M.pose_errors_deg(prediction.coeffs[:, C.ANGLE], batch["coeffs"][:, C.ANGLE].to(device)))
                    found["albedo_error"] = M.albedo_error(albedo, batch["albedo"].to(device), truth)
                for key, array in found.items():
                    values[protocol][method].setdefault(key, []).extend(np.asarray(array, dtype=np.float64).tolist())
                for k in range(grid_take):
                    if protocol == "clean":
                        row_visuals[k].append(pasted[k].cpu())
                    elif method == methods[-1]:
                        row_visuals[k] += [inputs[k].cpu(), pasted[k].cpu()]
                if protocol == "clean" and method == methods[-1] and grid_take:
                    views = _novel_views(pipeline, prediction.coeffs[:grid_take], albedo[:grid_take], size)
                    for k in range(grid_take):
                        row_visuals[k] += [view[k] for view in views]
            # How much of the face the occluder covers (the face mask, else the coarse render mask).
            area = base_region if base_region is not None else rendered_masks["coarse"]
            covered = ((alpha.cpu() >= M.MASK_THRESHOLD).float() * area).flatten(1).sum(1)
            fraction = (covered / area.flatten(1).sum(1).clamp(min=1)).double().numpy()
            per_sample["occluded_fraction"][protocol] += fraction.tolist()
            if protocol == protocols[0]:
                yaw, yaw_source = _yaw_deg(batch, trained.coeffs)
                per_sample["yaw_deg"] += yaw.tolist()
        for k in range(grid_take):
            # Appended as renders | novel views | occluded input, reconstruction; shown as grid_labels says.
            clean_part = row_visuals[k][:len(methods) + len(NOVEL_VIEW_YAWS_DEG)]
            occluded_part = row_visuals[k][len(methods) + len(NOVEL_VIEW_YAWS_DEG):]
            renders, views = clean_part[:len(methods)], clean_part[len(methods):]
            grid.append([reference[k], *renders, *occluded_part, *views])
    bar.close()
    pipeline.train(was_training)  # a caller that is training gets its mode back

    evaluated = len(per_sample["index"])
    result: dict[str, Any] = {
        "dataset": type(_unwrap(dataset)).__name__,
        "samples_evaluated": evaluated,
        "samples_requested": count,
        "image_size": size_hint,
        "methods": methods,
        "methods_absent": {} if "fine" in methods else {"fine": NOT_IN_CHECKPOINT},
        "identity_nets": sorted(identity_nets),
        "protocols_evaluated": list(protocols),
        "protocol_notes": {p: PROTOCOL_NOTES[p] for p in protocols},
        "face_region": face_region,
        "yaw_source": yaw_source,
        "settings": M.SETTINGS,
        "seconds": round(time.time() - started, 1),
        "protocols": {},
        "input_id_consistency": {},
        "failures": {"count": len(failures), "unreadable": sum(f["status"] == "unreadable" for f in failures),
                     "no_face": sum(f["status"] == "no_face" for f in failures), "items": failures},
    }
    yaw = np.asarray(per_sample["yaw_deg"], dtype=np.float64)
    bins = M.yaw_bins(yaw) if yaw_source == "true" else {}
    identities = per_sample["identity"]
    consistency = evaluated and identities[0] is not None and len(set(identities)) < len(identities)
    for protocol in protocols:
        table = result["protocols"][protocol] = {}
        for method in methods:
            table[method] = {key: M.summarise(array) for key, array in values[protocol][method].items()}
            if "nme" in values[protocol][method] and bins:
                nme = np.asarray(values[protocol][method]["nme"])
                bin_means = []
                for name, members in bins.items():
                    table[method][f"nme_{name}"] = M.summarise(nme[members])
                    if table[method][f"nme_{name}"]["count"]:
                        bin_means.append(table[method][f"nme_{name}"]["mean"])
                table[method]["nme_balanced"] = M.summarise(bin_means)
        if consistency:
            for row in ("input", *methods):
                fields = {}
                for name in identity_nets:
                    found = M.id_consistency(torch.cat(embeddings[protocol][row][name]), identities) \
                        if embeddings[protocol][row][name] else {"same": [], "different": []}
                    fields[f"id_consistency_same_{name}"] = M.summarise(found["same"])
                    fields[f"id_consistency_different_{name}"] = M.summarise(found["different"])
                if row == "input":
                    result["input_id_consistency"][protocol] = fields
                else:
                    table[row].update(fields)
    result["samples"] = {**per_sample, "values": values}
    if out_dir is not None and grid:
        result["images"] = {"grid": save_grid(grid, methods, Path(out_dir) / "grid.png").name}
    return result


def grid_labels(methods: list[str], occluded: bool = True) -> list[str]:
    """Column labels of grid.png, in its order."""
    return (["input", *[m.replace("_", " ") for m in methods]] + (["occluded in", "recon (occl.)"] if occluded else [])
            + [f"yaw {yaw:+.0f}" for yaw in NOVEL_VIEW_YAWS_DEG])


def save_grid(rows: list[list[torch.Tensor]], methods: list[str], path: Path) -> Path:
    """One row per sample (see grid_labels), labels on the first row."""
    from PIL import Image

    columns = len(rows[0])
    labels = grid_labels(methods, occluded=columns == len(grid_labels(methods)))
    header = contact_sheet(rows[0], columns=columns, labels=labels)
    if len(rows) == 1:
        return save_png(header, path)
    rest = contact_sheet([tile for row in rows[1:] for tile in row], columns=columns)  # unlabelled
    sheet = Image.new("RGB", (header.width, header.height + rest.height), (255, 255, 255))
    sheet.paste(header, (0, 0))
    sheet.paste(rest, (0, header.height))
    return save_png(sheet, path)


# ----------------------------------------------------------------------------------------- files and CLI

def _json_ready(value):
    """NaN / inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_evaluation(result: dict, out_dir: str | Path) -> Path:
    """Write metrics.json (and samples.json with the per-sample values) into out_dir; returns metrics.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {k: v for k, v in result.items() if k != "samples"}
    if "samples" in result:
        write_json_atomically(out_dir / "samples.json", _json_ready(result["samples"]))
        metrics["samples_file"] = "samples.json"
    write_json_atomically(out_dir / "metrics.json", _json_ready(metrics))
    for name in ("metrics.json", "samples.json", "grid.png"):
        if (out_dir / name).is_file():
            (out_dir / name).chmod(0o644)  # atomic writers create private files; reports are meant to be read
    return out_dir / "metrics.json"


def git_commit() -> str | None:
    """HEAD of the repository this file is in, or None outside git."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None if found.returncode == 0 else None


def checkpoint_config(pipeline, path: str | Path) -> dict | None:
    """The training config stored with a checkpoint (pipeline.config, else the file's "config" entry)."""
    config = getattr(pipeline, "config", None)
    if config is not None:
        from dataclasses import asdict, is_dataclass
        return asdict(config) if is_dataclass(config) else config
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - only a report field; the pipeline already loaded the file
        return None
    return payload.get("config") if isinstance(payload, dict) else None


def load_pipeline(path: str | Path, device: torch.device, bfm: str | None):
    """FacePipeline.from_checkpoint (separate so tests can substitute a small pipeline)."""
    from experiments.pipeline import FacePipeline

    return FacePipeline.from_checkpoint(path, device=device, bfm=bfm)


def load_identity_nets(cfg, device) -> tuple[dict, dict[str, str]]:
    """dlib always; FaceNet when its weights file exists. Returns (nets, {absent net: why})."""
    from perception.facenet import MissingWeightsError
    from perception.identity import build_identity_net

    nets = {"dlib": build_identity_net("dlib", device=device).eval()}
    absent = {}
    try:
        nets["facenet"] = build_identity_net("facenet", cfg.perception.facenet_weights, device=device).eval()
    except MissingWeightsError as error:
        absent["facenet"] = str(error).splitlines()[0]
    return nets, absent


def load_parsing(cfg, device):
    """The parsing net for photos' face masks, or None (with the reason) when its checkpoint is missing."""
    from perception.parsing import load_parsing_net
    from perception.training import CheckpointError

    path = Path(cfg.perception.parsing_checkpoint)
    if not path.is_file():
        return None, f"{path} not found (make parsing-net); face region = render mask only"
    try:
        return load_parsing_net(path, device).eval(), None
    except CheckpointError as error:
        return None, f"{error}; face region = render mask only"


def run_evaluation(dataset_name: str, root: str | None, checkpoint: str | Path, out_dir: str | Path,
                   limit: int | None, cfg, device: torch.device, batch_size: int = 8, progress: bool = True,
                   synth_image_size: int = SYNTH_IMAGE_SIZE, flip_average: bool | None = None) -> dict:
    """What the CLI does: check the data, load the checkpoint and nets, evaluate, write metrics and report.

    limit: first N test samples (None: SYNTH_DEFAULT_LIMIT on SynthFaces, every photo otherwise).
    synth_image_size: SynthFaces' render size (224; the quick ablation sweep uses its training size).
    flip_average: also read each photo's mirror image (``coarse.flip_average``); None: as the checkpoint's config.
    """
    from experiments.report import write_report

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise EvaluationError(f"{checkpoint}: no checkpoint; run `make train` first or pass CHECKPOINT=path/to/last.pt")
    hints = {"celeba": ("celeba", "CELEBA_DIR"), "aflw2000": ("aflw2000", "AFLW_DIR")}
    if dataset_name != "synthfaces" and not root:
        module = __import__(f"data.{hints[dataset_name][0]}", fromlist=["DOWNLOAD_HINT"])
        raise EvaluationError(f"--root missing: {module.DOWNLOAD_HINT}; then pass --root DIR "
                              f"(make eval-{'celeba' if dataset_name == 'celeba' else 'aflw'} {hints[dataset_name][1]}=DIR)")
    pipeline = load_pipeline(checkpoint, device, cfg.model.bfm)
    if flip_average is not None:
        pipeline.flip_average = flip_average
    failures: list[dict] = []
    parsing_net, parsing_note = None, None
    if dataset_name == "synthfaces":
        limit = SYNTH_DEFAULT_LIMIT if limit is None else limit
        dataset = synthfaces_test_set(pipeline.model.to("cpu"), size=max(cfg.data.test_size, limit),
                                      image_size=synth_image_size, seed=cfg.data.synth_seed)
    else:
        dataset, failures = photo_test_set(dataset_name, root, limit, progress=progress)
        parsing_net, parsing_note = load_parsing(cfg, device)
    nets, absent = load_identity_nets(cfg, device)
    out_dir = Path(out_dir)
    result = evaluate_pipeline(pipeline, dataset, identity_nets=nets, parsing_net=parsing_net, limit=limit,
                               batch_size=batch_size, out_dir=out_dir, failures=failures, progress=progress)
    result.update(dataset=dataset_name, checkpoint=str(checkpoint), commit=git_commit(),
                  config=checkpoint_config(pipeline, checkpoint), identity_nets_absent=absent,
                  flip_average=bool(getattr(pipeline, "flip_average", False)))
    if parsing_note:
        result["face_region_note"] = parsing_note
    if dataset_name == "synthfaces":
        result["synthfaces"] = {"split": "test", "seed": cfg.data.synth_seed, "views_per_identity": SYNTH_VIEWS_PER_IDENTITY,
                                "occlusion_prob": 1.0, "image_size": synth_image_size}
    write_evaluation(result, out_dir)
    write_report(out_dir)
    return result


def summary_lines(result: dict) -> list[str]:
    """A short terminal table: face-region PSNR, SSIM and dlib ID cosine per protocol and method."""
    lines = []
    for protocol, table in result["protocols"].items():
        for method, fields in table.items():
            parts = [f"{protocol:<9}{method:<10}"]
            for key in ("psnr_face_db", "ssim_face", "id_cosine_dlib", "albedo_error", "nme"):
                if key in fields and fields[key]["mean"] is not None:
                    parts.append(f"{key}={fields[key]['mean']:.4f}")
            lines.append(" ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    from experiments.config import ConfigError, load_config
    from perception.training import CheckpointError, resolve_device

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=DATASETS, default="synthfaces")
    parser.add_argument("--root", default=None, help="data set folder (CelebA or AFLW2000)")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--out", default=None, help="report folder (default reports/<dataset>)")
    parser.add_argument("--limit", type=int, default=None,
                        help=f"first N test samples (default {SYNTH_DEFAULT_LIMIT} for synthfaces, all photos otherwise)")
    parser.add_argument("--config", default="experiments/configs/default.yaml")
    parser.add_argument("--image-size", type=int, default=SYNTH_IMAGE_SIZE, help="SynthFaces render size (px)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=None,
                        help="also read each photo's mirror image and average (default: as the checkpoint was trained, "
                             "coarse.flip_average)")
    args = parser.parse_args(argv)
    out = args.out or f"reports/{args.dataset}"
    try:
        cfg = load_config(args.config)
        result = run_evaluation(args.dataset, args.root, args.checkpoint, out, args.limit, cfg,
                                resolve_device(args.device), args.batch_size, progress=not args.no_progress,
                                synth_image_size=args.image_size, flip_average=args.flip_average)
    except (EvaluationError, ConfigError, CheckpointError, DatasetLayoutError, DatasetNotPreparedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    failed = result["failures"]
    if failed["count"]:
        print(f"{failed['count']} photos left out ({failed['unreadable']} unreadable, {failed['no_face']} without a face); "
              f"listed in {out}/metrics.json")
    print(f"wrote {out}/metrics.json, {out}/report.md, {out}/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
