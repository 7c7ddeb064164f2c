"""Photo -> textured 3D face: detect, align, coarse + fine, optional per-photo fit, exports.

    python -m experiments.reconstruct PHOTO_OR_DIR... -o OUT [--checkpoint checkpoints/default/last.pt]
                                      [--fit [STEPS]] [--texture-size 512] [--bfm PATH] [--device cpu]

For each photo (a folder contributes its image files, not recursively), the largest face is detected
(MTCNN), aligned to the regressor's crop, reconstructed, and written under OUT/<stem>/:
    <stem>.obj, <stem>.mtl, <stem>_texture.png   mesh + unlit albedo texture (Blender, Unity)
    <stem>.glb                                   the same as binary glTF (browsers, three.js)
    <stem>.ply                                   per-vertex albedo colours
    <stem>_overlay.png                           the shaded render pasted back onto the photo, same size
    <stem>_coeffs.npy                            the 257 coefficients (float32)
    <stem>_landmarks68.txt                       the projected 68 points, x y in the photo's pixels
    <stem>.json                                  pose (degrees), detection, checkpoint, fit report, timings
Meshes are in model space (metres, +y up, the face looking down +z); see experiments.mesh_export.

A photo's folder appears complete or not at all: files are written into a temporary folder in OUT and
renamed into place. A photo that cannot be read or shows no face gets one line and is skipped; the exit
code is 1 when any photo failed, and the last line says how many were reconstructed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from coarse import coefficients as C
from coarse.face_model import compute_shape
from coarse.uv_layout import UVLayout, ensure_uv
from data.align import (
    ALIGNED, CROP_SIZE, align_photo, alignment_transform, apply_transform, invert_transform, paste_back,
    transform_scale, user_cache_root, warp_to_crop,
)
from data.images import IMAGE_EXTENSIONS, UnreadableImageError, is_image_file, read_rgb_image
from experiments.fit import DEFAULT_FIT_STEPS, FitWeights, fit_to_photo
from experiments.mesh_export import METRES_PER_MODEL_UNIT, FaceMeshExporter, png_bytes, write_file

DEFAULT_CHECKPOINT = "checkpoints/default/last.pt"
# The overlay is rendered at the resolution the face has in the photo, within these bounds (pixels of
# the aligned crop's side).
OVERLAY_MAX_RENDER = 1024
# A 68-point prediction this far from the detector's 5 points (fraction of the face size) has collapsed
# (perception.landmarks measures ~0.01-0.05 for good ones, ~0.2 for collapsed): use the 5 points instead.
MAX_LANDMARK_DISAGREEMENT = 0.1


class PhotoSkipped(Exception):
    """A photo that is skipped with a one-line reason (unreadable, no face)."""


@dataclass
class FitSetup:
    """What `--fit` needs: steps, the frozen identity net, an optional parsing net, the loss weights and an
    optional 68-point predictor (None: fit the detector's 5 points)."""

    steps: int
    identity_net: torch.nn.Module
    parsing_net: torch.nn.Module | None = None
    weights: FitWeights = field(default_factory=FitWeights)
    landmark_predictor: object | None = None
    notes: list[str] = field(default_factory=list)


def photo_paths(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (their image files, sorted, not recursive) into a list of photos.
    A named file is kept whatever its extension, so a bad one is reported rather than ignored."""
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.is_file() and is_image_file(p))
        else:
            paths.append(item)
    return paths


def unique_stems(paths: list[Path]) -> list[str]:
    """One output name per photo: the file stem, with the extension added where two stems collide."""
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    stems, used = [], set()
    for path in paths:
        stem = path.stem if counts[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.').lower()}"
        base, k = stem, 2
        while stem in used:
            stem, k = f"{base}_{k}", k + 1
        used.add(stem)
        stems.append(stem)
    return stems


def write_folder_atomically(folder: Path, files: dict[str, bytes]) -> Path:
    """Write {file name: bytes} as `folder`, replacing an older one whole: the files go into a temporary
    sibling folder that is renamed into place, so `folder` is never seen half-written."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    os.chmod(staging, 0o777 & ~_current_umask())  # mkdtemp makes it private; the result is an ordinary folder
    retired = None
    try:
        for name, data in files.items():
            write_file(staging / name, data)
        if folder.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, retired / folder.name)
        os.replace(staging, folder)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        if retired is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(retired)
    return folder


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def landmarks_text(points: np.ndarray) -> bytes:
    """(68, 2) photo pixels -> text, one "x y" line per point after a comment line (np.loadtxt reads it)."""
    buffer = io.StringIO()
    np.savetxt(buffer, points, fmt="%.3f", header="x y: the 68 projected landmarks (iBUG order) in photo pixels; "
                                                  "the centre of pixel [row i, column j] is x=j, y=i")
    return buffer.getvalue().encode()


class Reconstructor:
    """Everything loaded once, then `reconstruct(path, out_root, stem)` per photo.

    pipeline: an `experiments.pipeline.FacePipeline` (eval mode); detector: `perception.detect.FaceDetector`;
    texture_size: side of the baked albedo texture (pixels); fit: a FitSetup for `--fit`, or None;
    uv_cache_dir: where an xatlas layout is cached (models without UVs).
    """

    def __init__(self, pipeline, detector, texture_size: int = 512, fit: FitSetup | None = None,
                 uv_cache_dir: str | os.PathLike | None = None, overlay_max_render: int = OVERLAY_MAX_RENDER):
        self.pipeline, self.detector, self.texture_size, self.fit = pipeline, detector, int(texture_size), fit
        self.overlay_max_render = int(overlay_max_render)
        self.device = next(pipeline.parameters()).device
        self.layout: UVLayout = ensure_uv(pipeline.model, uv_cache_dir)
        self.exporter = FaceMeshExporter(self.layout, pipeline.model.triangles, self.texture_size)

    def _target_landmarks(self, image: np.ndarray, record, transform: np.ndarray) -> tuple[torch.Tensor, str]:
        """Fit targets in crop pixels: the 68 predicted points, or the detector's 5 when none or collapsed."""
        points, source = record.landmarks5, "mtcnn5"
        predictor = self.fit.landmark_predictor
        if predictor is not None:
            from perception.landmarks import disagreement_with_landmarks5

            try:
                points68 = predictor.predict(image, record.box)
            except (RuntimeError, ValueError):  # dlib refusing a box: the 5 points still hold
                points68 = None
            if points68 is not None and disagreement_with_landmarks5(
                    points68, record.landmarks5, record.box) <= MAX_LANDMARK_DISAGREEMENT:
                points, source = points68, "dlib68"
        return torch.tensor(apply_transform(transform, points), dtype=torch.float32, device=self.device), source

    @torch.no_grad()
    def _render_overlay(self, image: np.ndarray, landmarks5: np.ndarray, coeffs: torch.Tensor,
                        albedo: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Render at about the face's own resolution in the photo and paste it back.

        Returns (overlay (H, W, 3) uint8, the 68 projected landmarks (68, 2) in photo pixels)."""
        photo_pixels_per_crop = 1.0 / transform_scale(alignment_transform(landmarks5, CROP_SIZE))
        size = int(np.clip(round(CROP_SIZE * photo_pixels_per_crop), self.pipeline.input_size, self.overlay_max_render))
        transform = alignment_transform(landmarks5, size)
        rendered = self.pipeline.render(coeffs, albedo, size)
        overlay = paste_back(rendered.image[0].cpu(), rendered.mask[0].cpu(), transform, image)
        # The camera scales with the render size, so the landmarks of this render map back like its pixels.
        landmarks = apply_transform(invert_transform(transform), rendered.landmarks68[0].cpu().numpy())
        return overlay, landmarks

    def reconstruct(self, path: Path, out_root: Path, stem: str) -> dict:
        """Reconstruct one photo into out_root/stem/ (replacing an older result whole).

        Returns the summary written as <stem>.json; its timings_ms (per phase, milliseconds) gain write_ms,
        which the file cannot hold. Raises PhotoSkipped for an unreadable photo or one without a face."""
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = round(1e3 * (now - clock), 1)
            clock = now

        try:
            image = read_rgb_image(path)
        except UnreadableImageError as error:
            raise PhotoSkipped(f"cannot read image ({error.reason})") from None
        lap("read_ms")
        record = align_photo(image, self.detector)
        lap("detect_ms")
        if record.status != ALIGNED:
            raise PhotoSkipped(record.reason or "no face detected")
        size = self.pipeline.input_size
        transform = alignment_transform(record.landmarks5, size)
        crop = warp_to_crop(image, transform, size).to(self.device)
        lap("align_ms")
        with torch.no_grad():
            prediction = self.pipeline.predict(crop[None])
        stage = "fine" if prediction.fine_albedo is not None else "coarse"
        coeffs, albedo = prediction.coeffs, prediction.albedo(stage).clamp(0, 1)
        lap("predict_ms")
        fit_report = None
        if self.fit is not None and self.fit.steps > 0:
            target, source = self._target_landmarks(image, record, transform)
            lap("landmarks68_ms")
            coeffs, albedo, report = fit_to_photo(
                self.pipeline, crop, target, self.fit.steps, identity_net=self.fit.identity_net,
                parsing_net=self.fit.parsing_net, initial=prediction, weights=self.fit.weights)
            fit_report = dict(report.to_json(), landmark_source=source, notes=self.fit.notes)
            lap("fit_ms")

        overlay, landmarks_photo = self._render_overlay(image, record.landmarks5, coeffs, albedo)
        lap("render_ms")

        model = self.pipeline.model
        with torch.no_grad():
            shape = compute_shape(model, coeffs[:, C.ID], coeffs[:, C.EXP])[0]
        files = self.exporter.files(stem, shape, albedo[0])
        angles = torch.rad2deg(coeffs[0, C.ANGLE]).tolist()
        summary = {
            "photo": str(path),
            "image_size": [int(image.shape[1]), int(image.shape[0])],
            "detection": {"score": record.score, "box": np.round(record.box, 2).tolist(),
                          "landmarks5": np.round(record.landmarks5, 2).tolist(), "faces": record.faces,
                          "note": record.reason},
            "checkpoint": self.pipeline.checkpoint,
            "model": model.name,
            "stages": list(self.pipeline.stages),
            "albedo": stage,
            "pose_deg": {"pitch": angles[0], "yaw": angles[1], "roll": angles[2]},
            "translation": coeffs[0, C.TRANS].tolist(),
            "mesh": {"frame": "model space, +y up, +x the subject's left, +z out of the face",
                     "units": "metres", "metres_per_model_unit": METRES_PER_MODEL_UNIT,
                     "textured_vertices": self.layout.num_vertices, "model_vertices": model.num_vertices,
                     "faces": model.num_faces, "uv_layout": self.layout.source, "texture_size": self.texture_size},
            "fit": fit_report,
        }
        files[f"{stem}_overlay.png"] = png_bytes(overlay, compress_level=1)
        files[f"{stem}_coeffs.npy"] = npy_bytes(coeffs[0].detach().cpu().numpy().astype(np.float32))
        files[f"{stem}_landmarks68.txt"] = landmarks_text(landmarks_photo)
        lap("encode_ms")
        summary["timings_ms"] = timings
        files[f"{stem}.json"] = (json.dumps(summary, indent=1) + "\n").encode()
        write_folder_atomically(out_root / stem, files)
        timings["write_ms"] = round(1e3 * (time.perf_counter() - clock), 1)
        return summary


def reconstruct_photos(reconstructor: Reconstructor, paths: list[Path], out_root: Path,
                       progress: bool = True) -> tuple[int, list[tuple[Path, str]]]:
    """Reconstruct every photo; returns (number reconstructed, [(path, reason) of the skipped ones])."""
    failures: list[tuple[Path, str]] = []
    done = 0
    bar = tqdm(list(zip(paths, unique_stems(paths))), desc="reconstruct", unit="photo", disable=not progress,
               dynamic_ncols=True)
    for path, stem in bar:
        try:
            reconstructor.reconstruct(path, out_root, stem)
            done += 1
        except PhotoSkipped as skipped:
            failures.append((path, str(skipped)))
            tqdm.write(f"skipped {path}: {skipped}", file=sys.stderr)
        except Exception as error:  # noqa: BLE001 - one odd photo must not stop a folder; it is counted
            reason = f"failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            failures.append((path, reason))
            tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)
    return done, failures


def build_fit_setup(steps: int, config_path: str | None, device: torch.device) -> FitSetup:
    """The identity net (dlib), the parsing net when its checkpoint exists, the training loss weights and
    the 68-point predictor when dlib is installed."""
    from experiments.config import load_config
    from perception.identity import build_identity_net

    cfg = load_config(config_path)
    notes = []
    identity_net = build_identity_net(cfg.perception.identity_net, cfg.perception.facenet_weights, device=device).eval()
    parsing_net = None
    if Path(cfg.perception.parsing_checkpoint).is_file():
        from perception.parsing import load_parsing_net

        parsing_net = load_parsing_net(cfg.perception.parsing_checkpoint, device).eval().requires_grad_(False)
    else:
        notes.append(f"no parsing net at {cfg.perception.parsing_checkpoint}: the photometric mask is the render "
                     "coverage (run `make parsing-net`)")
    predictor = None
    try:
        from perception.landmarks import Landmarks68Predictor, LandmarkPredictorUnavailableError

        try:
            predictor = Landmarks68Predictor().load()
        except LandmarkPredictorUnavailableError as error:
            notes.append(f"68-point landmarks unavailable ({error}); fitting the detector's 5 points")
    except ImportError:
        notes.append("perception.landmarks is missing; fitting the detector's 5 points")
    return FitSetup(steps, identity_net, parsing_net, FitWeights.from_loss_weights(cfg.losses), predictor, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+", help="photo files and/or folders of photos")
    parser.add_argument("-o", "--out", required=True, help="output folder (one subfolder per photo)")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--fit", type=int, nargs="?", const=DEFAULT_FIT_STEPS, default=0, metavar="STEPS",
                        help=f"refine each photo by analysis by synthesis (default {DEFAULT_FIT_STEPS} steps)")
    parser.add_argument("--texture-size", type=int, default=512, help="albedo texture side in pixels")
    parser.add_argument("--bfm", default=None, help="BFM_model_front.mat, when the checkpoint was trained on BFM")
    parser.add_argument("--config", default=None,
                        help="YAML config naming the perception nets and loss weights --fit uses (default: built-in "
                             "defaults, i.e. dlib identity net and checkpoints/parsing.pt)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=None,
                        help="also read the photo's mirror image and average the two (one more regressor pass; "
                             "default: as the checkpoint was trained, coarse.flip_average)")
    args = parser.parse_args(argv)
    if args.texture_size < 8 or args.fit < 0:
        parser.error("--texture-size must be >= 8 and --fit >= 0")

    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        print(f"error: {checkpoint}: no trained checkpoint; run `make train` or pass --checkpoint PATH",
              file=sys.stderr)
        return 2
    from coarse.bfm import BFMFormatError
    from experiments.config import ConfigError
    from experiments.pipeline import FacePipeline
    from perception.detect import DetectorUnavailableError, FaceDetector
    from perception.training import CheckpointError

    device = torch.device(args.device)
    try:
        pipeline = FacePipeline.from_checkpoint(checkpoint, device=device, bfm=args.bfm)
        if args.flip_average is not None:
            pipeline.flip_average = args.flip_average
        detector = FaceDetector(device=device)
        fit = build_fit_setup(args.fit, args.config, device) if args.fit else None
        reconstructor = Reconstructor(pipeline, detector, args.texture_size, fit,
                                      uv_cache_dir=user_cache_root() / "uv_layouts")
    except (CheckpointError, BFMFormatError, ConfigError, DetectorUnavailableError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paths = photo_paths(args.photos)
    if not paths:
        print(f"error: no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(args.photos)}", file=sys.stderr)
    if fit is not None:
        for note in fit.notes:
            print(f"note: {note}", file=sys.stderr)
    out_root = Path(args.out)
    folder_given = any(Path(p).is_dir() for p in args.photos)
    done, failures = reconstruct_photos(reconstructor, paths, out_root, progress=folder_given or len(paths) > 1)
    print(f"{done} of {len(paths)} photos reconstructed" + (f" into {out_root}" if done else ""))
    return 0 if paths and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
