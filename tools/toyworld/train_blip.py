"""The BLIP command of the toy trainer: ``python -m tools.toyworld.train_blip ...`` is
``python -m tools.toyworld.train_itm --arch blip ...`` (the shipped ``weights/blip`` was made with
this command; its recorded invocations keep working)."""

from __future__ import annotations

from .train_itm import main as _main


def main(argv: list[str] | None = None) -> None:
    import sys

    _main(["--arch", "blip", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
