"""``pnpovss`` command line. Every user error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .errors import PnpOvssError
from .imageio import IMAGE_SUFFIXES


def _fail_cleanly(fn: Callable) -> Callable:
    """Turn library errors into click's one-line ``Error: ...`` (exit 1) and Ctrl-C into exit 130."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PnpOvssError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def expand_inputs(items: tuple[str, ...]) -> list[Path]:
    """Files, directories (their image files, sorted) and quoted globs -> image paths."""
    paths: list[Path] = []
    for item in items:
        if any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item))
            if not matches:
                raise PnpOvssError(f"{item}: the pattern matches no file")
            paths.extend(Path(m) for m in matches if not Path(m).is_dir())
        elif Path(item).is_dir():
            found = sorted(p for p in Path(item).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise PnpOvssError(f"{item}: directory holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        else:
            paths.append(Path(item))
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems and stems[p.stem] != p:
            raise PnpOvssError(f"{stems[p.stem]} and {p} would write the same output files; rename one or run them separately")
        stems[p.stem] = p
    return paths


def parse_head(value: str | None) -> int | tuple[int, ...] | None | str:
    """``"9"`` -> 9, ``"3,9"`` -> (3, 9), ``"all"`` -> None; unset -> sentinel (keep preset)."""
    if value is None:
        return "unset"
    if value.strip().lower() in ("all", "mean"):
        return None
    try:
        heads = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise PnpOvssError(f"--head takes an index, a comma list of indices or 'all', got {value!r}") from None
    return heads[0] if len(heads) == 1 else heads


@click.group()
@click.version_option(package_name="pnpovss")
def main() -> None:
    """Training-free open-vocabulary semantic segmentation (PnP-OVSS)."""


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--classes", required=True, help='Comma-separated class names, e.g. "cat,grass,sky".')
@click.option("--out", "out_dir", default="pnpovss-out", show_default=True, type=click.Path(file_okay=False),
              help="Output directory.")
@click.option("--model", default=None, help="Hub id, local directory, or 'toy'. [default: Salesforce/blip-itm-large-flickr]")
@click.option("--preset", type=click.Path(dir_okay=False), default=None, help="Preset JSON (e.g. a tune run's best.json).")
@click.option("--image-size", type=int, default=None, help="Square input size; default: the checkpoint's own (384 for BLIP-large).")
@click.option("--layer", type=int, default=None, help="Cross-attention layer, 1-based. [default: 8]")
@click.option("--head", default=None, help="Head index (0-based), comma list to average, or 'all'. [default: 9]")
@click.option("--drop-iters", type=int, default=None, help="Salience DropOut passes (1 = none). [default: 4]")
@click.option("--drop-k", type=int, default=None, help="Patches dropped per pass. [default: 10]")
@click.option("--halving", is_flag=True, default=None, help="Drop half of the remaining patches per pass instead of --drop-k.")
@click.option("--threshold", type=float, default=None, help="Map threshold after min-max. [default: 0.15]")
@click.option("--background/--no-background", default=None, help="Add a background label. [default: on]")
@click.option("--no-crf", is_flag=True, default=False, help="Plain argmax instead of the dense CRF.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="Images per forward pass.")
@_fail_cleanly
def segment(images: tuple[str, ...], classes: str, out_dir: str, model: str | None, preset: str | None,
            image_size: int | None, layer: int | None, head: str | None, drop_iters: int | None,
            drop_k: int | None, halving: bool | None, threshold: float | None, background: bool | None,
            no_crf: bool, device: str, batch_size: int) -> None:
    """Segment IMAGES (files, directories or globs) into CLASSES.

    Writes NAME.labels.png (palette PNG, pixel = label index), NAME.overlay.png and NAME.json
    (labels, config, pixel fraction per label) for each image into --out.
    """
    from tqdm import tqdm

    from .backbones import DEFAULT_MODEL
    from .imageio import atomic_save_image, atomic_write_text, label_png, load_image
    from .pipeline import Segmenter, parse_classes

    names = parse_classes(classes)
    paths = expand_inputs(images)
    for p in paths:  # fail on bad input before spending time on the model
        load_image(p)
    given = dict(image_size=image_size, layer=layer, drop_iters=drop_iters, drop_k=drop_k,
                 halving=halving, threshold=threshold, background=background, head=parse_head(head))
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None and v != "unset"}
    if head is not None and given["head"] is None:
        overrides["head"] = None  # "all": average every head
    if no_crf:
        overrides["crf"] = False
    source = model or DEFAULT_MODEL
    click.echo(f"loading {source} ...", err=True)
    seg = Segmenter.from_pretrained(source, device=device, preset=preset, **overrides)
    out = Path(out_dir)
    bar = tqdm(total=len(paths), unit="img", disable=len(paths) < 2, file=sys.stderr)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        results = seg.segment_batch([str(p) for p in chunk], names)
        for path, res in zip(chunk, results):
            meta = {
                "image": str(path),
                "model": source,
                "classes": res.classes,
                "size": list(res.labels.shape),
                "fractions": res.fractions(),
                "config": res.config.to_dict(),
            }
            atomic_save_image(out / f"{path.stem}.labels.png", label_png(res.labels))
            atomic_save_image(out / f"{path.stem}.overlay.png", res.overlay())
            atomic_write_text(out / f"{path.stem}.json", json.dumps(meta, indent=2) + "\n")
        bar.update(len(chunk))
    bar.close()
    click.echo(f"wrote {3 * len(paths)} files to {out}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
