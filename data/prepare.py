"""Detect and align every photo of a data set once, and cache the result.

    python -m data.prepare celeba   CELEBA_DIR
    python -m data.prepare aflw2000 AFLW_DIR
    python -m data.prepare celebamask_hq CELEBAMASK_DIR
    python -m data.prepare folder   DIR

Each run reads every photo, runs MTCNN, aligns the largest face (``data.align``), predicts its
68 landmarks with dlib (``perception.landmarks``) and writes the records to
``DIR/.faid_alignment.json``, or to ``~/.cache/faid_recon/<hash>/`` when DIR is read-only.
The cache is written atomically every minute and at the end (also on Ctrl-C), so a run can
be stopped and started again: photos already cached, and unchanged since, are not
processed again. Unreadable photos and photos without a face are recorded with the reason,
counted in the closing summary, and left out of the data sets. A face whose 68 points dlib
cannot give (they disagree with MTCNN's 5: a face tilted over ~30 degrees, a profile) keeps its
alignment and is counted as missing its 68 points. Without dlib (or with --no-landmarks68) the
photos are aligned without 68 points, and a later run with dlib adds them without detecting
again.

Exit status: 0 done; 2 DIR missing or not laid out as expected (one line says what to
download and where to point); 1 the detector cannot be loaded; 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from data import aflw2000, celeba, celebamask_hq
from data.align import (ALIGNED, NO_FACE, UNREADABLE, AlignmentCache, AlignmentCacheError,
                        AlignmentRecord, add_landmarks68, add_landmarks68_to_file,
                        align_image_file, existing_cache_path, record_from_landmarks,
                        writable_cache_path)
from data.image_folder import DatasetLayoutError, list_image_files
from data.images import IMAGE_EXTENSIONS
from perception.landmarks import Landmarks68Predictor, LandmarkPredictorUnavailableError

log = logging.getLogger(__name__)

FOLDER_HINT = "image folder: pass a folder of photos (python -m data.prepare folder DIR)"
CHECKPOINT_SECONDS = 60.0
EXAMPLES_SHOWN = 5


@dataclass
class PrepareSummary:
    """What one prepare run found, over the photos it was given."""

    dataset: str
    cache_path: Path
    aligned: int = 0
    no_face: int = 0
    unreadable: int = 0
    from_cache: int = 0
    several_faces: int = 0
    from_annotation: int = 0
    landmarks68: int = 0  # aligned photos with dlib's 68 points
    landmarks68_missing: int = 0  # aligned photos dlib could not give 68 points for
    landmarks68_unavailable: str = ""  # why this run predicted no 68 points at all, if so
    skipped_examples: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    landmarks68_missing_examples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.aligned + self.no_face + self.unreadable

    @property
    def landmarks68_not_predicted(self) -> int:
        """Aligned photos not given to dlib yet (no dlib, --no-landmarks68, an older cache)."""
        return self.aligned - self.landmarks68 - self.landmarks68_missing

    def line(self) -> str:
        """One-line summary for the terminal."""
        text = (f"{self.dataset}: {self.total} photos: {self.aligned} aligned, "
                f"{self.no_face} no face, {self.unreadable} unreadable "
                f"({self.from_cache} reused from the cache)")
        if self.several_faces:
            text += f"; {self.several_faces} with several faces (largest kept)"
        if self.from_annotation:
            text += f"; {self.from_annotation} aligned from annotated landmarks"
        if self.aligned:
            text += (f"; 68 landmarks: {self.landmarks68} predicted, "
                     f"{self.landmarks68_missing} missing")
            if self.landmarks68_not_predicted:
                text += f", {self.landmarks68_not_predicted} not predicted"
                if self.landmarks68_unavailable:
                    text += " (dlib unavailable; see the warning above)"
        return text + f"; cache: {self.cache_path}"


def _open_cache(root: Path, cache_path: Path | None) -> AlignmentCache:
    """The cache to extend: the given file, or the newest existing one for root; it is then
    written to cache_path, or next to the data when writable, else the user cache."""
    read_path = cache_path if cache_path is not None else existing_cache_path(root)
    write_path = cache_path if cache_path is not None else writable_cache_path(root)
    cache = AlignmentCache(write_path)
    if read_path is not None:
        try:
            cache = AlignmentCache.load(read_path)
        except AlignmentCacheError as error:
            log.warning("%s; starting a new cache", error)
    cache.path = write_path
    return cache


def _load_landmark_predictor(predictor) -> tuple[object | None, str]:
    """(the loaded predictor, "") or (None, the one-line reason it cannot run)."""
    predictor = Landmarks68Predictor() if predictor is None else predictor
    try:
        if hasattr(predictor, "load"):
            predictor.load()
    except LandmarkPredictorUnavailableError as error:
        return None, str(error)
    return predictor, ""


def _align(root: Path, relative_path: str, detector, predictor,
           fallback_landmarks5: Callable[[str], np.ndarray | None] | None) -> AlignmentRecord:
    """The record of one photo: detected and aligned, else aligned from fallback landmarks."""
    record = align_image_file(root / relative_path, detector, predictor)
    if record.status == NO_FACE and fallback_landmarks5 is not None:
        landmarks5 = fallback_landmarks5(relative_path)
        if landmarks5 is not None:
            fallback = record_from_landmarks(
                landmarks5, "annotation",
                reason=f"{record.reason}; aligned from annotated landmarks")
            fallback.image_size, fallback.faces = record.image_size, record.faces
            fallback.file_size, fallback.mtime_ns = record.file_size, record.mtime_ns
            if predictor is not None:  # records why there are none (no detector box)
                add_landmarks68(fallback, None, predictor)
            record = fallback
    return record


def prepare_alignment(root: str | Path, relative_paths: Sequence[str], detector=None,
                      cache_path: str | Path | None = None,
                      fallback_landmarks5: Callable[[str], np.ndarray | None] | None = None,
                      progress: bool = True, dataset_name: str = "photos",
                      checkpoint_seconds: float = CHECKPOINT_SECONDS,
                      landmarks68: bool = True, landmark_predictor=None) -> PrepareSummary:
    """Align every photo in relative_paths (relative to root) that the cache lacks.

    detector: ``perception.detect.FaceDetector`` or anything with the same ``detect``; made
        on the CPU when needed and not given.
    fallback_landmarks5: called with a relative path when no face is detected; 5 landmarks
        it returns are used instead (AFLW2000's annotations). None to skip the photo.
    landmarks68: also predict the 68 points of each aligned face, and add them to aligned
        photos cached without them (no detection again).
    landmark_predictor: ``perception.landmarks.Landmarks68Predictor`` or anything with its
        ``predict``; made when needed and not given. When dlib or its model file is missing,
        photos are aligned without 68 points and the summary says why.
    Returns the summary over relative_paths. The cache is saved atomically every
    checkpoint_seconds (or 20 times as long as a save takes, if longer), at the end, and when
    interrupted.
    """
    root = Path(root)
    cache = _open_cache(root, Path(cache_path) if cache_path is not None else None)
    to_process = [path for path in relative_paths
                  if path not in cache.entries or not cache.entries[path].matches_file(root / path)]
    waiting = set(to_process)
    to_complete = [path for path in relative_paths if path not in waiting
                   and cache.entries[path].status == ALIGNED
                   and not cache.entries[path].landmarks68_attempted] if landmarks68 else []
    predictor, unavailable = None, ""
    if landmarks68 and (to_process or to_complete):
        predictor, unavailable = _load_landmark_predictor(landmark_predictor)
        if predictor is None:
            log.warning("%s; aligning without 68-point landmarks", unavailable)
            to_complete = []
        else:
            cache.landmark_predictor_name = getattr(predictor, "name", type(predictor).__name__)
    if to_process and detector is None:
        from perception.detect import FaceDetector
        detector = FaceDetector()
    if to_process:
        cache.detector_name = getattr(detector, "name", type(detector).__name__)
    unsaved = False
    last_save = time.monotonic()
    save_interval = checkpoint_seconds
    work = [(path, True) for path in to_process] + [(path, False) for path in to_complete]
    try:
        for relative_path, detect in tqdm(work, desc=f"aligning {dataset_name}", unit="photo",
                                          disable=not progress or not work,
                                          dynamic_ncols=True):
            if detect:
                cache.entries[relative_path] = _align(root, relative_path, detector, predictor,
                                                      fallback_landmarks5)
            else:  # aligned before, only the 68 points are new
                add_landmarks68_to_file(root / relative_path, cache.entries[relative_path],
                                        predictor)
            unsaved = True
            if time.monotonic() - last_save >= save_interval:
                started = time.monotonic()
                cache.save()
                unsaved, last_save = False, time.monotonic()
                # A full CelebA cache is ~200 MB (68 points included): keep rewriting it
                # under 5% of the run.
                save_interval = max(checkpoint_seconds, 20.0 * (last_save - started))
    finally:
        if unsaved:
            cache.save()  # only whole records are in memory, and the write is atomic
    if not to_process and not cache.path.is_file():
        cache.save()  # nothing to do, but leave the cache where the data sets look for it

    summary = PrepareSummary(dataset_name, cache.path,
                             from_cache=len(relative_paths) - len(to_process),
                             landmarks68_unavailable=unavailable)
    for relative_path in relative_paths:
        record = cache.entries[relative_path]
        if record.status == ALIGNED:
            summary.aligned += 1
            summary.several_faces += record.faces > 1
            summary.from_annotation += record.landmarks_source == "annotation"
            summary.landmarks68 += record.landmarks68 is not None
            if record.landmarks68 is None and record.landmarks68_missing:
                summary.landmarks68_missing += 1
                if len(summary.landmarks68_missing_examples) < EXAMPLES_SHOWN:
                    summary.landmarks68_missing_examples.append(
                        (relative_path, record.landmarks68_missing))
        else:
            if record.status == NO_FACE:
                summary.no_face += 1
            elif record.status == UNREADABLE:
                summary.unreadable += 1
            if len(summary.skipped_examples) < EXAMPLES_SHOWN:
                summary.skipped_examples.append((relative_path, record.reason))
    return summary


def _dataset_files(kind: str, root: Path):
    """(display name, relative paths, fallback) of one data set kind; raises
    DatasetLayoutError when root does not look like it."""
    if kind == "celeba":
        return "CelebA", celeba.list_celeba_images(root), None
    if kind == "aflw2000":
        return ("AFLW2000", aflw2000.list_aflw_images(root),
                lambda relative_path: aflw2000.annotated_landmarks5(root, relative_path))
    if kind == "celebamask_hq":
        return "CelebAMask-HQ", celebamask_hq.list_celebamask_images(root), None
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: folder not found; {FOLDER_HINT}")
    files = list_image_files(root)
    if not files:
        raise DatasetLayoutError(f"{root}: no image files ({' '.join(IMAGE_EXTENSIONS)}) in "
                                 f"it; {FOLDER_HINT}")
    return "image folder", files, None


HINTS = {"celeba": celeba.DOWNLOAD_HINT, "aflw2000": aflw2000.DOWNLOAD_HINT,
         "celebamask_hq": celebamask_hq.DOWNLOAD_HINT, "folder": FOLDER_HINT}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.prepare",
        description="Detect and align every photo of a data set once, and cache the result.")
    parser.add_argument("kind", choices=sorted(HINTS), help="data set layout")
    parser.add_argument("root", nargs="?", default="", help="data set folder")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache file (default: DIR/.faid_alignment.json, or the user "
                             "cache when DIR is read-only)")
    parser.add_argument("--device", default="cpu", help="torch device for MTCNN (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-landmarks68", action="store_true",
                        help="align only; skip dlib's 68-point landmarks")
    parser.add_argument("--verbose", action="store_true",
                        help="also log photos without a face or with several faces")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s")

    if not args.root:
        print(HINTS[args.kind], file=sys.stderr)
        return 2
    root = Path(args.root).expanduser()
    try:
        name, relative_paths, fallback = _dataset_files(args.kind, root)
    except DatasetLayoutError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        from perception.detect import DetectorUnavailableError, FaceDetector
        detector = FaceDetector(device=args.device)
    except DetectorUnavailableError as error:
        print(error, file=sys.stderr)
        return 1
    try:
        with logging_redirect_tqdm():
            summary = prepare_alignment(root, relative_paths, detector, args.cache, fallback,
                                        progress=not args.no_progress, dataset_name=name,
                                        landmarks68=not args.no_landmarks68)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; finished photos are cached, run the same command again "
              "to resume", file=sys.stderr)
        return 130
    print(summary.line())
    for relative_path, reason in summary.skipped_examples:
        print(f"  skipped {relative_path}: {reason}")
    skipped = summary.no_face + summary.unreadable
    if skipped > len(summary.skipped_examples):
        print(f"  ... and {skipped - len(summary.skipped_examples)} more; every reason is in "
              f"{summary.cache_path}")
    for relative_path, reason in summary.landmarks68_missing_examples:
        print(f"  no 68 landmarks for {relative_path}: {reason}")
    if summary.landmarks68_missing > len(summary.landmarks68_missing_examples):
        print(f"  ... and {summary.landmarks68_missing - len(summary.landmarks68_missing_examples)}"
              f" more without 68 landmarks; every reason is in {summary.cache_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
