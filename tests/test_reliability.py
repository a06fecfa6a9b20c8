"""Inputs that used to crash, mislead or go stale (issue 12): each ends as a correct result or a
one-line error, before the model loads where possible."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pnpovss import ImageLoadError, PnpOvssError
from pnpovss.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(res, message):
    lines = [ln for ln in res.output.strip().splitlines() if not ln.startswith("loading")]
    assert res.exit_code == 1 and len(lines) == 1 and message in lines[0], res.output


@pytest.fixture
def img(tmp_path, two_tone_image):
    p = tmp_path / "in" / "a.png"
    p.parent.mkdir()
    Image.fromarray(two_tone_image).save(p)
    return p


def seg_args(tiny_blip_dir, out, *extra):
    return ["segment", *extra, "--classes", "sky,sand", "--keep-all", "--model", tiny_blip_dir, "--out", out,
            "--layer", 2, "--head", 0]


# ----------------------------------------------------------------------------------- API inputs
def test_read_only_array_from_pil(segmenter, img):
    arr = np.asarray(Image.open(img))
    assert not arr.flags.writeable
    res = segmenter.segment(arr, ["sky", "sand"], keep_all=True)
    assert res.labels.shape == arr.shape[:2]


def test_torch_tensors_are_images(segmenter, two_tone_image):
    import torch

    ref = segmenter.segment(two_tone_image, ["sky"], keep_all=True)
    chw = torch.from_numpy(two_tone_image).permute(2, 0, 1).float() / 255
    for tensor in (chw, torch.from_numpy(two_tone_image)):
        res = segmenter.segment(tensor, ["sky"], keep_all=True)
        assert np.array_equal(res.image, ref.image) and np.array_equal(res.labels, ref.labels)


@pytest.mark.parametrize("image, message", [
    (None, "cannot read an image from a NoneType"),
    (b"\x89PNG", "cannot read an image from a bytes"),
    ([[1, 2]], "cannot read an image from a list"),
    (np.full((8, 8, 3), 200.0), r"float image array has values in \[200, 200\]; float images must be in \[0, 1\]"),
])
def test_unusable_images_are_refused(segmenter, image, message):
    with pytest.raises(ImageLoadError, match=message):
        segmenter.segment(image, ["sky"])


def test_classes_must_be_strings_and_empty_batches_are_empty(segmenter, two_tone_image):
    with pytest.raises(PnpOvssError, match="class names must be strings, got None"):
        segmenter.segment(two_tone_image, [None])
    assert segmenter.segment_batch([], ["sky"]) == []


def test_result_repr_is_short(segmenter, two_tone_image):
    text = repr(segmenter.segment(two_tone_image, ["sky"], keep_all=True))
    assert len(text) < 200 and text.startswith("SegmentationResult(64x48 image, classes=['background', 'sky']")


# ----------------------------------------------------------------------------------- large images
def test_large_images_are_postprocessed_at_the_working_size(segmenter, rng):
    """Above postprocess_max_side the CRF sees a reduced copy; labels come back at full size and
    agree with a run at full resolution on nearly every pixel; at or below it nothing changes."""
    image = np.zeros((120, 200, 3), np.uint8)
    image[:, 100:] = (230, 220, 90)
    image[:, :100] = (20, 30, 120)
    image = np.clip(image + rng.integers(-5, 6, image.shape), 0, 255).astype(np.uint8)
    full = segmenter.segment(image, ["sky", "sand"], keep_all=True, postprocess_max_side=None)
    small = segmenter.segment(image, ["sky", "sand"], keep_all=True, postprocess_max_side=100)
    same = segmenter.segment(image, ["sky", "sand"], keep_all=True, postprocess_max_side=200)
    assert small.labels.shape == (120, 200) and small.scores.shape[1:] == (60, 100)
    assert np.array_equal(same.labels, full.labels) and np.array_equal(same.scores, full.scores)
    assert (small.labels == full.labels).mean() > 0.9
    assert small.heatmap("sky").size == (200, 120)


def test_decompression_bomb_is_one_line_naming_the_option(tmp_path):
    from pnpovss.fileio import load_image

    p = tmp_path / "big.png"
    Image.new("L", (3000, 2000)).save(p)
    with pytest.raises(ImageLoadError, match="3000x2000 is 6,000,000 pixels, above the limit of 5,000,000.*--max-pixels 6000000"):
        load_image(p, max_pixels=5_000_000)
    assert load_image(p, max_pixels=None).shape == (2000, 3000, 3)
    res = run("segment", p, "--classes", "x", "--max-pixels", 1000, "--out", tmp_path / "o")
    one_line_error(res, "pass --max-pixels 6000000")
    assert not (tmp_path / "o").exists()


def test_pillow_bomb_check_is_restored(tmp_path):
    from pnpovss.fileio import load_image

    before = Image.MAX_IMAGE_PIXELS
    p = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(p)
    load_image(p)
    assert Image.MAX_IMAGE_PIXELS == before


# ----------------------------------------------------------------------------------- segment outputs
def test_replaced_image_is_segmented_again(tiny_blip_dir, img, tmp_path, two_tone_image):
    out = tmp_path / "out"
    assert run(*seg_args(tiny_blip_dir, out, img)).exit_code == 0
    first = (out / "a.labels.png").read_bytes()
    Image.fromarray(two_tone_image[:, ::-1].copy()).save(img)  # another picture, same name
    res = run(*seg_args(tiny_blip_dir, out, img))
    assert res.exit_code == 0 and "skipping" not in res.output
    assert (out / "a.labels.png").read_bytes() != first
    assert "skipping 1" in run(*seg_args(tiny_blip_dir, out, img)).output


def test_out_equal_to_input_directory_does_not_multiply(tiny_blip_dir, img):
    d = img.parent
    for _ in range(2):
        assert run(*seg_args(tiny_blip_dir, d, d, "--overwrite")).exit_code == 0
    assert sorted(p.name for p in d.iterdir()) == ["a.json", "a.labels.png", "a.overlay.png", "a.png", "pnpovss_run.json"]


def test_existing_path_with_glob_characters(tiny_blip_dir, img, tmp_path):
    p = img.with_name("scan[1].png")
    img.rename(p)
    res = run(*seg_args(tiny_blip_dir, tmp_path / "out", p))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "scan[1].json").is_file()


def test_long_file_names_work_and_too_long_ones_fail_early(tiny_blip_dir, img, tmp_path):
    long = img.with_name("x" * 236 + ".png")  # 240 characters: outputs up to 248
    img.rename(long)
    res = run(*seg_args(tiny_blip_dir, tmp_path / "out", long))
    assert res.exit_code == 0, res.output
    too_long = long.with_name("y" * 246 + ".png")
    long.rename(too_long)
    one_line_error(run(*seg_args(tiny_blip_dir, tmp_path / "o2", too_long)), "rename the image")
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("where", ["parent_is_file", "proc"])
def test_unwritable_out_fails_before_the_model(tiny_blip_dir, img, tmp_path, monkeypatch, where):
    import pnpovss.factory as factory

    monkeypatch.setattr(factory, "load_backbone", lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out" if where == "parent_is_file" else "/proc/pnpovss-out"
    one_line_error(run(*seg_args(tiny_blip_dir, out, img)), "cannot write in")
    res = run("eval", "--dataset", "toyworld", "--images", 1, "--model", tiny_blip_dir, "--json", f"{out}/r.json")
    one_line_error(res, f"--json {out}/r.json: cannot write in")


def test_more_than_256_labels_write_a_16_bit_png(tmp_path):
    from pnpovss.outputs import write_result

    labels = np.arange(300, dtype=np.int64).reshape(15, 20)
    write_result(tmp_path, "many", labels, Image.new("RGB", (20, 15)), {"classes": [str(i) for i in range(300)]})
    back = np.asarray(Image.open(tmp_path / "many.labels.png"))
    assert np.array_equal(back, labels)
    assert json.loads((tmp_path / "many.json").read_text())["labels_png"] == "16-bit greyscale"
    write_result(tmp_path, "few", labels % 7, Image.new("RGB", (20, 15)), {})
    assert Image.open(tmp_path / "few.labels.png").mode == "P"


def test_mixed_units_are_not_taken_as_done(tiny_blip_dir, img, tmp_path):
    """A labels.png from another run beside this run's JSON (two runs into one --out) is redone;
    no bookkeeping file stays in --out."""
    from pnpovss.visualize import label_image

    out = tmp_path / "out"
    assert run(*seg_args(tiny_blip_dir, out, img)).exit_code == 0
    label_image(np.full((48, 64), 3))[0].save(out / "a.labels.png")  # another run's labels (3 classes)
    res = run(*seg_args(tiny_blip_dir, out, img))
    assert "skipping" not in res.output
    meta = json.loads((out / "a.json").read_text())
    from pnpovss.outputs import file_digest

    assert file_digest(out / "a.labels.png") == meta["sha256"]["labels"]
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.labels.png", "a.overlay.png", "pnpovss_run.json"]


def test_units_are_committed_under_the_directory_lock(tmp_path, monkeypatch):
    """write_result renames its three files only while holding the directory's exclusive lock."""
    import fcntl

    import pnpovss.outputs as outputs

    tmp_path.joinpath("x").mkdir()
    held = []
    real_replace = os.replace

    def replace(src, dst):
        fd = os.open(tmp_path / "x", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    outputs.write_result(tmp_path / "x", "a", np.zeros((4, 4), np.int64), Image.new("RGB", (4, 4)), {})
    assert held == [True, True, True]
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["a.json", "a.labels.png", "a.overlay.png"]


# ----------------------------------------------------------------------------------- eval resume
def test_eval_resume_covers_the_image_ids():
    """Crash, change the split file (same length, other images), rerun: nothing is reused, no
    image is counted twice."""
    from test_eval import Oracle, Tiny

    from pnpovss.evaluate import evaluate

    ds = Tiny(True)
    ds.labels.append(ds.labels[0].copy())
    ds.ids = ["x", "y", "z"]

    class Interrupted(Oracle):
        def segment(self, image, names, keep_all, background):
            if len(self.calls) == 1:
                raise KeyboardInterrupt
            return super().segment(image, names, keep_all, background)

    with pytest.raises(KeyboardInterrupt):
        evaluate(Interrupted(ds), ds, [0, 1, 2], progress=False, resume=True)
    ds.ids = ["y", "x", "w"]  # the split file changed
    ds.labels = [ds.labels[1], ds.labels[0], ds.labels[2]]
    again = Oracle(ds)
    result = evaluate(again, ds, [0, 1, 2], progress=False, resume=True)
    reference = evaluate(Oracle(ds), ds, [0, 1, 2], progress=False)
    assert len(again.calls) == 2 and np.array_equal(result.matrix, reference.matrix)


# ----------------------------------------------------------------------------------- models, names
@pytest.mark.parametrize("damage, message", [
    ("truncate", "model.safetensors is truncated or corrupt"),
    ("list_config", "config.json holds a JSON list"),
])
def test_broken_model_directories_are_one_line(tiny_blip_dir, tmp_path, damage, message):
    import shutil

    from pnpovss import ModelLoadError, Segmenter

    d = tmp_path / "model"
    shutil.copytree(tiny_blip_dir, d)
    if damage == "truncate":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 3])
    else:
        (d / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match=message) as err:
        Segmenter.from_pretrained(str(d))
    assert "\n" not in str(err.value)


def test_class_names_of_unknown_tokens_are_refused(segmenter, two_tone_image):
    vocab = segmenter.backbone.tokenizer.get_vocab()
    assert "星" not in vocab and "sky" in vocab
    with pytest.raises(PnpOvssError, match="class name .星. is unknown to this model's vocabulary"):
        segmenter.segment(two_tone_image, ["sky", "星"])


def test_legend_is_laid_out_for_its_text_and_escapes_what_no_font_draws():
    from pnpovss.visualize import legend_font, overlay_image

    names = ["background", "a very long class name that is wider than the image", "\U0001d49c\U0010fffe"]
    out = overlay_image(np.zeros((10, 20, 3), np.uint8), np.zeros((10, 20), np.int64), names)
    font, drawn = legend_font(names)
    assert out.width > 200 and out.width >= font.getlength(drawn[1])
    assert drawn[:2] == names[:2] and "\\U0010fffe" in drawn[2]


def test_writability_check_leaves_no_directory(tmp_path):
    from pnpovss.outputs import check_writable_dir

    check_writable_dir(tmp_path / "a" / "b", "--out")
    assert list(tmp_path.iterdir()) == []
