"""Plain drawn shapes (PIL: a filled disc, square and triangle on noisy grey, no texture) through a
toy model, all six shapes as candidates: does presence keep the drawn class, and the IoU of its mask
(the shape world's bar: IoU >= 0.5 each, presence keeping them).

    python bench/toy_drawings.py --model toy-shapes --json bench/results/toy_drawings_toy-shapes.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from pnpovss import Segmenter
from pnpovss.toyworld.drawings import DRAWN_SHAPES, plain_drawing
from pnpovss.toyworld.world import SHAPES
from benchio import emit  # (bench/ is this script's directory)


def measure(model: str, **overrides) -> dict:
    """Per drawing: kept classes, presence probability of the drawn class, IoU with presence on and
    with the drawn class given (presence not needed)."""
    seg = Segmenter.from_pretrained(model, **overrides)
    out = {}
    for shape, colour in DRAWN_SHAPES:
        img, mask = plain_drawing(shape, colour, seed=SHAPES.index(shape))
        res = seg.segment(img, list(SHAPES))
        pred = res.labels == res.classes.index(shape) if shape in res.classes else np.zeros_like(mask)
        given = seg.segment(img, [shape])
        gpred = given.labels == given.classes.index(shape) if shape in given.classes else np.zeros_like(mask)
        out[shape] = {
            "kept": list(res.presence.kept) if res.presence else None,
            "presence_score": res.presence.to_json()[shape]["score"] if res.presence else None,
            "iou": round(float((pred & mask).sum() / (pred | mask).sum()), 4),
            "iou_label_given": round(float((gpred & mask).sum() / (gpred | mask).sum()), 4),
        }
    return {"model": model, "drawings": out,
            "bar_met": all(v["iou"] >= 0.5 and shape in (v["kept"] or []) for shape, v in out.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy-shapes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                    help="override a pipeline option of the model preset, e.g. --set layer=1")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from pnpovss.fields import parse_assignments

    overrides = parse_assignments(args.assignments)
    emit({**measure(args.model, **overrides), **({"overrides": overrides} if overrides else {})}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
