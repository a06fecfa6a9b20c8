"""Large images: post-processing at a working resolution (``postprocess_max_side``) against full
resolution (prints/writes JSON).

    python bench/large_image.py --agreement --images 5 --sizes 1536 2560    # toy images rendered large
    python bench/large_image.py --cli                                         # a 6000x4000 JPEG through `pnpovss segment`
    python bench/large_image.py --cli --full-res                              # + the same run at full resolution (~2.5 min, ~7 GB)

``--agreement``: toy-world images (dev seed 0) rendered natively at each size (sharp edges, exact
masks); the toy model's class maps are computed once per image, then post-processed at full
resolution (``postprocess_max_side=None``) and with the default working size. Reports the share
of pixels whose label agrees and the mIoU of both against the ground truth, with the time of
each post-processing.

``--cli``: a 6000x4000 JPEG (a toy image scaled up, with noise) segmented by ``pnpovss segment
--model toy`` in a fresh process per row; wall time and peak resident memory of that process
(``os.wait4``), and with ``--full-res`` the label agreement between the two rows' labels.png.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pnpovss import PipelineConfig, Segmenter
from pnpovss.metrics import ConfusionMatrix
from pnpovss.postprocess import postprocess
from pnpovss.toyworld.world import SHAPES, make_sample
from benchio import emit  # noqa: E402  (bench/ is this script's directory)

CLASSES = ["background", *SHAPES]


def agreement(images: int, sizes: list[int], seed: int) -> dict:
    seg = Segmenter.from_pretrained("toy")
    default_side = PipelineConfig().postprocess_max_side
    rows = {}
    for size in sizes:
        agree, secs = [], {"full": 0.0, "working": 0.0}
        cms = {k: ConfusionMatrix(len(CLASSES)) for k in secs}
        for i in range(images):
            s = make_sample(seed, i, size)
            pixels = seg.backbone.preprocess([s.image], seg.image_size())
            maps = seg.class_grid_maps(pixels, seg.backbone.encode_image(pixels), [s.labels], seg.config)[0]
            lut = np.array([CLASSES.index(n) for n in ["background", *s.labels]])
            out = {}
            for name, side in (("full", None), ("working", default_side)):
                t0 = time.perf_counter()
                out[name] = postprocess(maps, s.image, seg.config.replace(postprocess_max_side=side))[0]
                secs[name] += time.perf_counter() - t0
                cms[name].update(lut[out[name]], s.mask.astype(np.int64))
            agree.append(float((out["full"] == out["working"]).mean()))
            print(f"size {size} image {i + 1}/{images}: agreement {agree[-1]:.4f}", file=sys.stderr, flush=True)
        rows[str(size)] = {
            "working_size": default_side, "images": images,
            "label_agreement_mean": round(float(np.mean(agree)), 4), "label_agreement_min": round(min(agree), 4),
            "miou_full": round(cms["full"].summary(CLASSES)["miou"], 2),
            "miou_working": round(cms["working"].summary(CLASSES)["miou"], 2),
            "seconds_per_image_full": round(secs["full"] / images, 2),
            "seconds_per_image_working": round(secs["working"] / images, 2),
        }
    return {"seed": seed, "postprocess_max_side": default_side, "sizes": rows}


def big_jpeg(path: Path, width: int = 6000, height: int = 4000) -> None:
    """A toy image scaled up to width x height, with pixel noise so the JPEG is photo-sized."""
    s = make_sample(0, 3, 1000)
    img = np.asarray(Image.fromarray(s.image).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(0).integers(-6, 7, img.shape, dtype=np.int16)
    Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8)).save(path, quality=90)


def timed(cmd: list[str]) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in GiB, exit code) of one child process. CPU time is
    the figure to compare on a machine shared with other jobs, where wall time stretches."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - t0, cpu, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status)


def cli(full_res: bool, threads: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="pnpovss-large-"))
    image = tmp / "big.jpg"
    big_jpeg(image)
    env_threads = {"OMP_NUM_THREADS": str(threads)}
    os.environ.update(env_threads)
    rows = {}
    variants = {"default": []} | ({"full_resolution": ["--set", "postprocess_max_side=none"]} if full_res else {})
    for name, extra in variants.items():
        out = tmp / name
        cmd = [sys.executable, "-m", "pnpovss", "segment", str(image), "--classes", "circle,star,triangle",
               "--model", "toy", "--out", str(out), *extra]
        seconds, cpu, rss, code = timed(cmd)
        if code:
            raise SystemExit(f"{' '.join(cmd)} exited with {code}")
        rows[name] = {"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "peak_rss_gib": round(rss, 2)}
        print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    result = {"image": "6000x4000 JPEG", "threads": threads, "load_average_1min": round(os.getloadavg()[0], 2),
              "rows": rows}
    if full_res:
        a = np.asarray(Image.open(tmp / "default" / "big.labels.png"))
        b = np.asarray(Image.open(tmp / "full_resolution" / "big.labels.png"))
        result["label_agreement"] = round(float((a == b).mean()), 4)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agreement", action="store_true")
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1536, 2560])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cli", action="store_true")
    ap.add_argument("--full-res", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {}
    if args.agreement:
        result["agreement"] = agreement(args.images, args.sizes, args.seed)
    if args.cli:
        result["cli"] = cli(args.full_res, args.threads)
    emit(result, args.json)


if __name__ == "__main__":
    main()
