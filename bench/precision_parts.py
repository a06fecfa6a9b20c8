"""Which parts of the pipeline can run in bf16: the full toy-world pipeline in fp32, with bf16 in
the vision encoder and the image key/value projections (what ``dtype="bf16"`` does), and with bf16
on the text side too (its forward and the GradCAM backward). Prints JSON: per setting the fraction of label pixels equal to
fp32's and the largest class-map difference relative to that image's fp32 map maximum. A dev-seed
measurement that chose ``pnpovss.precision.Precision.text = False``; not a test.

    python bench/precision_parts.py --seed 0 --images 40 --json bench/results/precision_parts_seed0.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from pnpovss import Segmenter
from pnpovss.toyworld.world import make_sample


class PartsSegmenter(Segmenter):
    """A Segmenter whose reduced precision covers the text side too when ``text_reduced``."""

    text_reduced = False

    def precision(self, config=None):
        return dataclasses.replace(super().precision(config), text=self.text_reduced)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy")
    ap.add_argument("--seed", type=int, default=0, help="a development seed")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seg = PartsSegmenter.from_pretrained(args.model, device="cpu")
    samples = [make_sample(args.seed, i) for i in range(args.images)]

    def run(dtype: str, text: bool) -> tuple[list, list, float]:
        seg.text_reduced = text
        start = time.perf_counter()
        out = [seg.segment(s.image, s.labels, keep_all=True, dtype=dtype) for s in samples]
        return [r.labels for r in out], [r.grid_maps for r in out], time.perf_counter() - start

    ref_labels, ref_maps, ref_s = run("fp32", False)
    result = {"seed": args.seed, "images": args.images, "model": args.model, "fp32_seconds": round(ref_s, 2),
              "settings": {}}
    for name, text in (("bf16_vision", False), ("bf16_vision_and_text", True)):
        labels, maps, secs = run("bf16", text)
        result["settings"][name] = {
            "pixel_agreement_with_fp32": round(float(np.mean([np.mean(a == b) for a, b in zip(labels, ref_labels)])), 5),
            "max_map_diff_over_fp32_max": round(max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
                                                    for a, b in zip(maps, ref_maps)), 4),
            "seconds": round(secs, 2),
        }
    text_out = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text_out + "\n")
    print(text_out)


if __name__ == "__main__":
    main()
