"""write_atomically and its byte / text / JSON / torch.save forms (see the package docstring)."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

READABLE = 0o644  # mkstemp makes files private; what we write is meant to be read by the user's tools


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Create `path` (and its folder) from what write(handle) puts into a binary file handle. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, READABLE)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomically(path, lambda handle: handle.write(data))


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(path: str | os.PathLike, payload: Any, **dump_options) -> Path:
    """JSON (compact unless dump_options say otherwise, e.g. indent=2)."""
    options = {"separators": (",", ":")} if not dump_options else dump_options
    return write_text_atomically(path, json.dumps(payload, **options))


def torch_save_atomically(obj: object, path: str | os.PathLike) -> Path:
    import torch

    return write_atomically(path, lambda handle: torch.save(obj, handle))
