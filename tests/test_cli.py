"""`pnpovss segment` end to end on a tiny saved model, and its one-line errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pnpovss.cli import main


@pytest.fixture
def images(tmp_path, rng):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        Image.fromarray((rng.random((30 + i, 40, 3)) * 255).astype(np.uint8)).save(d / f"im{i}.png")
    return d


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_segment_writes_three_files_per_image(tiny_blip_dir, images, tmp_path):
    out = tmp_path / "out"
    res = run("segment", images, "--classes", "cat, batman,grass", "--keep-all", "--model", tiny_blip_dir, "--out", out,
              "--layer", 2, "--head", "0,1", "--drop-iters", 2, "--batch-size", 2)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"im{i}.{kind}" for i in range(3) for kind in ("labels.png", "overlay.png", "json")] + ["pnpovss_run.json"])
    meta = json.loads((out / "im1.json").read_text())
    assert meta["classes"] == ["background", "cat", "batman", "grass"]
    assert meta["config"]["head"] == [0, 1] and meta["config"]["drop_iters"] == 2
    assert sum(meta["fractions"].values()) == pytest.approx(1.0)
    labels = Image.open(out / "im1.labels.png")
    assert labels.mode == "P" and labels.size == (40, 31)
    assert set(np.unique(np.asarray(labels))) <= {0, 1, 2, 3}
    assert Image.open(out / "im1.overlay.png").size[0] >= 40  # as wide as the image or its legend
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_no_crf_and_no_background(tiny_blip_dir, images, tmp_path):
    out = tmp_path / "o2"
    res = run("segment", images / "im0.png", "--classes", "cat,dog", "--keep-all", "--model", tiny_blip_dir, "--out", out,
              "--layer", 3, "--head", "all", "--no-crf", "--no-background", "--halving", "--image-size", 48)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "im0.json").read_text())
    assert meta["classes"] == ["cat", "dog"] and meta["config"]["crf"] is False and meta["config"]["head"] is None
    assert meta["config"]["image_size"] == 48 and meta["config"]["halving"] is True


@pytest.mark.parametrize("args, message", [
    (["--classes", "cat,,dog"], "non-empty"),
    (["--classes", "cat,Cat"], "given twice"),
    (["--classes", "cat,background"], "added automatically"),
    (["--classes", ",".join(f"c{i}" for i in range(70)), "--keep-all"], "text tokens"),  # candidates: the best fit
    (["--classes", "cat", "--layer", "9"], "layer 9 is out of range"),
    (["--classes", "cat", "--head", "5"], "head 5 is out of range"),
    (["--classes", "cat", "--head", "x"], "--head takes"),
    (["--classes", "cat", "--image-size", "30"], "multiple of the model's patch size"),
    (["--classes", "cat", "--threshold", "1.5"], "threshold"),
    (["--classes", "cat", "--device", "cuda:0"], "cuda"),
    (["--classes", "cat", "--dtype", "half"], "dtype='half': expected one of 'auto', 'fp32', 'bf16', 'fp16'"),
    (["--classes", "cat", "--device", "cpu", "--dtype", "fp16"], "dtype fp16 is for CUDA GPUs; on a CPU use --dtype bf16"),
    (["--classes", "cat", "--batch-size", "0"], "--batch-size takes a positive integer or 'auto', got '0'"),
    (["--classes", "cat", "--batch-size", "many"], "--batch-size takes a positive integer or 'auto'"),
])
def test_bad_options_one_line_error(tiny_blip_dir, images, tmp_path, args, message):
    out = tmp_path / "bad"
    res = run("segment", images / "im0.png", "--model", tiny_blip_dir, "--out", out, "--layer", 2, "--head", 0, *args)
    if "cuda" in message:
        import torch
        if torch.cuda.is_available():
            pytest.skip("machine has a GPU")
    assert res.exit_code != 0
    lines = [ln for ln in res.output.strip().splitlines() if not ln.startswith(("loading", "device:"))]
    assert len(lines) == 1 and message in lines[0], res.output
    assert not out.exists() or not any(out.iterdir())


def test_bad_inputs_fail_before_writing(tiny_blip_dir, images, tmp_path):
    (images / "broken.png").write_bytes((images / "im0.png").read_bytes()[:100])
    out = tmp_path / "o3"
    res = run("segment", images, "--classes", "cat", "--model", tiny_blip_dir, "--out", out, "--layer", 2)
    assert res.exit_code != 0 and "broken.png" in res.output and "truncated" in res.output
    assert not out.exists()
    res = run("segment", tmp_path / "missing.png", "--classes", "cat", "--model", tiny_blip_dir, "--out", out)
    assert res.exit_code != 0 and "no such file" in res.output
    res = run("segment", str(images / "*.jpg"), "--classes", "cat", "--model", tiny_blip_dir, "--out", out)
    assert res.exit_code != 0 and "matches no file" in res.output


def test_missing_model_names_what_was_tried(images, tmp_path):
    res = run("segment", images / "im0.png", "--classes", "cat", "--model", tmp_path / "no-such-dir")
    assert res.exit_code != 0 and "does not exist" in res.output
    res = run("segment", images / "im0.png", "--classes", "cat", "--model", "nobody/no-such-model")
    assert res.exit_code != 0 and "nobody/no-such-model" in res.output and "hub" in res.output
    assert len(res.output.strip().splitlines()) == 2  # "loading ..." + the error


def test_set_option_reaches_the_pipeline(tmp_path, tiny_blip_dir, two_tone_image):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.fromarray(two_tone_image).save(img)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["segment", str(img), "--classes", "sky,sand", "--model", str(tiny_blip_dir),
                                    "--layer", "2", "--head", "0", "--set", "crf_unary=probs", "--set", "threshold_mode=binary",
                                    "--set", "blur=off", "--out", str(out)])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "a.json").read_text())["config"]
    assert (cfg["crf_unary"], cfg["threshold_mode"], cfg["blur"]) == ("probs", "binary", False)


@pytest.mark.parametrize("arg, message", [("crf_unary", "expected KEY=VALUE"), ("nope=1", "unknown pipeline option"),
                                          ("blur=maybe", "blur='maybe': expected true or false"),
                                          ("crf_unary=magic", "crf_unary='magic': expected one of 'softmax', 'probs'"),
                                          ("blur_sigma=nan", "blur_sigma=nan: expected a finite number > 0"),
                                          ("crf_gaussian_sxy=-5", "crf_gaussian_sxy=-5.0: expected a finite number > 0"),
                                          ("layer=2.5", "layer='2.5': expected an integer >= 1")])
def test_set_option_errors_are_one_line(tmp_path, tiny_blip_dir, two_tone_image, arg, message):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.fromarray(two_tone_image).save(img)
    res = CliRunner().invoke(main, ["segment", str(img), "--classes", "sky", "--model", str(tiny_blip_dir),
                                    "--set", arg, "--out", str(tmp_path / "out")])
    assert res.exit_code != 0 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_rerun_skips_images_already_segmented_with_the_same_settings(tiny_blip_dir, images, tmp_path):
    """An interrupted batch continues when rerun: finished images are not segmented again, unless
    the settings changed or --overwrite is given."""
    out = tmp_path / "out"
    base = ["segment", images, "--classes", "cat,grass", "--model", tiny_blip_dir, "--out", out, "--layer", 2,
            "--head", 0]
    assert run(*base).exit_code == 0
    (out / "im1.json").unlink()  # as if the run had been stopped before image 1 was finished
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(("im0.", "im2."))}
    res = run(*base)
    assert res.exit_code == 0 and "skipping 2 image(s)" in res.output and "wrote 3 files" in res.output
    assert {n: (out / n).stat().st_mtime_ns for n in stamps} == stamps  # images 0 and 2 untouched
    assert (out / "im1.json").is_file()
    assert json.loads((out / "pnpovss_run.json").read_text())["counts"] == {
        "inputs": 3, "segmented": 1, "already_done": 2, "skipped": 0}
    res = run(*base, "--threshold", 0.3)  # other settings: everything is redone
    assert "skipping" not in res.output and json.loads((out / "im0.json").read_text())["config"]["threshold"] == 0.3
    res = run(*base, "--threshold", 0.3, "--overwrite")
    assert "skipping" not in res.output and "wrote 9 files" in res.output
