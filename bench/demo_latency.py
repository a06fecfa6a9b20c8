"""How fast does the demo page answer? (prints JSON)

    python bench/demo_latency.py --json bench/results/demo_latency.json

For ``examples/shapes.png`` (96 px) and the same picture enlarged to 512 px, on the toy model with
its preset and one torch thread, times

* ``full``: a new (image, classes): decoding, vision encoding, GradCAM + Salience DropOut and
  post-processing, i.e. what the Segment button costs (the segmenter's encoding cache is cleared
  each repeat uploads a copy differing in one pixel);
* ``postprocess_only``: a threshold, blur-sigma or CRF change on the same input, which reuses the
  cached grid maps (the issue's target: under 0.5 s);

each measured three ways: ``engine`` (``DemoEngine.run``, no web); ``http``, the running page's
``run`` endpoint called with ``gradio_client`` (upload, queue, Gradio's encoding of the outputs;
the client does not download the pictures, as a browser fetches them after the answer); and
``browser``, threshold changes typed into the page in headless Chromium, timed until the page shows
the new answer with every overlay picture loaded (skipped when chromium or playwright is missing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "examples" / "shapes.png"
CLASSES = "circle, star"
CHANGES = [{"threshold": t} for t in (0.1, 0.2, 0.3, 0.4, 0.5)] + [{"blur_sigma": s} for s in (0.02, 0.08)] + [
    {"crf": False}, {"crf": True}]


def summary(seconds: list[float]) -> dict:
    return {"median_s": round(statistics.median(seconds), 4), "max_s": round(max(seconds), 4), "n": len(seconds)}


def page_values(engine, **change) -> dict:
    cfg = engine.seg.config
    head = "mean" if cfg.head is None else ",".join(str(h) for h in cfg.heads_tuple())
    values = dict(layer=cfg.layer, head=head, drop_iters=cfg.drop_iters, drop_k=cfg.drop_k, halving=cfg.halving,
                  threshold=cfg.threshold, blur_sigma=cfg.blur_sigma, crf=cfg.crf)
    return {**values, **change}


def variants(image: Path, count: int, folder: Path) -> list[Path]:
    """``count`` copies of ``image`` differing in one pixel: each is a new upload to the page (new
    vision encoding, new maps) with the same content for all practical purposes."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(image).convert("RGB")).copy()
    paths = []
    for i in range(count):
        rgb[0, 0, 0] = (int(rgb[0, 0, 0]) + 1 + i) % 256
        paths.append(folder / f"{image.stem}-{i}.png")
        Image.fromarray(rgb).save(paths[-1])
    return paths


def measure(engine, client, image: Path, repeats: int, folder: Path) -> dict:
    from gradio_client import handle_file

    from pnpovss.demo import segment_kwargs

    out: dict[str, dict] = {}
    full, post = [], []
    uploads = variants(image, 2 * repeats, folder)
    for r in range(repeats):
        image = uploads[r]
        res = engine.run(image, CLASSES, **segment_kwargs(**page_values(engine)))
        assert not res.maps_cached
        full.append(res.seconds)
        for change in CHANGES:
            res = engine.run(image, CLASSES, **segment_kwargs(**page_values(engine, **change)))
            assert res.maps_cached
            post.append(res.seconds)
    out["engine"] = {"full": summary(full), "postprocess_only": summary(post)}

    full, post = [], []
    for r in range(repeats):
        image = uploads[repeats + r]
        runs = engine.map_runs
        start = time.perf_counter()
        client.predict(handle_file(str(image)), CLASSES, *page_values(engine).values(), api_name="/run")
        full.append(time.perf_counter() - start)
        for change in CHANGES:
            start = time.perf_counter()
            client.predict(handle_file(str(image)), CLASSES, *page_values(engine, **change).values(), api_name="/run")
            post.append(time.perf_counter() - start)
        assert engine.map_runs == runs + 1, "a post-processing change recomputed the maps"
    out["http"] = {"full": summary(full), "postprocess_only": summary(post)}
    return out


def measure_browser(url: str, image: Path, repeats: int) -> dict:
    """Seconds from typing a threshold into the page to the new answer being on screen."""
    import re

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        return {"skipped": "no chromium"}
    seconds = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.locator("#input-image input[type=file]").set_input_files(str(image))
        page.locator("#classes textarea").fill(CLASSES)
        page.locator("#run").click()
        page.wait_for_function("() => /answer \\d+;/.test(document.querySelector('#status').innerText)")
        box = page.locator("#threshold input[type=number]")
        for _ in range(repeats):
            for change in CHANGES:
                if "threshold" not in change:
                    continue
                answer = int(re.search(r"answer (\d+);", page.locator("#status").inner_text()).group(1))
                start = time.perf_counter()
                box.fill(str(change["threshold"]))
                page.wait_for_function(
                    "n => document.querySelector('#status').innerText.includes(`answer ${n};`) && "
                    "[...document.querySelectorAll('#overlay img')].every(i => i.complete && i.naturalWidth > 0)",
                    arg=answer + 1, timeout=60000)
                seconds.append(time.perf_counter() - start)
                assert "reused from the cache" in page.locator("#status").inner_text()
        browser.close()
    return {"postprocess_only": summary(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="full runs per image (each followed by every change)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--no-browser", action="store_true", help="leave out the headless-Chromium timing")
    args = parser.parse_args()

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch
    from gradio_client import Client
    from PIL import Image

    from pnpovss import Segmenter
    from pnpovss.demo import DemoEngine, build_app

    torch.set_num_threads(args.threads)
    engine = DemoEngine(Segmenter.from_pretrained("toy"), "toy")
    app = build_app(engine)
    _, url, _ = app.launch(prevent_thread_lock=True, quiet=True, allowed_paths=[str(engine.out_dir)])
    folder = Path(tempfile.mkdtemp())
    try:
        client = Client(url, verbose=False, download_files=False)
        big = folder / "shapes512.png"
        Image.open(SHAPES).convert("RGB").resize((512, 512), Image.BICUBIC).save(big)
        result = {
            "model": engine.describe(),
            "threads": args.threads,
            "load_average_before": [round(v, 2) for v in os.getloadavg()],
            "classes": CLASSES,
            "changes": CHANGES,
            "images": {},
        }
        for label, path in (("shapes.png (96x96)", SHAPES), ("shapes.png enlarged to 512x512", big)):
            result["images"][label] = measure(engine, client, path, args.repeats, folder)
            if not args.no_browser:
                result["images"][label]["browser"] = measure_browser(url, path, args.repeats)
        result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    finally:
        app.close()
        engine.close()
        shutil.rmtree(folder, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
