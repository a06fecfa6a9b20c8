"""What the docs generators share: reading a record of bench/results/, the bench scripts' own table
functions, and the number formats of the tables and readings (``bench/tables.py``, ``bench/readings.py``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


RESULTS = ROOT / "bench" / "results"


def record(name: str) -> dict[str, Any]:
    """``bench/results/NAME``, parsed."""
    return json.loads((RESULTS / name).read_text())


def bench_module(name: str):
    """``bench/NAME.py`` as a module, to reuse the table function its ``--table`` prints."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import benchio as a sibling
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def one(x: float) -> str:
    return f"{x:.1f}"


def _span(values: list[float], digits: int = 1) -> str:
    """``a-b`` of the smallest and largest value (one value when they agree at ``digits``)."""
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}-{high}"


def _pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def _compare(a: float, b: float, low: str = "below", high: str = "above") -> str:
    return low if a < b else high


def _exactly(value: float) -> str:
    return "exactly 0" if value == 0 else f"up to {value:.0e}"


def _latency(entry: dict | None) -> str:
    return f"{entry['median_s']:.2f} s ({entry['max_s']:.2f})" if entry else ""


def _speed_rows(name: str) -> dict[tuple[str, int], dict]:
    """A speed record's rows by (row name, classes)."""
    return {(r["name"], r["classes"]): r for r in record(name)["rows"] if r.get("seconds")}


TOY = "toyworld_seed7.json"


TOY_CLASSES = ["background", "circle", "square", "triangle", "star", "cross", "heart"]


PROTOCOLS = ("gt", "reference", "all", "detect")
