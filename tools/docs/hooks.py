"""MkDocs hook, at build time: each ``<!-- generated: NAME -->`` line of a page becomes the table
:data:`tools.docs.reference.GENERATORS` makes from the code, and each ``{{name}}`` in the prose the
number ``bench/quoted.py``'s ``values()`` computes from the recorded benchmarks."""

from __future__ import annotations

import re
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # mkdocs loads this file by path; the tables import pnpovss and tools
    sys.path.insert(0, _ROOT)

from tools.docs.reference import GENERATORS  # noqa: E402

_MARK = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.M)
_VALUE = re.compile(r"(`+).+?\1|\{\{\s*([\w.-]+)\s*\}\}", re.S)  # code spans are left as they are
_values: dict[str, str] | None = None


def quoted_values() -> dict[str, str]:
    """``bench/quoted.py``'s :func:`values`, computed once per build from the records."""
    global _values
    if _values is None:
        import importlib

        bench = str(Path(_ROOT) / "bench")
        if bench not in sys.path:  # the bench scripts import their siblings from bench/, as when run there
            sys.path.insert(0, bench)
        _values = importlib.import_module("quoted").values()
    return _values


def on_page_markdown(markdown: str, **kwargs) -> str:
    def table(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise KeyError(f"unknown generated table {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    def value(match: re.Match) -> str:
        name = match.group(2)
        if name is None:
            return match.group(0)
        if name not in quoted_values():
            raise KeyError(f"unknown quoted value {{{{{name}}}}}: add it to values() in bench/quoted.py")
        return quoted_values()[name]

    return _MARK.sub(table, _VALUE.sub(value, markdown))  # generated tables may quote ``{{name}}`` themselves
