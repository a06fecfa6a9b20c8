"""Do results depend on the image's pixel size? Toy scenes upscaled (prints/writes JSON).

    python bench/resolution.py --seed 0 7 --images 10 --sizes 96 384 1024 \
        --json bench/results/resolution_dev.json
    python bench/resolution.py --seed 11 --images 24 --json bench/results/resolution_seed11.json

Each toy-world image (96 px, labels given, the toy model with its preset) is upscaled to every
``--sizes`` (bicubic image, nearest-neighbour ground truth) and run through the whole pipeline at
that size: the class maps (the network sees the upscaled image resized to its input size, as any
photo) and the post-processing of each variant. Only the pixel size changes, so what moves the
score is post-processing and the resampled picture (the issue that asked for this measured 66.7
mIoU at 96 px and 57.1 at 1024 px with the reference's absolute-pixel CRF kernels). Per size and
variant: mIoU against the upscaled ground truth, and the share of pixels labelled as at native
size (the native labels upscaled nearest-neighbour). Variants (``--variants``):

* ``default``: the model's own settings (the toy preset: ``crf_reference_side=96``, its scenes' size);
* ``absolute``: CRF kernels in pixels (``crf_reference_side=None``), as the reference;
* ``no_crf``: blur + argmax (blur is already a fraction of the image size);
* ``relative``: ``crf_reference_side=--reference-side`` (the library default, 512): the CRF's
  spatial kernels scaled with the post-processed long side above that size
  (:func:`pnpovss.postprocess.crf_kernels`);
* ``working_512``: the model's settings with a 512 px working size (the demo page's default);
* ``relative_compat``: the same as ``relative``, with the compatibilities also divided by the scale squared (as
  if pydensecrf's kernels were unnormalised sums; they are normalised).

Post-processing above ``postprocess_max_side`` (1024) runs at that working size, so 2048 px also
measures the working-size cap. ``--network-input native`` takes the class maps from the 96 px scene
(only post-processing sees the size) and ``--upscale nearest`` enlarges without smoothing: the two
together isolate the CRF's geometry from the resampled picture (development seeds only):

    python bench/resolution.py --seed 0 7 --images 10 --sizes 96 384 --variants default absolute \
        --upscale nearest --network-input native --json bench/results/resolution_dev_isolated.json

and on the held-out seed, with the usual bicubic enlargement (post-processing alone, at every size):

    python bench/resolution.py --seed 11 --images 24 --variants default no_crf --network-input native \
        --json bench/results/resolution_seed11_native_maps.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pnpovss import Segmenter
from pnpovss.metrics import ConfusionMatrix
from pnpovss.postprocess import postprocess, working_size
from pnpovss.toyworld.world import SHAPES, make_sample
from benchio import emit  # noqa: E402  (bench/ is this script's directory)

CLASSES = ["background", *SHAPES]
VARIANTS = ("default", "absolute", "no_crf", "relative", "relative_compat", "working_512")


def variant_config(config, name: str, side: int, reference: int):
    """The settings of variant ``name`` for an image whose long side is ``side`` px."""
    if name == "default":
        return config
    if name == "working_512":  # the demo page's working size
        return config.replace(postprocess_max_side=512)
    if name == "no_crf":
        return config.replace(crf=False)
    if name == "relative":
        return config.replace(crf_reference_side=reference)
    if name == "absolute":
        return config.replace(crf_reference_side=None)
    if name == "relative_compat":
        work = max(working_size((side, side), config.postprocess_max_side))
        scale = max(1.0, work / reference)
        return config.replace(crf_reference_side=reference, crf_gaussian_compat=config.crf_gaussian_compat / scale**2,
                              crf_bilateral_compat=config.crf_bilateral_compat / scale**2)
    raise ValueError(name)


def upscale(image: np.ndarray, mask: np.ndarray, size: int, method: str = "bicubic") -> tuple[np.ndarray, np.ndarray]:
    if size == image.shape[0]:
        return image, mask
    resample = Image.Resampling.BICUBIC if method == "bicubic" else Image.Resampling.NEAREST
    img = np.asarray(Image.fromarray(image).resize((size, size), resample))
    return img, np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST))


def nearest(labels: np.ndarray, size: int) -> np.ndarray:
    idx = (np.arange(size) * labels.shape[0]) // size
    return labels[idx[:, None], idx[None, :]]


def measure(seed: int, images: int, sizes: list[int], variants: list[str], reference: int,
            method: str = "bicubic", network_input: str = "upscaled") -> dict:
    seg = Segmenter.from_pretrained("toy", device="cpu")
    cms = {(s, v): ConfusionMatrix(len(CLASSES)) for s in sizes for v in variants}
    agree = {(s, v): [] for s in sizes for v in variants}
    secs = {(s, v): 0.0 for s in sizes for v in variants}
    for i in range(images):
        sample = make_sample(seed, i)
        lut = np.array([CLASSES.index(n) for n in ["background", *sample.labels]])
        native: dict[str, np.ndarray] = {}
        for size in sorted(sizes):
            img, truth = upscale(sample.image, sample.mask, size, method)
            pixels = seg.backbone.preprocess([sample.image if network_input == "native" else img], seg.image_size())
            maps = seg.class_grid_maps(pixels, seg.encode(pixels), [sample.labels], seg.config)[0]
            for v in variants:
                t0 = time.perf_counter()
                labels = postprocess(maps, img, variant_config(seg.config, v, size, reference))[0]
                secs[size, v] += time.perf_counter() - t0
                cms[size, v].update(lut[labels], truth.astype(np.int64))
                if size == sample.image.shape[0]:
                    native[v] = labels
                if v in native:
                    agree[size, v].append(float((labels == nearest(native[v], size)).mean()))
        print(f"seed {seed} image {i + 1}/{images}", file=sys.stderr, flush=True)
    rows = {}
    for size in sizes:
        rows[str(size)] = {v: {"miou": round(cms[size, v].summary(CLASSES)["miou"], 2),
                               "agreement_with_native": round(float(np.mean(agree[size, v])), 4) if agree[size, v] else None,
                               "postprocess_seconds_per_image": round(secs[size, v] / images, 2)}
                           for v in variants}
    return {"seed": seed, "images": images, "reference_side": reference, "model": "toy (its preset)",
            "default_crf_reference_side": seg.config.crf_reference_side, "upscale": method,
            "network_input": network_input,
            "labels": "given (keep_all)", "sizes": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, nargs="+", default=[11])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 384, 1024, 2048])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=["default", "absolute", "no_crf", "relative"])
    ap.add_argument("--reference-side", type=int, default=512)
    ap.add_argument("--upscale", choices=["bicubic", "nearest"], default="bicubic",
                    help="how the scenes are enlarged (nearest: the same picture in blocks, no smoothing)")
    ap.add_argument("--network-input", choices=["upscaled", "native"], default="upscaled",
                    help="native: the class maps come from the 96 px scene itself, so only post-processing sees the size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"command": "python bench/resolution.py " + " ".join(sys.argv[1:]),
              "runs": [measure(s, args.images, args.sizes, args.variants, args.reference_side, args.upscale,
                               args.network_input) for s in args.seed],
              "load_average_1min": round(os.getloadavg()[0], 2)}
    emit(result, args.json)


if __name__ == "__main__":
    main()
