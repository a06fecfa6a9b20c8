"""Reduced precision (``dtype``), ``auto`` device/dtype resolution and batched passes."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pnpovss import PipelineConfig, PnpOvssError, Segmenter, precision, prepacked
from pnpovss.batching import CPU_MAX_BATCH, MAX_BATCH, auto_batch_size, batch_for_memory
from pnpovss.cli import main
from pnpovss.execution import ExecutionOptions, replacement_of
from pnpovss.precision import resolve_precision
from tools.testing import has_cxx_compiler


# ------------------------------------------------------------------------------ resolution
@pytest.mark.parametrize("setting, device, native, cuda_bf16, expected", [
    ("auto", "cpu", True, None, "bf16"),
    ("auto", "cpu", False, None, "fp32"),
    ("auto", "cuda", None, True, "bf16"),
    ("auto", "cuda", None, False, "fp16"),
    ("fp32", "cpu", True, None, "fp32"),
    ("bf16", "cpu", False, None, "bf16"),  # asked for explicitly: emulated, but it is what was asked
    ("fp16", "cuda", None, False, "fp16"),
    ("fp32", "cuda", None, True, "fp32"),
])
def test_resolve_precision(setting, device, native, cuda_bf16, expected):
    p = resolve_precision(setting, device, native_bf16=native, cuda_bf16=cuda_bf16)
    assert p.name == expected and p.device_type == device
    assert p.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[expected]


def test_auto_without_native_bf16_falls_back_and_says_so():
    p = resolve_precision("auto", "cpu", native_bf16=False)
    assert p.name == "fp32" and "no native bf16" in p.note and "no native bf16" in p.describe()
    assert resolve_precision("auto", "cpu", native_bf16=True).note == ""


@pytest.mark.parametrize("setting, device, cuda_bf16, message", [
    ("fp16", "cpu", None, "dtype fp16 is for CUDA GPUs; on a CPU use --dtype bf16"),
    ("bf16", "cuda", False, "this GPU does not support bf16; use --dtype fp16 or fp32"),
    ("half", "cpu", None, "dtype must be one of auto, fp32, bf16, fp16, got 'half'"),
])
def test_bad_precision_is_a_one_line_error(setting, device, cuda_bf16, message):
    with pytest.raises(PnpOvssError, match=message):
        resolve_precision(setting, device, native_bf16=True, cuda_bf16=cuda_bf16)


def test_dtype_is_a_validated_config_field():
    assert PipelineConfig().dtype == "fp32"  # the paper's arithmetic stays the default
    with pytest.raises(PnpOvssError, match="dtype='float16': expected one of 'auto', 'fp32', 'bf16', 'fp16'"):
        PipelineConfig(dtype="float16")


def test_fp32_contexts_are_no_ops_and_text_stays_fp32():
    """The vision context casts matmuls to bf16; the text side (GradCAM's forward and backward)
    stays fp32 by the measured choice ``Precision.text = False``."""
    a = torch.randn(4, 4)
    p = resolve_precision("bf16", "cpu")
    with p.vision_autocast():
        assert (a @ a).dtype == torch.bfloat16
    with p.text_autocast():
        assert (a @ a).dtype == torch.float32
    with resolve_precision("fp32", "cpu").vision_autocast():
        assert (a @ a).dtype == torch.float32


def test_image_projections_run_reduced_and_hand_fp32_on(segmenter):
    """BLIP's cross-attention key/value projections see only the image tokens (no gradient passes
    through them): under bf16 they compute in bf16 like the vision encoder, return fp32, and the
    rest of the text side stays fp32; outside the block the modules are untouched."""
    projections = segmenter.backbone.image_projections()
    assert projections and all(isinstance(m, torch.nn.Linear) for m in projections)
    lin = projections[0]
    x = torch.randn(2, 5, lin.in_features)
    p = resolve_precision("bf16", "cpu")
    with p.text_autocast(projections):
        out = lin(x)
        assert (x @ x.transpose(1, 2)).dtype == torch.float32
    assert out.dtype == torch.float32
    expected = torch.nn.functional.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16()).float()
    assert torch.allclose(out, expected, atol=1e-2, rtol=1e-2) and not torch.equal(out, lin(x))
    assert not any(replacement_of(m) for m in projections)
    with resolve_precision("fp32", "cpu").text_autocast(projections):
        assert torch.equal(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias))


# ------------------------------------------------------------------------------ prepacked linears
needs_prepacked = pytest.mark.skipif(not prepacked.available(), reason="this torch has no oneDNN prepacked linear")


@needs_prepacked
def test_prepacked_linear_equals_autocast_linear():
    """The packed weight is autocast's bf16 cast of the same weight, reordered: the product must be
    the same to bf16 rounding of the output (measured: bit for bit), in bf16 like autocast's; an
    in-place change of the weight must repack, not serve the stale copy."""
    lin = torch.nn.Linear(48, 40).requires_grad_(False)
    x = torch.randn(3, 7, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = lin(x)
    out = prepacked.linear(lin, x)
    assert out.dtype == expected.dtype == torch.bfloat16
    assert torch.allclose(out.float(), expected.float(), rtol=2**-7, atol=1e-6)
    lin.weight.mul_(-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = lin(x)
    assert torch.allclose(prepacked.linear(lin, x).float(), expected.float(), rtol=2**-7, atol=1e-6)
    assert prepacked.linears(torch.nn.Sequential(lin, torch.nn.ReLU())) == [lin]
    xg = x.clone().requires_grad_(True)  # the packed op has no gradient: such an input takes the plain product
    prepacked.linear(lin, xg).float().sum().backward()
    assert xg.grad is not None and xg.grad.shape == x.shape


@needs_prepacked
def test_bf16_pipeline_runs_the_vision_linears_prepacked(tiny_blip_dir, monkeypatch):
    """bf16 on a CPU sends the vision encoder's linear layers and the image key/value projections
    through the packed weights, and the maps equal autocast's (``ExecutionOptions(prepack=False)``);
    fp32 never touches them, and the modules' own forwards are back after every call."""
    calls = []
    real = prepacked.linear
    monkeypatch.setattr(prepacked, "linear", lambda m, x: calls.append(m) or real(m, x))
    img = _images(1)[0]
    maps = {}
    for packed in (True, False):
        seg = Segmenter.from_pretrained(str(tiny_blip_dir), layer=2, head=1,  # a fresh image cache
                                        execution=ExecutionOptions(prepack=packed))
        maps[packed] = seg.segment(img, ["cat", "dog"], keep_all=True, dtype="bf16").grid_maps
        if packed:
            vision, projections = seg.backbone.vision_linears(), seg.backbone.image_projections()
            assert vision and {id(m) for m in vision + projections} == {id(m) for m in calls}
            calls.clear()
            seg.segment(img, ["cat", "dog"], keep_all=True)
            assert not calls  # fp32 stays autocast-free and unpacked
            assert not any(replacement_of(m) for m in vision + projections)
    assert not calls
    np.testing.assert_allclose(maps[True], maps[False], rtol=1e-3, atol=1e-3 * np.abs(maps[False]).max())


@needs_prepacked
def test_prepacked_forwards_are_released_after_an_exception():
    lin = torch.nn.Linear(8, 8)
    with pytest.raises(ValueError, match="inside"):
        with resolve_precision("bf16", "cpu").vision_autocast([lin]):
            assert replacement_of(lin) is not None  # replaced for the block
            raise ValueError("inside")
    assert replacement_of(lin) is None and lin(torch.randn(2, 8)).dtype == torch.float32


def test_without_prepacked_ops_bf16_falls_back_to_autocast(monkeypatch):
    monkeypatch.setattr(prepacked, "available", lambda: False)
    lin = torch.nn.Linear(8, 8)
    p = resolve_precision("bf16", "cpu")
    assert not p.prepacks()
    with p.vision_autocast([lin]):
        assert replacement_of(lin) is None and lin(torch.randn(2, 8)).dtype == torch.bfloat16


# ------------------------------------------------------------------------------ maps in bf16
def _images(count, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((30 + 3 * i, 40 + i, 3)) * 255).astype(np.uint8) for i in range(count)]


def test_bf16_maps_close_to_fp32(segmenter, two_tone_image):
    """One pass (no DropOut choice to flip): bf16 rounds to 8 significant bits (relative 2^-9 per
    value), and the tiny model's 2 vision layers compound it to well under 1e-2 of the map's range
    (measured 2.5e-3); 3e-2 leaves room for other CPUs' kernels while a wrong cast (fp16 overflow,
    maps formed in bf16 and underflowing, a dropped gradient) would be off by the map's whole range."""
    ref = segmenter.segment(two_tone_image, ["sky", "sea"], keep_all=True, drop_iters=1).grid_maps
    low = segmenter.segment(two_tone_image, ["sky", "sea"], keep_all=True, drop_iters=1, dtype="bf16").grid_maps
    assert low.dtype == np.float32 and ref.shape == low.shape
    assert np.abs(low - ref).max() <= 3e-2 * np.abs(ref).max()
    assert not np.array_equal(low, ref)  # the vision encoder really ran in bf16


def test_bf16_label_maps_mostly_agree_with_fp32(segmenter):
    """The whole pipeline (4 DropOut passes, blur, CRF) on a few images: a near-tie in the patch
    ranking may flip a dropped patch, so pixels, not values, are compared."""
    imgs = _images(4)
    ref = segmenter.segment_batch(imgs, ["cat", "dog"], keep_all=True)
    low = segmenter.segment_batch(imgs, ["cat", "dog"], keep_all=True, dtype="bf16")
    agree = np.mean([np.mean(a.labels == b.labels) for a, b in zip(ref, low)])
    assert agree >= 0.95  # measured 0.989 (lowest image 0.961)


def test_image_cache_is_per_precision(segmenter, two_tone_image):
    """The cached first-pass encoding of one image must not serve another precision."""
    a = segmenter.segment(two_tone_image, ["sky"], keep_all=True, drop_iters=1).grid_maps
    b = segmenter.segment(two_tone_image, ["sky"], keep_all=True, drop_iters=1, dtype="bf16").grid_maps
    c = segmenter.segment(two_tone_image, ["sky"], keep_all=True, drop_iters=1).grid_maps
    assert not np.array_equal(a, b) and np.array_equal(a, c)


# ------------------------------------------------------------------------------ batches
@pytest.mark.parametrize("overrides", [{}, {"drop_mode": "attention"}, {"halving": True, "dtype": "bf16"}])
def test_batch_of_four_equals_one_at_a_time(segmenter, overrides):
    """Different image sizes and class lists of different lengths (captions padded to the longest):
    an image's labels must not depend on which images share its batch."""
    imgs = _images(4, seed=3)
    classes = [["cat"], ["cat", "dog", "grass"], ["sky", "dog"], ["a cat", "dog", "grass", "sky"]]
    batched = segmenter.segment_batch(imgs, classes, keep_all=True, **overrides)
    for img, names, res in zip(imgs, classes, batched):
        alone = segmenter.segment_batch([img], [names], keep_all=True, **overrides)[0]
        assert np.array_equal(alone.labels, res.labels)
        np.testing.assert_allclose(alone.grid_maps, res.grid_maps, rtol=1e-4, atol=1e-6 * np.abs(alone.grid_maps).max())


def test_segment_stream_auto_batches(segmenter):
    imgs = _images(6)
    sizes = [len(b) for b in segmenter.segment_stream(imgs, [["cat"]] * 6, batch_size=None)]
    assert sizes[0] == 1 and sum(sizes) == 6 and max(sizes) <= CPU_MAX_BATCH
    assert [len(b) for b in segmenter.segment_stream(imgs, [["cat"]] * 6, batch_size=4)] == [4, 2]


def test_batch_for_memory():
    gb = 2**30
    assert batch_for_memory(gb, 10 * gb, cap=16) == 5  # half of the free memory
    assert batch_for_memory(gb, 40 * gb, cap=16) == 16
    assert batch_for_memory(4 * gb, 2 * gb, cap=16) == 1  # never below 1
    assert batch_for_memory(0, gb, cap=4) == 4  # nothing measured: the cap
    assert 1 <= auto_batch_size(torch.device("cpu"), 10**6) <= CPU_MAX_BATCH <= MAX_BATCH


# ------------------------------------------------------------------------------ CLI
def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_segment_dtype_and_auto_device_recorded(tiny_blip_dir, tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(_images(1)[0]).save(img)
    res = run("segment", img, "--classes", "cat,dog", "--model", tiny_blip_dir, "--out", tmp_path / "o",
              "--layer", 2, "--head", 0, "--dtype", "bf16")
    assert res.exit_code == 0, res.output
    expected_dev = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert f"device: {expected_dev} (auto), dtype: bf16 (vision encoder and image key/value projections)" in res.output
    meta = json.loads((tmp_path / "o" / "a.json").read_text())
    assert meta["dtype"] == "bf16" and meta["device"] == expected_dev and meta["config"]["dtype"] == "bf16"


def test_segment_auto_dtype_on_cpu_without_bf16_says_fp32(tiny_blip_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    img = tmp_path / "a.png"
    Image.fromarray(_images(1)[0]).save(img)
    res = run("segment", img, "--classes", "cat", "--model", tiny_blip_dir, "--out", tmp_path / "o",
              "--layer", 2, "--head", 0, "--dtype", "auto", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "dtype: fp32; fp32: this CPU has no native bf16" in res.output
    assert json.loads((tmp_path / "o" / "a.json").read_text())["dtype"] == "fp32"


def test_eval_batch_size_does_not_change_scores(tiny_blip_dir, tmp_path):
    scores = []
    for batch in ("1", "3", "auto"):
        out = tmp_path / f"e{batch}.json"
        res = run("eval", "--dataset", "toyworld", "--seed", 3, "--images", 5, "--model", tiny_blip_dir,
                  "--set", "layer=2", "--set", "head=1", "--set", "drop_iters=2", "--json", out,
                  "--threads", 1, "--batch-size", batch, "--device", "cpu")
        assert res.exit_code == 0, res.output
        data = json.loads(out.read_text())
        assert data["dtype"] == "fp32" and data["device"] == "cpu"
        scores.append(data["confusion_matrix"])
    assert scores[0] == scores[1] == scores[2]


# ------------------------------------------------------------------------------ compiled vision encoder
@pytest.mark.skipif(not has_cxx_compiler(), reason="torch.compile (inductor) needs a C++ compiler")
def test_compiled_vision_encoder_matches_the_eager_one(tiny_blip_dir, two_tone_image):
    """``compile_vision=True`` runs BLIP's vision encoder through torch.compile (about 10 s to
    compile the tiny model): the same maps to float rounding (inductor fuses and reorders; measured
    2e-8 of a 5e-2 map on the toy model) and the same labels; the image cache keeps the two apart."""
    eager = Segmenter.from_pretrained(str(tiny_blip_dir), layer=2, head=1)
    comp = Segmenter.from_pretrained(str(tiny_blip_dir), layer=2, head=1, compile_vision=True)
    assert comp.backbone.compile_vision and not eager.backbone.compile_vision
    ref = eager.segment(two_tone_image, ["sky", "sea"], keep_all=True)
    got = comp.segment(two_tone_image, ["sky", "sea"], keep_all=True)
    assert comp.backbone._compiled is not None and "+compiled" in comp._cache_key
    assert np.abs(got.grid_maps - ref.grid_maps).max() <= 1e-4 * np.abs(ref.grid_maps).max()
    assert np.array_equal(got.labels, ref.labels)


def test_compile_vision_is_blip_only(tmp_path):
    from tools.testing import build_tiny_bridgetower

    with pytest.raises(PnpOvssError, match="compile_vision must be True or False, got 'yes'"):
        Segmenter.from_pretrained("toy", compile_vision="yes")
    path = build_tiny_bridgetower(tmp_path / "bt")
    with pytest.raises(PnpOvssError, match="compile_vision is supported for BLIP models only, not bridgetower; "
                                           "load it without compile_vision"):
        Segmenter.from_pretrained(str(path), compile_vision=True)


@pytest.mark.skipif(not has_cxx_compiler(), reason="torch.compile (inductor) needs a C++ compiler")
def test_eval_compile_vision_flag(tmp_path):
    """``eval --compile-vision`` (also on ``tune``) scores what the eager encoder scores."""
    outs = []
    for flag in ([], ["--compile-vision"]):
        out = tmp_path / f"e{len(flag)}.json"
        res = CliRunner().invoke(main, ["eval", "--dataset", "toyworld", "--seed", "7", "--images", "2", "--threads", "1",
                                        *flag, "--json", str(out)], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        outs.append(json.loads(out.read_text()))
    assert outs[0]["miou"] == outs[1]["miou"] and outs[0]["confusion_matrix"] == outs[1]["confusion_matrix"]
