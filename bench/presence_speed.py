"""Cost of the class-presence stage beside the default pipeline, on full-size BLIP ITM-large with
random weights (no download), CPU, one process. Prints JSON; not a test.

    python bench/presence_speed.py --json bench/results/presence_speed.json

Rows (seconds per image, median of ``--repeats`` after one warm-up):
  pipeline                 the default pipeline from the preprocessed tensor to the class maps (pass-0
                           encoding, T = 4 GradCAM + Salience DropOut passes) for 5 classes
  presence_20 / _150       presence scores of 20 (Pascal VOC) / 150 (ADE20K) candidates on the cached
                           pass-0 image tokens, captions in chunks of ``pnpovss.presence.CHUNK_SIZE``
  presence_150_per_caption the same 150 with the image tokens repeated per caption (what a backbone
                           without shared image attention pays: the image keys/values projected once
                           per caption)
  clip_opinion_150         CLIP's second opinion (``presence_clip_ratio``) over the 150: one whole-image
                           forward of a full-size open_clip ViT-B-16 (random weights) against the 150
                           candidates' text embeddings, which are computed once per candidate list
                           (their one-off cost: ``clip_text_150``)
``ratio`` = presence seconds / pipeline seconds (the issue's budget: at most 0.5 at 150 classes).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import bench_images, build_backbone  # noqa: E402

from pnpovss import PipelineConfig  # noqa: E402
from pnpovss.backbones.base import Backbone  # noqa: E402
from pnpovss.datasets import load_vocabulary  # noqa: E402
from pnpovss.dropout import salience_dropout  # noqa: E402
from pnpovss.presence import CHUNK_SIZE, clip_opinion, presence_scores  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def random_clip():
    """A full-size open_clip ViT-B-16 with random weights (no download), as the presence stage's scorer."""
    import open_clip

    from pnpovss.reward import ClipModel, ClipScorer

    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    cfg = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    clip = ClipModel(model, open_clip.get_tokenizer("ViT-B-16"), 224, tuple(cfg.get("mean", (0.481, 0.458, 0.408))),
                     tuple(cfg.get("std", (0.269, 0.261, 0.276))), "ViT-B-16 (random weights)")
    return ClipScorer(clip, template="a photo of a {}.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    voc, ade = load_vocabulary("voc"), load_vocabulary("ade20k")
    backbone = build_backbone("blip", words=[*voc, *ade])
    cfg = PipelineConfig()
    pixels = backbone.preprocess(bench_images(1), args.image_size)
    text = backbone.build_text(cfg.prompt, [voc[:5]])

    def pipeline() -> None:
        salience_dropout(backbone, pixels, backbone.encode_image(pixels), text, cfg)

    embeds = backbone.encode_image(pixels)
    rows = {"pipeline": timed(pipeline, args.repeats)}
    for name, vocab in (("presence_20", voc), ("presence_150", ade)):
        rows[name] = timed(lambda v=vocab: presence_scores(backbone, embeds, v, cfg.prompt), args.repeats)
    scorer = random_clip()
    rgb = bench_images(1)[0]
    rows["clip_text_150"] = timed(lambda: (scorer._text.clear(), scorer.text_embeddings([[c] for c in ade])), args.repeats)
    rows["clip_opinion_150"] = timed(lambda: clip_opinion(scorer, rgb, ade), args.repeats)
    backbone.broadcasts_image = False  # the generic path: image tokens repeated for every caption
    backbone.match_probability = functools.partial(Backbone.match_probability, backbone)
    rows["presence_150_per_caption"] = timed(lambda: presence_scores(backbone, embeds, ade, cfg.prompt), args.repeats)
    base = statistics.median(rows["pipeline"])
    out = {"model": "BLIP ITM-large, random weights", "image_size": args.image_size, "threads": args.threads,
           "chunk_size": CHUNK_SIZE, "pipeline_classes": 5, "drop_iters": cfg.drop_iters,
           "rows": {k: {"seconds": round(statistics.median(v), 3), "seconds_each": [round(s, 3) for s in v],
                        **({"ratio": round(statistics.median(v) / base, 3)} if k != "pipeline" else {})}
                    for k, v in rows.items()}}
    text_out = json.dumps(out, indent=2)
    if args.json:
        from pnpovss.fileio import atomic_write_text

        atomic_write_text(args.json, text_out + "\n")
    print(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
