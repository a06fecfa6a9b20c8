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

    python bench/demo_latency.py --large 8000 --json bench/results/demo_latency.json

``--large SIDE``: only a SIDE x SIDE JPEG photo (a toy image scaled up, with pixel noise), in the
browser: Segment (upload included, until the answer and its pictures are on screen), threshold
changes, a "drag" (five threshold values typed in quick succession: how many answers the page
computed and when the last value's answer was on screen), against ``pnpovss segment --model toy``
on the same file in a fresh process; stored under ``large_upload`` in the ``--json`` file, the
rest of which is kept.
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


def _answer_number(page) -> int:
    import re

    return int(re.search(r"answer (\d+);", page.locator("#status").inner_text()).group(1))


def _wait_answer(page, number: int, timeout_s: float = 600) -> None:
    """Until the status names answer ``number`` (or a later one) and every overlay picture is loaded."""
    page.wait_for_function(
        "n => { const m = /answer (\\d+);/.exec(document.querySelector('#status').innerText); "
        "return m && +m[1] >= n && [...document.querySelectorAll('#overlay img')]"
        ".every(i => i.complete && i.naturalWidth > 0); }", arg=number, timeout=timeout_s * 1000)


def measure_large(url: str, side: int, repeats: int, folder: Path) -> dict:
    """The ``--large`` measurement (see the module docstring)."""
    import subprocess
    import urllib.request

    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from pnpovss.toyworld.world import make_sample

    photo = folder / f"photo{side}.jpg"
    sample = make_sample(0, 3, 1000)
    classes = ", ".join([*sample.labels, "circle"])  # the scene's two shapes and one that is not there
    img = np.asarray(Image.fromarray(sample.image).resize((side, side), Image.BICUBIC), np.int16)
    noise = np.random.default_rng(0).integers(-6, 7, img.shape, dtype=np.int16)
    Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8)).save(photo, quality=90)
    cli = []
    for r in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pnpovss", "segment", str(photo), "--classes", classes, "--model", "toy",
                        "--out", str(folder / f"cli{r}")], check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        cli.append(time.perf_counter() - start)
    chromium = shutil.which("chromium")
    segment, change, drag = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.locator("#classes textarea").fill(classes)
        box = page.locator("#threshold input[type=number]")
        for r in range(repeats):
            copy = folder / f"photo{side}-{r}.jpg"  # a new upload each time: new maps
            shutil.copyfile(photo, copy)
            with open(copy, "ab") as fh:
                fh.write(bytes([r]))  # bytes after the JPEG's end: the same picture, another file
            if r:
                page.locator("#input-image button[aria-label='Remove Image']").click()
            last = _answer_number(page) if r else 0
            start = time.perf_counter()
            page.locator("#input-image input[type=file]").set_input_files(str(copy))
            page.locator("#run").click()
            _wait_answer(page, last + 1)
            segment.append(time.perf_counter() - start)
            for value in (0.3, 0.15):
                last = _answer_number(page)
                start = time.perf_counter()
                box.fill(str(value))
                _wait_answer(page, last + 1)
                change.append(time.perf_counter() - start)
            last = _answer_number(page)
            start = time.perf_counter()
            for value in (0.2, 0.25, 0.3, 0.35, 0.4):
                box.fill(str(value))
                time.sleep(0.1)
            page.wait_for_function("() => /answer \\d+;/.test(document.querySelector('#status').innerText) && "
                                   "document.querySelector('#classes-table').innerText.length > 0", timeout=600000)
            deadline = time.time() + 600
            while time.time() < deadline:  # until the answer for the last value (0.4) is on screen
                href = page.locator("#downloads a[download$='.json']").first.evaluate("e => e.href")
                with urllib.request.urlopen(href, timeout=30) as resp:
                    if json.loads(resp.read())["config"]["threshold"] == 0.4:
                        break
                time.sleep(0.2)
            drag.append({"seconds_to_last_value": round(time.perf_counter() - start, 2),
                         "answers_computed": _answer_number(page) - last, "values_typed": 5})
            with urllib.request.urlopen(href, timeout=30) as resp:
                answered = json.loads(resp.read())
            box.fill("0.15")
            _wait_answer(page, _answer_number(page) + 1)
        browser.close()
    return {"side": side, "photo_bytes": photo.stat().st_size, "classes": classes,
            "answer_classes": answered["classes"], "answer_size": answered["size"], "cli_seconds": summary(cli),
            "browser": {"segment": summary(segment), "threshold_change": summary(change), "drag": drag},
            "segment_over_cli": round(statistics.median(segment) / statistics.median(cli), 2),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="full runs per image (each followed by every change)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--no-browser", action="store_true", help="leave out the headless-Chromium timing")
    parser.add_argument("--large", type=int, default=None, metavar="SIDE",
                        help="only the large-photo measurement in the browser (kept under 'large_upload')")
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
        if args.large:
            previous = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
            result = {**previous, "large_upload": measure_large(url, args.large, args.repeats, folder)}
        for label, path in (() if args.large else (("shapes.png (96x96)", SHAPES),
                                                   ("shapes.png enlarged to 512x512", big))):
            result["images"][label] = measure(engine, client, path, args.repeats, folder)
            if not args.no_browser:
                result["images"][label]["browser"] = measure_browser(url, path, args.repeats)
        if not args.large:
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
