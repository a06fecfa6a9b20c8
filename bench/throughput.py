"""Images per second of ``pnpovss segment`` on a folder: 1 vs 2 processes (``torchrun``) and
without / with the I/O overlap (``--workers``). Prints JSON; not a test.

    python bench/throughput.py --json bench/results/throughput.json    # toy folder + BLIP-L, ~10 min
    python bench/throughput.py --table bench/results/throughput.json   # the docs table of a result

Two folders, each segmented by every combination of processes (1: a plain process; 2: torchrun
--standalone --nproc_per_node 2, gloo) and ``--workers`` (0: decode, network, post-processing in
order in one process; 1: one DataLoader worker decoding ahead and one pool process post-processing):

  toy   ``--images`` toy-world images (96 px) with the shipped toy model, ``--vocab toyworld``
  blip  ``--blip-images`` 480x640 images (bench/speed.py's) with a full-size BLIP ITM-large of
        random weights (bench/speed.py's builder, saved once with save_pretrained so that every
        row loads it through ``--model DIR``), 5 VOC classes, ``--keep-all``

Every row is the real CLI command (``--batch-size 1``, ``--device cpu``) into a fresh ``--out``;
``seconds`` and ``images_per_second`` are the run's own (OUT/pnpovss_run.json: from the first
image to the last write, over all processes, model loading excluded), ``wall_seconds`` the whole
command (imports and model loading included). Every process runs ``--threads`` torch threads
(default 1: on a 2-core machine shared with other jobs, a first attempt with 2 threads in the
single process ran the toy folder at 0.6 img/s, where a quick 8-image run with 1 thread had made
4.6 img/s). ``same_files_as_first`` says whether the row wrote the same label PNGs and JSON as the row
with 1 process and no workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
COMBOS = [(1, 0), (1, 1), (2, 0), (2, 1)]
"""(processes, workers) per row."""
BLIP_CLASSES = "aeroplane,bicycle,bird,boat,bottle"


def toy_folder(directory: Path, count: int) -> Path:
    from PIL import Image

    from pnpovss.toyworld.world import make_sample

    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(make_sample(7, i).image).save(directory / f"toy{i:04d}.png")
    return directory


def blip_folder(directory: Path, count: int) -> Path:
    from PIL import Image

    sys.path.insert(0, str(BENCH))
    from speed import bench_images

    directory.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(bench_images(count)):
        Image.fromarray(img).save(directory / f"img{i:03d}.png")
    return directory


def save_random_blip(directory: Path) -> Path:
    """bench/speed.py's full-size random BLIP ITM-large, saved as a model directory."""
    from transformers import BlipImageProcessor, BlipProcessor

    sys.path.insert(0, str(BENCH))
    from speed import build_backbone

    backbone = build_backbone("blip", words=BLIP_CLASSES.split(","))
    backbone.model.save_pretrained(directory)
    BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=backbone.tokenizer).save_pretrained(directory)
    return directory


def units(out: Path) -> dict[str, tuple[bytes, dict]]:
    """Each image's label PNG bytes and JSON (what must not depend on processes or workers)."""
    return {p.stem: ((out / (p.stem + ".labels.png")).read_bytes(), json.loads(p.read_text()))
            for p in out.glob("*.json") if p.name != "pnpovss_run.json"}


def run_row(model: str, folder: Path, args: list[str], processes: int, workers: int, out: Path,
            threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT) + os.pathsep
           + os.environ.get("PYTHONPATH", "")}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
              if processes > 1 else [sys.executable])
    cmd = [*launch, "-m", "pnpovss", "segment", str(folder), *args, "--out", str(out), "--batch-size", "1",
           "--device", "cpu", "--workers", str(workers)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"model": model, "processes": processes, "workers": workers, "error": proc.stderr[-2000:]}
    summary = json.loads((out / "pnpovss_run.json").read_text())
    return {"model": model, "processes": processes, "workers": workers, "threads_per_process": threads,
            "images": summary["counts"]["segmented"], "seconds": summary["seconds"],
            "images_per_second": summary["images_per_second"], "wall_seconds": round(wall, 2),
            "load_average_before": round(load, 2)}


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per model: overlap (workers 1 over 0) at 1 and 2 processes, and 2 processes over 1."""
    out: dict[str, dict[str, float]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        ips = {(r["processes"], r["workers"]): r["images_per_second"] for r in rows
               if r["model"] == model and "images_per_second" in r}
        got: dict[str, float] = {}
        for p in (1, 2):
            if (p, 0) in ips and (p, 1) in ips:
                got[f"overlap_{p}_process"] = round(ips[(p, 1)] / ips[(p, 0)], 3)
        for w in (0, 1):
            if (1, w) in ips and (2, w) in ips:
                got[f"two_processes_workers_{w}"] = round(ips[(2, w)] / ips[(1, w)], 3)
        out[model] = got
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["| model | images | processes | workers | threads / process | img/s | seconds | wall s (with loading) "
             "| same files |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | - | {r['processes']} | {r['workers']} | - | failed | - | - | - |")
            continue
        lines.append(f"| {r['model']} | {r['images']} | {r['processes']} | {r['workers']} | "
                     f"{r['threads_per_process']} | {r['images_per_second']:.3f} | {r['seconds']:.1f} | "
                     f"{r['wall_seconds']:.1f} | {'yes' if r.get('same_files_as_first') else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48, help="toy-world images in the toy folder")
    ap.add_argument("--blip-images", type=int, default=4, help="images for the full-size BLIP-L rows (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--json", dest="json_out", default=None)
    ap.add_argument("--table", default=None, help="print the markdown table of a result JSON and stop")
    args = ap.parse_args()
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="pnpovss-throughput-") as tmp:
        work = Path(tmp)
        plans = [("toy", toy_folder(work / "toy", args.images), ["--model", "toy", "--vocab", "toyworld"])]
        if args.blip_images:
            model_dir = save_random_blip(work / "blip-model")
            plans.append(("blip-large-random", blip_folder(work / "blip", args.blip_images),
                          ["--model", str(model_dir), "--classes", BLIP_CLASSES, "--keep-all"]))
        for model, folder, cli in plans:
            first = None
            for processes, workers in COMBOS:
                out = work / f"out-{model}-{processes}-{workers}"
                row = run_row(model, folder, cli, processes, workers, out, args.threads)
                if "error" not in row:
                    files = units(out)
                    first = files if first is None else first
                    row["same_files_as_first"] = files == first
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    result = {"threads_per_process": args.threads, "cpu_count": os.cpu_count(), "rows": rows, "ratios": ratios(rows),
              "python": sys.version.split()[0], "numpy": np.__version__}
    text = json.dumps(result, indent=2)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
