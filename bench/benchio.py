"""What the bench scripts share: printing a record and writing it (bench/ is each script's
directory, so ``from benchio import emit`` works from any of them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def emit(record: dict[str, Any], path: str | Path | None, markdown: str | None = None) -> None:
    """Print the record (JSON, stdout) and its table (stderr), and write the record to ``path``
    atomically (a killed bench never leaves half a record)."""
    from pnpovss.fileio import atomic_write_text

    text = json.dumps(record, indent=2)
    print(text)
    if markdown:
        print(markdown, file=sys.stderr)
    if path:
        atomic_write_text(Path(path), text + "\n")
