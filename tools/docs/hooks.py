"""MkDocs hook: replace each ``<!-- generated: NAME -->`` line of a page with the table
:data:`tools.docs.reference.GENERATORS` makes from the code, at build time."""

from __future__ import annotations

import re
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # mkdocs loads this file by path; the tables import pnpovss and tools
    sys.path.insert(0, _ROOT)

from tools.docs.reference import GENERATORS  # noqa: E402

_MARK = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.M)


def on_page_markdown(markdown: str, **kwargs) -> str:
    def table(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise KeyError(f"unknown generated table {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return _MARK.sub(table, markdown)
