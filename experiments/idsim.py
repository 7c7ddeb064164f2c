"""Identity cosine similarity of two face photos.

    python -m experiments.idsim A.jpg B.jpg [--net dlib|facenet] [--aligned] [--json OUT]

Photos are detected (MTCNN) and aligned to the 224 template unless --aligned says they already are
the backbone's own chips (dlib: 150x150 chips as dlib's get_face_chip makes them; facenet: 160x160).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from data.align import ALIGNED, align_photo, warp_to_crop
from fileio import write_json_atomically
from data.images import UnreadableImageError, image_to_tensor, read_rgb_image
from perception.detect import DetectorUnavailableError, FaceDetector
from perception.facenet import MissingWeightsError
from perception.identity import IDENTITY_NETS, build_identity_net


class InputError(ValueError):
    """A photo that cannot be used (unreadable, no face)."""


def load_face(path: Path, aligned: bool, net, detector) -> tuple[torch.Tensor, str]:
    """One photo -> ((3, S, S) network input in [0, 1], a note for the user)."""
    try:
        image = read_rgb_image(path)
    except UnreadableImageError as exc:
        raise InputError(str(exc)) from None
    if aligned:
        tensor = image_to_tensor(image)
        if tensor.shape[1:] != (net.input_size, net.input_size):
            tensor = F.interpolate(tensor[None], size=(net.input_size,) * 2, mode="bilinear",
                                   align_corners=False, antialias=True)[0]
        return tensor, "given as an aligned chip"
    record = align_photo(image, detector)
    if record.status != ALIGNED:
        raise InputError(f"{path}: {record.reason or 'no face detected'}; pass a photo with a visible face")
    return warp_to_crop(image_to_tensor(image), record.transform).clamp(0, 1), record.reason or "aligned"


def embed(net, faces: torch.Tensor, aligned: bool) -> torch.Tensor:
    """(B, 3, S, S) -> (B, D) unit embeddings; chips skip the aligned-crop framing."""
    with torch.no_grad():
        if aligned:
            return F.normalize(net.backbone(faces), dim=1)
        return net(faces)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--net", choices=IDENTITY_NETS, default="dlib")
    parser.add_argument("--weights", default=None, help="weights file (facenet: 20180402-114759-vggface2.pt)")
    parser.add_argument("--aligned", action="store_true", help="inputs are already the backbone's aligned chips")
    parser.add_argument("--json", type=Path, default=None, help="write {path: embedding, 'cosine': c} here")
    args = parser.parse_args(argv)
    try:
        net = build_identity_net(args.net, args.weights).eval()
        detector = None if args.aligned else FaceDetector()
        faces, notes = zip(*(load_face(p, args.aligned, net, detector) for p in (args.a, args.b)))
    except (InputError, MissingWeightsError, DetectorUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    embeddings = embed(net, torch.stack(faces), args.aligned)
    cosine = float((embeddings[0] * embeddings[1]).sum())
    for path, note in zip((args.a, args.b), notes):
        if note not in ("aligned", "given as an aligned chip"):
            print(f"note: {path}: {note}", file=sys.stderr)
    print(f"{cosine:.4f}")
    if args.json:
        write_json_atomically(args.json, {str(args.a): embeddings[0].tolist(), str(args.b): embeddings[1].tolist(), "cosine": cosine})
    return 0


if __name__ == "__main__":
    sys.exit(main())
