"""Reference tables generated from the code itself, so they cannot go stale: the configuration
fields (from the field table, ``pnpovss/fields.py``) and the code layout (each module's docstring).

The MkDocs hook (``tools/docs/hooks.py``) puts them into the pages at build time, in place of a
``<!-- generated: NAME -->`` line; ``python -m tools.docs.reference NAME`` prints one.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

ROOT = Path(__file__).resolve().parents[2]


class Field(NamedTuple):
    """One row of the configuration reference: a field's name, spec, default and docstring."""

    name: str
    spec: Any
    default: Any
    doc: str


def _cell(text: str) -> str:
    """``text`` as one Markdown table cell (no line breaks, pipes escaped)."""
    return " ".join(text.split()).replace("|", "\\|")


def _value(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def _range(spec: Any) -> str:
    """Where a value may lie: the choices, or the interval of a number (``optional``: or null)."""
    if spec.kind == "heads":
        return "head index >= 0, a list of them, or `null` (mean of all heads)"
    if spec.choices:
        text = ", ".join(f"`{c}`" for c in spec.choices)
    elif spec.min is not None and spec.max is not None:
        text = f"{'(' if spec.min_open else '['}{spec.min:g}, {spec.max:g}{')' if spec.max_open else ']'}"
    elif spec.min is not None:
        text = f"{'>' if spec.min_open else '>='} {spec.min:g}"
    elif spec.max is not None:
        text = f"{'<' if spec.max_open else '<='} {spec.max:g}"
    else:
        text = "any" if spec.kind in ("str", "bool") else "any finite"
    return text + (", or `null`" if spec.optional else "")


def field_docs() -> dict[str, str]:
    """The attribute docstrings of ``PipelineConfig`` (the string after each field), read from its source."""
    tree = ast.parse((ROOT / "pnpovss" / "config.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PipelineConfig")
    docs, last = {}, None
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            last = node.target.id
        elif last and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            docs[last], last = node.value.value, None
        else:
            last = None
    return docs


# One column per entry: (header, cell of a Field). A new column is one more line here.
CONFIG_COLUMNS: list[tuple[str, Callable[[Field], str]]] = [
    ("field", lambda f: f"`{f.name}`"),
    ("type", lambda f: "heads" if f.spec.kind == "heads" else f.spec.kind),
    ("range", lambda f: _range(f.spec)),
    ("default", lambda f: _value(f.default)),
    ("stage", lambda f: f.spec.stage),
    ("meaning", lambda f: f.doc),
]


def config_table(columns: list[tuple[str, Callable[[Field], str]]] = CONFIG_COLUMNS) -> str:
    """Every :class:`~pnpovss.PipelineConfig` field as one Markdown table row, in the dataclass's
    order, with the columns of ``columns`` (the spec from :data:`pnpovss.fields.FIELDS`)."""
    from pnpovss.config import PipelineConfig
    from pnpovss.fields import field_spec

    docs = field_docs()
    rows = [Field(f.name, field_spec(f.name), f.default, docs.get(f.name, ""))
            for f in dataclasses.fields(PipelineConfig)]
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(cell(row)) for _, cell in columns) + " |" for row in rows]
    return "\n".join(lines)


LAYOUT_ROOTS = ("pnpovss", "tools", "bench")
"""The folders whose modules the layout table lists (``tests/`` is described on its page)."""


def module_summary(path: Path) -> str | None:
    """The first paragraph of a module's docstring, on one line; ``None`` without a docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text()))
    return " ".join(doc.strip().split("\n\n")[0].split()) if doc else None


def layout_table() -> str:
    """One row per module of :data:`LAYOUT_ROOTS`: its path and its docstring's first paragraph
    (``__main__.py`` entry points, which only call the CLI, are left out)."""
    lines = ["| module | job |", "| --- | --- |"]
    for base in LAYOUT_ROOTS:
        for path in sorted((ROOT / base).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            rel = path.relative_to(ROOT).as_posix()
            summary = module_summary(path)
            if summary is None:
                raise ValueError(f"{rel} has no module docstring: the layout table reads its first paragraph")
            lines.append(f"| `{rel}` | {_cell(summary)} |")
    return "\n".join(lines)


GENERATORS: dict[str, Callable[[], str]] = {"config-fields": config_table, "layout": layout_table}
"""Name (as in ``<!-- generated: NAME -->``) -> the function that writes it."""


if __name__ == "__main__":
    print(GENERATORS[sys.argv[1]]())
