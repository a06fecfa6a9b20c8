"""Per-image result files in an output directory, written as one unit, and resume (skip if done).

An image ``NAME`` gives ``NAME.labels.png``, ``NAME.overlay.png`` and ``NAME.json``. The three are
encoded in memory, written under short temporary names, and renamed into place together, JSON
last, while holding an exclusive ``flock`` on the output directory itself: two runs writing into
one directory never interleave their files, and no lock file is left behind. ``NAME.json``
records the SHA-256 of the input file and of both PNGs, so a skip check (under a shared lock) can
tell a finished unit of *this* image and these settings from stale or mixed files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from .errors import PnpOvssError
from .fileio import TEMP_PREFIX, write_temp
from .visualize import label_image, png_bytes

SUFFIXES = {"labels": ".labels.png", "overlay": ".overlay.png", "json": ".json"}
NAME_MAX = 255


def output_files(out: Path, stem: str) -> dict[str, Path]:
    return {kind: Path(out) / f"{stem}{suffix}" for kind, suffix in SUFFIXES.items()}


def is_own_output(path: Path) -> bool:
    """Is ``path`` a labels/overlay PNG that a run wrote (its ``NAME.json`` lies beside it)?"""
    name = path.name
    for suffix in (SUFFIXES["labels"], SUFFIXES["overlay"]):
        if name.endswith(suffix) and (path.parent / (name[: -len(suffix)] + SUFFIXES["json"])).is_file():
            return True
    return False


def check_name_length(stem: str) -> None:
    longest = max(len((stem + s).encode()) for s in SUFFIXES.values())
    if longest > NAME_MAX:
        raise PnpOvssError(f"{stem}: output names would be {longest} bytes, above the file system's {NAME_MAX}; "
                           "rename the image")


def check_writable_dir(directory: Path, what: str) -> None:
    """Prove, before any slow work, that a file can be written in ``directory``: directories this
    check had to create are removed again, so a run that fails later leaves nothing behind."""
    directory = Path(directory)
    created = [p for p in [directory, *directory.parents] if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PnpOvssError(f"{what}: cannot write in {directory} ({reason}); choose another location") from None
    finally:
        for p in created:  # deepest first
            with contextlib.suppress(OSError):
                p.rmdir()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (what the skip check keys on: replace the picture, redo the result)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _dir_lock(directory: Path, exclusive: bool) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_result(out: Path, stem: str, labels: np.ndarray, overlay: Image.Image, meta: dict[str, Any]) -> None:
    """Write one image's three files as a unit (see the module docstring). ``meta`` goes into the
    JSON with the label PNG's format and the SHA-256 of both PNGs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    label_img, label_format = label_image(labels)
    blobs = {"labels": png_bytes(label_img), "overlay": png_bytes(overlay)}
    record = {**meta, "labels_png": label_format,
              "sha256": {kind: hashlib.sha256(data).hexdigest() for kind, data in blobs.items()}}
    blobs["json"] = (json.dumps(record, indent=2) + "\n").encode()
    targets = output_files(out, stem)
    temps: dict[str, str] = {}
    try:
        for kind, data in blobs.items():
            temps[kind] = write_temp(out, data)
        with _dir_lock(out, exclusive=True):
            for kind in ("labels", "overlay", "json"):  # JSON last: its presence vouches for the PNGs
                os.replace(temps.pop(kind), targets[kind])
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def is_done(out: Path, stem: str, key: dict[str, Any]) -> bool:
    """Are ``stem``'s three files in ``out`` one unit written with ``key`` (image digest, model,
    classes, config, ...)? Every entry of ``key`` must equal the JSON's, and both PNGs must be
    the ones the JSON names by hash."""
    files = output_files(out, stem)
    if not Path(out).is_dir():
        return False
    with _dir_lock(Path(out), exclusive=False):
        try:
            meta = json.loads(files["json"].read_text())
            expected = json.loads(json.dumps(key))  # tuples -> lists, as stored
            if isinstance(meta, dict) and "config" in expected:  # fields added since, at their default, match
                from .config import as_recorded

                expected["config"] = as_recorded(expected["config"], meta.get("config"))
            if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
                return False
            return all(file_digest(files[kind]) == meta["sha256"][kind] for kind in ("labels", "overlay"))
        except (OSError, ValueError, KeyError, TypeError):
            return False


def remove_stale_temps(out: Path, older_than: float = 3600.0) -> None:
    """Delete temporary files that a killed run (``kill -9``) left in ``out`` over an hour ago."""
    now = time.time()
    for p in Path(out).glob(TEMP_PREFIX + "*.tmp"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > older_than:
                p.unlink()

