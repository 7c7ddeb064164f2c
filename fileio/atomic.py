"""write_atomically and its byte / text / JSON / torch.save forms (see the package docstring)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

READABLE = 0o644  # mkstemp makes files private; what we write is meant to be read by the user's tools


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Create `path` (and its folder) from what write(handle) puts into a binary file handle. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with _removed_on_failure(temporary):
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, READABLE)
        os.replace(temporary, path)
    return path


@contextlib.contextmanager
def _removed_on_failure(temporary: str | os.PathLike):
    """Delete the temporary file when the block raises (anything, Ctrl-C included), then re-raise."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


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


def link_atomically(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make `path` another name for the finished file `source` (a hard link, so a 300 MB checkpoint costs its disk
    space once), replacing whatever `path` was in one rename. Where the file system has no hard links, `path`
    becomes a copy, written atomically like the rest. Returns the path."""
    source, path = Path(source), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.link")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    try:
        os.link(source, temporary)
    except OSError:  # no hard links here (or another device): fall back to a copy
        return write_atomically(path, lambda handle: _copy_into(source, handle))
    with _removed_on_failure(temporary):
        os.replace(temporary, path)
    return path


def _copy_into(source: Path, handle: IO[bytes]) -> None:
    with open(source, "rb") as original:
        shutil.copyfileobj(original, handle, 1 << 20)
