"""bf16 against fp32 on the same images in one process, back to back (prints JSON; not a test).

    python bench/precision_paired.py --classes 1,5 --images 5 --json bench/results/precision_paired.json

Why beside ``bench/speed.py``: that runs every row in a fresh process, so that each row's peak memory
is its own; on a shared 2-vCPU VM the time of one computation then drifts by up to +-20% between
processes, as much as the question whether bf16 takes at most 0.65x of fp32's time. Here one process
(BLIP-large with random weights, as ``speed.py``; 384 px, T = 4 DropOut passes, 2 threads) runs both
precisions on each image in turn, alternating which goes first, so slow spells hit both; the ratio is
taken per image (bf16 seconds / fp32 seconds of the same image) and reported with its median and
range. ``--reference`` adds the reference computation pattern (three times as long) for the
speed-up against it; ``--compile`` adds both precisions with the compiled vision encoder
(``Backbone.compile_vision``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from speed import CLASSES, bench_images, build_backbone, gflops, reference_pattern, with_dtype  # noqa: E402

from pnpovss import PipelineConfig  # noqa: E402
from pnpovss.fileio import atomic_write_text  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", default="1,5", help="comma list of class counts")
    ap.add_argument("--images", type=int, default=5, help="measured images per class count")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--reference", action="store_true", help="also time the reference pattern on each image")
    ap.add_argument("--compile", action="store_true",
                    help="also time both precisions with the compiled vision encoder (compiled during the warm-up)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    backbone = build_backbone("blip")
    cfg = PipelineConfig().replace(**backbone.pipeline_defaults).replace(image_size=args.image_size, drop_iters=4)
    images = backbone.preprocess(bench_images(args.images + 1), args.image_size)
    rows = {"fp32": with_dtype("fp32"), "bf16": with_dtype("bf16")}
    if args.compile:
        rows.update(fp32_compiled=with_dtype("fp32", compiled=True), bf16_compiled=with_dtype("bf16", compiled=True))
    if args.reference:
        rows["reference_pattern"] = reference_pattern
    result: dict = {"model": "blip-large (random weights)", "image_size": args.image_size, "threads": args.threads,
                    "drop_iters": cfg.drop_iters, "torch": torch.__version__, "by_classes": []}
    for n in (int(c) for c in args.classes.split(",")):
        text = backbone.build_text(cfg.prompt, [CLASSES[:n]])
        for fn in rows.values():  # warm-up: one pass each
            fn(backbone, images[:1], text, cfg.replace(drop_iters=1))
        seconds: dict[str, list[float]] = {name: [] for name in rows}
        speeds = []
        for i in range(1, args.images + 1):
            order = list(rows) if i % 2 else list(reversed(rows))
            speeds.append(round(gflops(), 1))
            for name in order:
                start = time.perf_counter()
                rows[name](backbone, images[i : i + 1], text, cfg)
                seconds[name].append(round(time.perf_counter() - start, 3))
            print(f"[{n} classes, image {i}] " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items()),
                  file=sys.stderr, flush=True)
        ratio = [b / f for b, f in zip(seconds["bf16"], seconds["fp32"])]
        over_fp32 = {name: round(statistics.median(s / f for s, f in zip(v, seconds["fp32"])), 3)
                     for name, v in seconds.items() if name != "fp32"}
        entry = {"classes": n, "seconds": seconds, "gflops_each": speeds,
                 "median_seconds": {k: statistics.median(v) for k, v in seconds.items()},
                 "bf16_over_fp32_per_image": [round(r, 3) for r in ratio],
                 "bf16_over_fp32_median": round(statistics.median(ratio), 3),
                 "bf16_over_fp32_range": [round(min(ratio), 3), round(max(ratio), 3)],
                 "over_fp32_median": over_fp32}
        if args.reference:
            speedup = [r / b for r, b in zip(seconds["reference_pattern"], seconds["bf16"])]
            entry["bf16_speedup_vs_reference_median"] = round(statistics.median(speedup), 2)
        result["by_classes"].append(entry)
    text_out = json.dumps(result, indent=2)
    print(text_out)
    if args.json:
        atomic_write_text(args.json, text_out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
