"""The demo's engine (no browser): grid maps cached across post-processing changes, the same
results and files as the pipeline and the CLI, the CLI's one-line errors. The page itself is driven
from a real browser in ``test_demo_browser.py``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pnpovss.cli import main
from pnpovss.config import PipelineConfig
from pnpovss.demo import POSTPROCESS_FIELDS, DemoEngine, segment_kwargs
from pnpovss.errors import ImageLoadError, PnpOvssError

PAGE = dict(layer=2, head="1", drop_iters=2, drop_k=3, halving=False, threshold=0.15, blur_sigma=0.05, crf=True,
            presence=False, presence_threshold=0.9)  # the random tiny model finds nothing: segment every class


@pytest.fixture
def engine(segmenter):
    with DemoEngine(segmenter, "tiny") as eng:
        yield eng
    assert not eng.out_dir.exists()  # closing removes every answer's files


@pytest.fixture
def photo(tmp_path, rng):
    path = tmp_path / "photo.png"
    Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def map_calls(segmenter, monkeypatch):
    """Counts GradCAM + DropOut runs by wrapping the pipeline's class-maps step."""
    calls = []
    original = segmenter.pipeline.class_maps

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(segmenter.pipeline, "class_maps", counting)
    return calls


def page(**changes):
    return segment_kwargs(**{**PAGE, **changes})


def test_postprocessing_change_reuses_the_maps_and_matches_a_fresh_run(engine, segmenter, photo, map_calls):
    first = engine.run(photo, "sky, sand", name="photo.png", **page())
    assert len(map_calls) == 1 and not first.maps_cached and first.map_runs == 1
    for change in ({"threshold": 0.6}, {"blur_sigma": 0.12}, {"crf": False}, {"working_side": 128}):
        before = len(map_calls)
        out = engine.run(photo, "sky, sand", name="photo.png", **page(**change))
        assert len(map_calls) == before and out.maps_cached and out.map_runs == 1
        fresh = segmenter.segment(str(photo), ["sky", "sand"], **page(**change))  # independent full run
        np.testing.assert_array_equal(out.result.labels, fresh.labels)
        np.testing.assert_allclose(out.result.scores, fresh.scores, atol=1e-6)
        assert out.result.config == fresh.config
    calls = len(map_calls)
    for change, classes in (({"layer": 3}, "sky, sand"), ({"head": "mean"}, "sky, sand"), ({"drop_k": 1}, "sky, sand"),
                            ({}, "sand, sky")):
        out = engine.run(photo, classes, **page(**change))
        assert not out.maps_cached
    assert len(map_calls) == calls + 4


@pytest.mark.parametrize("background_mode", ["dataset", "reference", "always"])
def test_cached_postprocessing_keeps_the_caption_background_rule(engine, segmenter, photo, background_mode):
    """A post-processing change answered from the cache equals a fresh run for every background
    mode and caption length: the per-caption configuration (``config.for_caption``) travels with
    the cached maps (it once did not: background off, 2 classes, ``reference`` gave other labels)."""
    for background in (True, False):
        for classes in (["sky"], ["sky", "sand"], ["sky", "sand", "sea"]):
            settings = dict(background_mode=background_mode, background=background)
            engine.run(photo, ",".join(classes), **page(), **settings)
            out = engine.run(photo, ",".join(classes), **page(threshold=0.4), **settings)
            assert out.maps_cached
            fresh = segmenter.segment(str(photo), classes, **page(threshold=0.4), **settings)
            assert out.result.classes == fresh.classes and out.result.config == fresh.config
            np.testing.assert_array_equal(out.result.labels, fresh.labels)
            np.testing.assert_allclose(out.result.scores, fresh.scores, atol=1e-6)


def test_postprocess_fields_leave_the_grid_maps_alone(segmenter, photo):
    """The cache key leaves out POSTPROCESS_FIELDS: changing all of them must not change the maps."""
    changed = dict(threshold=0.5, threshold_mode="binary", background_rule="one_minus_sum",
                   blur=False, blur_sigma=0.2, crf=False, crf_unary="probs", crf_iters=3, crf_gaussian_sxy=1.0,
                   crf_gaussian_compat=2.0, crf_bilateral_sxy=9.0, crf_bilateral_srgb=2.0, crf_bilateral_compat=3.0,
                   crf_reference_side=64, postprocess_max_side=32, align_corners=False, blur_border="nearest",
                   upsample="bicubic_constant")
    assert set(changed) == POSTPROCESS_FIELDS
    for keep_all in (True, False):  # presence threshold 0: every candidate kept, so there are maps
        base = segmenter.segment(str(photo), ["sky", "sand"], keep_all=keep_all, presence_threshold=0.0)
        other = segmenter.segment(str(photo), ["sky", "sand"], keep_all=keep_all, presence_threshold=0.0, **changed)
        assert base.grid_maps.shape[0] == 2
        np.testing.assert_array_equal(base.grid_maps, other.grid_maps)


def test_downloads_are_what_the_cli_writes(engine, photo, tmp_path):
    out = engine.run(photo, "sky,sand", name="photo.png", **page())
    assert [p.name for p in out.files] == ["photo.labels.png", "photo.json"]
    np.testing.assert_array_equal(np.asarray(Image.open(out.files[0])), out.result.labels)
    record = json.loads(out.files[1].read_text())
    assert record == out.record
    cli_out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["segment", str(photo), "--classes", "sky,sand", "--model", str(engine.seg.backbone.source),
                                    "--layer", "2", "--head", "1", "--drop-iters", "2", "--drop-k", "3", "--keep-all",
                                    "--set", "postprocess_max_side=512",  # the page's working size
                                    "--out", str(cli_out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert out.files[0].read_bytes() == (cli_out / "photo.labels.png").read_bytes()  # the very same PNG
    cli_record = json.loads((cli_out / "photo.json").read_text())
    assert cli_record["image"] == str(photo) and record["image"] == "photo.png"
    for key in ("candidates", "keep_all", "classes", "presence", "presence_notes", "size", "config"):
        assert record[key] == cli_record[key]
    assert record["fractions"] == pytest.approx(cli_record["fractions"], abs=1e-12)


def test_page_rows_masks_and_heatmaps(engine, photo):
    out = engine.run(photo, "sky,sand", **page())
    assert [n for _, n in out.masks()] == ["sky", "sand"]  # background is the unpainted rest
    total = sum(m for m, _ in out.masks()) + (out.result.labels == 0)
    assert np.all(total == 1)
    assert [r[0] for r in out.table()] == ["background", "sky", "sand"]
    assert sum(r[1] for r in out.table()) == pytest.approx(100.0, abs=0.05)
    assert [n for _, n in out.heatmaps()] == ["background", "sky", "sand"]
    assert set(out.colours()) == {"background", "sky", "sand"} and out.colours()["background"] == "#000000"


@pytest.mark.parametrize("image, classes, changes, message", [
    ("notes.png", "sky", {}, r"^notes\.png: not an image file PIL can read$"),
    (None, "sky", {}, "no image"),
    ("photo", "sky,,sand", {}, "class names must be non-empty"),
    ("photo", "sky,Sky", {}, "given twice"),
    ("photo", "sky", {"layer": 9}, "layer 9 is out of range"),
    ("photo", "sky", {"head": "7"}, "head 7 is out of range"),
    ("photo", "sky", {"head": "x"}, "head takes an index"),
    ("photo", "sky", {"layer": 1.5}, "layer must be a whole number"),
    ("photo", "sky", {"threshold": 1.0}, r"threshold=1.0: expected a finite number >= 0 and < 1"),
])
def test_bad_input_is_one_line_and_the_engine_keeps_working(engine, photo, tmp_path, image, classes, changes, message):
    if image == "notes.png":
        image = tmp_path / "notes.png"
        image.write_text("not a picture")
    elif image == "photo":
        image = photo
    with pytest.raises(PnpOvssError, match=message) as info:
        engine.run(image, classes, **page(**changes))
    assert "\n" not in str(info.value)
    assert engine.run(photo, "sky", **page()).result.labels.shape == (40, 56)


def test_unreadable_upload_names_the_file_not_the_upload_folder(engine, tmp_path):
    bad = tmp_path / "upload-cache" / "holiday.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(ImageLoadError, match=r"^holiday\.jpg: ") as info:
        engine.run(str(bad), "sky", **page())
    assert str(tmp_path) not in str(info.value)


def test_segment_kwargs_maps_the_page_controls():
    kw = segment_kwargs(layer=3.0, head="0, 2", drop_iters=4, drop_k=10, halving=True, threshold=0.2,
                        blur_sigma=0.04, crf=False)
    assert kw == dict(layer=3, head=(0, 2), drop_iters=4, drop_k=10, halving=True, threshold=0.2, blur_sigma=0.04,
                      crf=False, keep_all=False, presence_threshold=0.9, postprocess_max_side=512)
    assert segment_kwargs(**{**PAGE, "working_side": 1024.0})["postprocess_max_side"] == 1024
    with pytest.raises(PnpOvssError, match="working size must be a whole number"):
        segment_kwargs(**{**PAGE, "working_side": 100.5})
    assert segment_kwargs(**{**PAGE, "head": "mean"})["head"] is None
    assert segment_kwargs(**PAGE)["keep_all"] is True
    PipelineConfig().replace(**{k: v for k, v in kw.items() if k != "keep_all"})  # the rest are pipeline options


def test_cli_and_demo_package_do_not_import_gradio():
    """`pnpovss --help` and the engine stay light: Gradio loads only when a page is built."""
    code = ("import sys; from click.testing import CliRunner; from pnpovss.cli import main; import pnpovss.demo; "
            "r = CliRunner().invoke(main, ['demo', '--help']); assert r.exit_code == 0 and '--port' in r.output; "
            "print('gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_demo_without_gradio_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    res = CliRunner().invoke(main, ["demo", "--model", "toy"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == 'Error: the demo needs Gradio: pip install "pnpovss[demo]"'


def test_concurrent_visitors_share_one_model_and_get_their_own_answers(engine, segmenter, photo, tmp_path, rng):
    """Gradio may call the engine from several threads: the lock serialises the model, and every
    answer equals the same request made alone."""
    import threading

    other = tmp_path / "other.png"
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(other)
    requests = [(photo, "sky, sand", {}), (other, "cat", {}), (photo, "sand", {"threshold": 0.4}),
                (other, "cat, dog", {"crf": False})] * 2
    answers: dict[int, np.ndarray] = {}

    def visit(i, image, classes, change):
        answers[i] = engine.run(image, classes, **page(**change)).result.labels

    threads = [threading.Thread(target=visit, args=(i, *r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (image, classes, change) in enumerate(requests):
        alone = segmenter.segment(str(image), [c.strip() for c in classes.split(",")], **page(**change))
        np.testing.assert_array_equal(answers[i], alone.labels)


def test_table_shows_presence_when_results_carry_it(engine, photo):
    """Ready for the class-presence stage: a result with ``presence`` adds score/kept columns, and a
    dropped class is listed with 0 pixels."""
    out = engine.run(photo, "sky,sand", **page())
    assert out.table_headers() == ["label", "pixels %"]
    class Found:  # the shape of pnpovss.presence.Presence's record
        def to_json(self):
            return {"sky": {"score": 0.91, "kept": True}, "sand": {"score": 0.5, "kept": True},
                    "cat": {"score": 0.02, "kept": False}}

    out.result.presence = Found()
    assert out.table_headers() == ["label", "pixels %", "presence score", "kept"]
    rows = {r[0]: r for r in out.table()}
    assert rows["background"][2:] == [None, None]
    assert rows["sky"][2:] == [0.91, True] and rows["cat"] == ["cat", 0.0, 0.02, False]


def test_demo_on_a_taken_port_is_a_one_line_error(tmp_path, monkeypatch):
    """Loads the toy model (a few seconds) before Gradio finds the port taken."""
    import socket
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    pytest.importorskip("gradio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(main, ["demo", "--model", "toy", "--port", str(port)])
    assert res.exit_code == 1, res.output
    last = res.output.strip().splitlines()[-1]
    assert last == f"Error: cannot serve on 127.0.0.1:{port} (the port is in use); pass a free --port"
    assert not list(tmp_path.glob("pnpovss-demo-*"))  # the failed start left no folder behind


def test_demo_device_and_dtype_options(monkeypatch):
    """``--device`` defaults to auto as on every command, ``--dtype`` reaches the loaded pipeline
    and the start line says what runs; a bad value is a one-line error."""
    pytest.importorskip("gradio")
    from pnpovss.demo import app

    monkeypatch.setattr(app, "build_app", lambda engine: pytest.fail("a bad --dtype must stop before the page"))
    res = CliRunner().invoke(main, ["demo", "--help"])
    assert "--dtype" in res.output and "[default: auto]" in res.output
    res = CliRunner().invoke(main, ["demo", "--model", "toy", "--dtype", "half"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith("Error: ") and "half" in res.output.strip().splitlines()[-1]

    built = []

    def fake_build(engine):  # stop where the page would be served
        built.append(engine.seg.config.dtype)
        raise PnpOvssError("stopped before serving")

    monkeypatch.setattr(app, "build_app", fake_build)
    res = CliRunner().invoke(main, ["demo", "--model", "toy", "--dtype", "bf16", "--device", "cpu"])
    assert built == ["bf16"] and "Error: stopped before serving" in res.output
    assert "device: cpu, dtype: bf16 (vision encoder and image key/value projections)" in res.output


def test_presence_filter_on_the_page(engine, photo, map_calls):
    """With the filter on, the result carries every candidate's presence and the table shows it;
    the presence threshold decides the caption, so changing it recomputes the maps."""
    out = engine.run(photo, "sky, sand", **page(presence=True, presence_threshold=0.0))
    assert out.record["keep_all"] is False and set(out.record["presence"]) == {"sky", "sand"}
    assert out.table_headers() == ["label", "pixels %", "presence score", "kept"]
    assert out.result.classes == ["background", "sky", "sand"]  # threshold 0: every candidate kept
    calls = len(map_calls)
    none = engine.run(photo, "sky, sand", **page(presence=True, presence_threshold=1.0))
    assert not none.maps_cached and len(map_calls) == calls  # nothing kept: no GradCAM at all
    assert none.result.classes == ["background"] and (none.result.labels == 0).all()
    again = engine.run(photo, "sky, sand", **page(presence=True, presence_threshold=1.0, threshold=0.5))
    assert again.maps_cached and again.result.classes == ["background"] and (again.result.labels == 0).all()
    assert {r[0]: r[1:] for r in again.table()}["sky"][0] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_demo_stopped_by_a_signal_removes_its_folder(tmp_path, sig):
    """Ctrl-C (SIGINT) and kill (SIGTERM) on a serving `pnpovss demo`: the process ends and its
    temporary folder is gone. Slow: a fresh process imports Gradio and loads the toy model
    (~10 s on 2 shared cores)."""
    import os
    import signal
    import socket
    import time
    import urllib.request

    pytest.importorskip("gradio")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pnpovss", "demo", "--model", "toy", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 180
        while not list(tmp_path.glob("pnpovss-demo-*")) or not _answers(f"http://127.0.0.1:{port}/"):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.3)
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list(tmp_path.glob("pnpovss-demo-*"))


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def test_presence_notes_reach_the_page(engine, photo):
    """The presence stage's notes (here: nothing passes a threshold of 1) are what the page shows."""
    out = engine.run(photo, "sky, sand", **page(presence=True, presence_threshold=1.0))
    assert out.notes() == ["no candidate passed presence_threshold 1: the image is all background"]
    assert out.notes() == out.record["presence_notes"]
    assert engine.run(photo, "sky, sand", **page()).notes() == []  # keep_all: no presence stage


def test_large_upload_is_shown_downscaled_and_downloaded_full_size(engine, tmp_path, rng):
    """Above DISPLAY_MAX_SIDE the page gets the picture and masks at display size (heat maps at
    HEATMAP_MAX_SIDE); the downloaded labels stay at full size (what `segment` writes)."""
    from pnpovss.demo.engine import DISPLAY_MAX_SIDE
    from pnpovss.postprocess import resize_labels

    path = tmp_path / "big.png"
    Image.fromarray((rng.random((60, 80, 3)) * 255).astype(np.uint8)).resize((1400, 1050)).save(path)
    out = engine.run(path, "sky, sand", name="big.png", **page())
    assert out.result.labels.shape == (1050, 1400)
    shown = (round(1050 * DISPLAY_MAX_SIDE / 1400), DISPLAY_MAX_SIDE)
    assert out.shown().image.shape[:2] == shown and all(m.shape == shown for m, _ in out.masks())
    np.testing.assert_array_equal(out.shown().labels, resize_labels(out.result.labels, shown))
    from pnpovss.demo.answer import HEATMAP_MAX_SIDE

    thumb = (round(1050 * HEATMAP_MAX_SIDE / 1400), HEATMAP_MAX_SIDE)  # heat maps: gallery thumbnails
    assert all(h.size == thumb[::-1] for h, _ in out.heatmaps())
    np.testing.assert_array_equal(np.asarray(Image.open(out.files[0])), out.result.labels)
    # a threshold change reuses the decoded upload and its working copy, and equals a fresh run
    again = engine.run(path, "sky, sand", name="big.png", **page(threshold=0.5))
    fresh = engine.seg.segment(str(path), ["sky", "sand"], **page(threshold=0.5))
    assert again.maps_cached and np.array_equal(again.result.labels, fresh.labels)
    # the same path with new content (as a re-upload could) is decoded again
    Image.fromarray(np.full((1050, 1400, 3), 200, np.uint8)).save(path)
    os.utime(path, ns=(1, 1))
    assert not engine.run(path, "sky, sand", name="big.png", **page()).maps_cached
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "small.png")
    small = engine.run(tmp_path / "small.png", "sky", **page())
    assert small.display is None and small.shown() is small.result


def test_sigterm_handler_is_restored_after_an_exception():
    """serve()'s SIGTERM-as-exit handler is swapped in for the block only (style: released in finally)."""
    import signal

    pytest.importorskip("gradio")
    from pnpovss.demo.app import _terminate_as_exit

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError), _terminate_as_exit():
        assert signal.getsignal(signal.SIGTERM) is not before
        raise RuntimeError("inside")
    assert signal.getsignal(signal.SIGTERM) is before


def test_downloads_above_256_labels_are_16_bit(engine, photo):
    """The demo writes label PNGs with segment's writer: above 256 labels 16-bit greyscale, not
    labels wrapped at 256 (the demo once had a writer of its own that wrapped)."""
    import dataclasses

    res = engine.run(photo, "sky,sand", name="photo.png", **page()).result
    labels = np.arange(300 * 2, dtype=np.int64).reshape(20, 30) % 300
    many = dataclasses.replace(res, labels=labels, classes=[f"c{i}" for i in range(300)])
    files, _ = engine._write(many, "many.png", ["sky", "sand"], True)
    back = np.asarray(Image.open(files[0]))
    assert back.dtype == np.uint16 or back.max() > 255
    np.testing.assert_array_equal(back.astype(np.int64), labels)
