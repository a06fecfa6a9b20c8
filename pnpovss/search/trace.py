"""A run directory's files: ``trace.jsonl`` (one :class:`Trial` per line, appended so that a kill
at any moment loses at most the line being written), ``run.json`` (what defines the run; a restart
with other settings is refused) and the lock that keeps a second ``pnpovss tune`` out."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..config import as_recorded
from ..errors import PnpOvssError
from ..fileio import atomic_write_text

TRACE_FILE, BEST_FILE, RUN_FILE = "trace.jsonl", "best.json", "run.json"
TRACE_FORMAT = 3
"""2: every trial records ``z`` (paired z-score against trial 0); 3: and ``images``, its per-image
rewards, so that a selection rule can be applied (or changed) by replaying the trace alone."""


@dataclass
class Trial:
    """One finished trial as the search loop produces it; :meth:`to_json` is its ``trace.jsonl``
    line (and ``best.json`` repeats all but ``repeat`` and ``seconds``)."""

    trial: int
    """Its number; 0 is the base configuration."""
    params: dict[str, Any]
    """The searched parameters' values (JSON-normal: lists, not tuples)."""
    reward: float
    """The reward being maximised, summed over the images."""
    rewards: dict[str, float]
    """Every reward variant computed, summed over the images."""
    z: dict[str, float]
    """Per variant, the paired z-score of the per-image rewards against trial 0."""
    images: dict[str, list[float]]
    """Per variant, the reward of every image (in the run's image order): what selection rules test."""
    repeat: bool = False
    """The proposal repeated an earlier trial's parameters (its scores were reused)."""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, record: Mapping[str, Any], where: str = "trace") -> "Trial":
        """The trial of a ``trace.jsonl`` record (its unknown keys ignored)."""
        missing = [f.name for f in fields(cls) if f.name not in record and f.default is MISSING]
        if missing:
            raise PnpOvssError(f"{where}: a trial record lacks {', '.join(missing)}; the trace was edited or written "
                               "by another version; use another --out")
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})


class TraceLog:
    """Append-only JSON-lines trace that survives a kill at any moment."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, repair: bool = True) -> list[dict]:
        """Complete records; a truncated or corrupt final line is dropped (and cut from the file
        when ``repair``). A corrupt line in the middle is an error: the file was edited."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        records, good_end, pos = [], 0, 0
        lines = data.split(b"\n")
        for n, line in enumerate(lines):
            end = pos + len(line) + 1
            complete = n < len(lines) - 1  # followed by a newline
            if line.strip():
                try:
                    rec = json.loads(line)
                    if not complete or not isinstance(rec, dict):
                        raise ValueError
                except ValueError:
                    if any(rest.strip() for rest in lines[n + 1 :]):
                        raise PnpOvssError(f"{self.path}: line {n + 1} is not valid JSON; the trace was edited "
                                           "or corrupted; use a new --out") from None
                    break
                records.append(rec)
                good_end = end
            elif complete:
                good_end = end
            pos = end
        if repair and good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
        return records

    def append(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def exclusive(out: Path, enabled: bool) -> Iterator[None]:
    """Refuse two tune processes writing the same OUT at once."""
    if not enabled:
        yield
        return
    import fcntl

    path = out / ".lock"
    fh = open(path, "w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise PnpOvssError(f"another 'pnpovss tune' is writing to {out}; wait for it or use another --out") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # still locked: nobody else can be using it
    finally:
        fh.close()


OUTCOME_KEY = "selection"
"""``run.json``'s key for the last selection's decision: an outcome, not part of what defines the run."""


def record_selection(out: Path, decision: Mapping[str, Any]) -> None:
    """Write the selection's decision into ``run.json`` (atomically, the run's definition unchanged)."""
    path = out / RUN_FILE
    info = {k: v for k, v in json.loads(path.read_text()).items() if k != OUTCOME_KEY}
    atomic_write_text(path, json.dumps({**info, OUTCOME_KEY: decision}, indent=2, sort_keys=True) + "\n")


def check_run(out: Path, run_info: dict, write: bool) -> None:
    """Write ``run.json`` (when ``write``), or refuse a directory whose ``run.json`` differs (the
    recorded selection outcome aside)."""
    path = out / RUN_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise PnpOvssError(f"{path} is unreadable; remove {out} or use another --out") from None
        old.pop(OUTCOME_KEY, None)
        run_info = {**run_info, "base_config": as_recorded(run_info.get("base_config"), old.get("base_config"))}
        diff = sorted(k for k in set(old) | set(run_info) if old.get(k) != run_info.get(k))
        if diff:
            raise PnpOvssError(f"{out} holds a different tune run ({', '.join(diff)} differ); restart with the "
                               "original command to resume it, or use another --out")
    elif write:
        atomic_write_text(path, json.dumps(run_info, indent=2, sort_keys=True) + "\n")
