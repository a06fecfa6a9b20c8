"""`pnpovss demo --model toy` as a person and a program use it: a real headless Chromium drives the
page, and gradio_client calls the `segment` endpoint, against one server in a subprocess.

Needs gradio, playwright, gradio_client (the `test` extra) and Debian's `chromium`. Without them
the test is skipped, except when PNPOVSS_REQUIRE_BROWSER=1 (set by .ci/run): then it fails, so CI
cannot pass without running it. PNPOVSS_DEMO_SCREENSHOT=docs/demo.png also saves the screenshot
there (how the README's and the docs' picture is made).
"""

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pnpovss.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "examples" / "shapes.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _need(what: str, missing: bool) -> None:
    if missing:
        message = f"the demo browser test needs {what}"
        if os.environ.get("PNPOVSS_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (PNPOVSS_REQUIRE_BROWSER=1)")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The CLI's `demo --model toy` on a free port; its log is shown if it dies."""
    for module in ("gradio", "gradio_client", "playwright"):
        try:
            __import__(module)
        except ImportError:
            _need(f"the Python package {module} (pip install -e '.[test]')", True)
    _need("Debian's chromium (apt-get install -y chromium)", CHROMIUM is None)
    port = _free_port()
    log = tmp_path_factory.mktemp("demo") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "pnpovss", "demo", "--model", "toy", "--port", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"pnpovss demo exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"pnpovss demo did not answer within 180 s:\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _status(page) -> str:
    return page.locator("#status").inner_text()


def _wait_status(page, pattern: str, timeout_s: float = 60) -> str:
    """Wait until the status line matches ``pattern`` (Gradio shows 'processing' meanwhile)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        text = _status(page)
        if re.search(pattern, text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"status never matched {pattern!r}; last: {_status(page)!r}")


def _wait_toast(page, needle: str, timeout_s: float = 30) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        texts = page.locator(".toast-body").all_inner_texts()
        hits = [t for t in texts if needle in t]
        if hits:
            return hits[0]
        time.sleep(0.1)
    raise AssertionError(f"no error toast saying {needle!r}; toasts: {page.locator('.toast-body').all_inner_texts()}")


def _close_toasts(page) -> None:
    for button in page.locator(".toast-close").all():
        button.click()


def _wait_text(page, selector: str, needles: list[str]) -> None:
    page.wait_for_function("([sel, needles]) => needles.every(n => document.querySelector(sel).innerText.includes(n))",
                           arg=[selector, needles], timeout=30000)


def _masks(page) -> list[str]:
    return page.locator("#overlay img.mask").evaluate_all("els => els.map(e => e.src)")


def _overlay_pixels(page) -> np.ndarray:
    shot = page.locator("#overlay .image-container").screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.float32)


@pytest.mark.slow
def test_page_in_a_real_browser(server, tmp_path):
    """Starts a server and a browser (~30-60 s on a shared CPU): the only end-to-end check of the page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server)
            page.wait_for_selector("#run")
            assert "Model: toy" in page.locator("#model-line").inner_text()

            # upload, type, run: the overlay renders with a legend naming the classes
            page.locator("#input-image input[type=file]").set_input_files(str(SHAPES))
            page.locator("#classes textarea").fill("circle,star")
            page.locator("#run").click()
            first = _wait_status(page, r"maps computed; .*GradCAM runs so far: 1\); you waited \d+\.\d\d s$")
            page.wait_for_function("() => [...document.querySelectorAll('#overlay img')].length >= 3 && "
                                   "[...document.querySelectorAll('#overlay img')].every(i => i.complete && i.naturalWidth > 0)")
            assert page.locator("#overlay .legend-item").all_inner_texts() == ["circle", "star"]
            pixels = _overlay_pixels(page)
            assert pixels.std() > 10, "the overlay is blank"
            assert page.locator("#overlay img.base-image").count() == 1 and len(_masks(page)) == 2
            _wait_text(page, "#classes-table", ["background", "circle", "star"])
            page.wait_for_selector("#downloads a[download='shapes.json']")
            links = dict(page.locator("#downloads a").evaluate_all("els => els.map(e => [e.getAttribute('download'), e.href])"))
            assert sorted(links) == ["shapes.json", "shapes.labels.png"]
            with urllib.request.urlopen(links["shapes.json"], timeout=10) as r:
                record = json.loads(r.read())
            assert record["classes"] == ["background", "circle", "star"] and record["model"] == "toy"
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("PNPOVSS_DEMO_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["PNPOVSS_DEMO_SCREENSHOT"])

            # a post-processing change updates the overlay without a new GradCAM run
            masks_before = _masks(page)
            box = page.locator("#threshold input[type=number]")
            box.fill("0.6")
            box.press("Enter")
            second = _wait_status(page, r"reused from the cache; .*GradCAM runs so far: 1\); you waited")
            assert second != first
            page.wait_for_function("before => { const m = [...document.querySelectorAll('#overlay img.mask')]"
                                   ".map(e => e.src); return m.length > 0 && m.join() !== before.join(); }",
                                   arg=masks_before, timeout=30000)

            # bad input: the CLI's one-line message, and the page keeps answering
            layer = page.locator("#layer input")
            layer.fill("9")
            page.locator("#run").click()
            _wait_toast(page, "layer 9 is out of range: this model has cross-attention layers 1..")
            failed = _wait_status(page, r"The last request failed")
            assert "server time" not in failed  # not the previous answer's line
            _close_toasts(page)
            layer.fill("1")
            page.locator("#classes textarea").fill("circle,,star")
            page.locator("#run").click()
            _wait_toast(page, "class names must be non-empty")
            _close_toasts(page)
            broken = tmp_path / "broken.png"
            broken.write_text("this is text, not a picture")
            page.locator("#input-image button[aria-label='Remove Image']").click()
            page.locator("#input-image input[type=file]").set_input_files(str(broken))
            page.locator("#classes textarea").fill("circle,star")
            page.locator("#run").click()
            _wait_toast(page, "broken.png: not an image file PIL can read")
            _close_toasts(page)
            page.locator("#input-image button[aria-label='Remove Image']").click()
            page.locator("#input-image input[type=file]").set_input_files(str(SHAPES))
            page.locator("#classes textarea").fill("circle,star,heart")
            page.locator("#run").click()
            _wait_status(page, r"maps computed; .*GradCAM runs so far: 2\)")
            _wait_text(page, "#classes-table", ["heart", "presence score", "false"])  # the filter dropped heart
            assert page.locator("#overlay .legend-item").all_inner_texts() == ["circle", "star"]

            # the presence stage's notes are shown: here nothing passes a threshold of 1
            presence = page.locator("#presence-threshold input[type=number]")
            presence.fill("1")
            presence.press("Enter")
            page.locator("#run").click()
            _wait_text(page, "#presence-notes", ["no candidate passed presence_threshold 1: the image is all background"])
        finally:
            browser.close()


@pytest.mark.slow
def test_segment_endpoint_with_gradio_client(server, tmp_path):
    """Shares the server above; checks the programmatic endpoint against the CLI's own output."""
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")
    assert sorted(endpoints["named_endpoints"]) == ["/run", "/segment"] and not endpoints["unnamed_endpoints"]
    api = endpoints["named_endpoints"]["/segment"]
    assert len(api["parameters"]) == 2 and len(api["returns"]) == 2

    overlay, record = client.predict(handle_file(str(SHAPES)), "circle,star", api_name="/segment")
    cli_out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["segment", str(SHAPES), "--classes", "circle,star", "--model", "toy",
                                    "--out", str(cli_out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    expected = json.loads((cli_out / "shapes.json").read_text())
    assert record["image"] == "shapes.png"
    bookkeeping = {"image", "image_sha256", "labels_png", "sha256",  # the CLI's file-level records (outputs.py)
                   "device", "dtype", "execution"}  # and the run's resolved device/precision/fast paths
    assert {k: v for k, v in record.items() if k != "image"} == {k: v for k, v in expected.items() if k not in bookkeeping}
    np.testing.assert_array_equal(np.asarray(Image.open(overlay).convert("RGB")),
                                  np.asarray(Image.open(cli_out / "shapes.overlay.png").convert("RGB")))

    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    for image, classes, message in ((notes, "circle", "notes.txt: not an image file PIL can read"),
                                    (SHAPES, "circle,,star", "class names must be non-empty"),
                                    (SHAPES, "circle,Circle", "given twice")):
        with pytest.raises(Exception, match=re.escape(message)):
            client.predict(handle_file(str(image)), classes, api_name="/segment")
    again = client.predict(handle_file(str(SHAPES)), "circle,star", api_name="/segment")[1]
    assert again["fractions"] == record["fractions"]
    assert not list((ROOT / "pnpovss").rglob("*.pyi")), "building the page wrote stub files into the package"
