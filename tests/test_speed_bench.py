"""The speed benchmark's summary ratios are read by row name (a new row must not shift them)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pnpovss import prepacked

ROOT = Path(__file__).resolve().parent.parent


def load_speed():
    spec = importlib.util.spec_from_file_location("bench_speed", ROOT / "bench" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ratios_pair_rows_by_name():
    speed = load_speed()
    seconds = {"reference_pattern": 60.0, "pnpovss": 20.0, "pnpovss_eager_vision": 25.0,
               "pnpovss_attention_drop": 6.0, "floor": 16.0}
    rows = [dict(name=n, model="blip", image_size=384, classes=5, seconds=s, peak_mb=1000 * s)
            for n, s in reversed(list(seconds.items()))]  # order must not matter
    (r,) = speed.ratios(rows)
    assert r["speedup_vs_reference"] == 3.0
    assert r["pnpovss_over_floor"] == 1.25
    assert r["attention_drop_speedup_vs_reference"] == 10.0
    assert r["memory_vs_reference"] == round(20 / 60, 2)
    table = speed.markdown({"rows": rows})
    assert "| 3.0x | 1.25x |" in table


def test_reduced_precision_and_batch_ratios():
    speed = load_speed()
    seconds = {"reference_pattern": 60.0, "pnpovss": 20.0, "pnpovss_bf16": 12.0, "pnpovss_bf16_batch": 10.0,
               "floor": 16.0}
    rows = [dict(name=n, model="blip", image_size=384, classes=1, seconds=s, peak_mb=1000.0)
            for n, s in seconds.items()]
    (r,) = speed.ratios(rows)
    assert r["bf16_over_pnpovss"] == 0.6 and r["bf16_speedup_vs_reference"] == 5.0
    assert r["pnpovss_bf16_batch_gain_per_image"] == 1.2 and "fp16_over_pnpovss" not in r


def test_rows_run_end_to_end_on_a_tiny_model(segmenter, tmp_path, monkeypatch):
    """The bench's own row code (fp32, bf16 batched, bf16 with and without prepacked linears), on
    the tiny model instead of BLIP-large: maps and dropped patches are saved per image and compared
    with fp32's."""
    speed = load_speed()
    monkeypatch.setattr(speed, "build_backbone", lambda model, device="cpu": segmenter.backbone)
    monkeypatch.setattr(speed, "limit_address_space", lambda: None)  # never cap the test process
    monkeypatch.setattr(speed, "gflops", lambda: 1.0)
    monkeypatch.setattr(segmenter.backbone, "pipeline_defaults", {"layer": 2, "head": 1, "drop_k": 3})
    # the rows set the backbone's execution options for their own process: restore them afterwards
    monkeypatch.setattr(segmenter.backbone, "execution", segmenter.backbone.execution)
    size = segmenter.backbone.native_image_size
    rows = []
    for name in ("pnpovss", "pnpovss_bf16_batch", "pnpovss_batch"):
        spec = dict(name=name, model="blip", image_size=size, classes=3, images=1, drop_iters=3, threads=1, batch=2)
        row = speed.run_row(spec, tmp_path / f"{name}.npz")
        assert row["batch"] == (2 if name.endswith("_batch") else 1) and len(row["seconds_each"]) == row["batch"]
        rows.append({**row, "maps": str(tmp_path / f"{name}.npz")})
    out = {r["name"]: r for r in speed.with_diffs(speed.merge(rows))}
    assert out["pnpovss_batch"]["max_abs_diff_vs_fp32"] <= 1e-5  # batching changes nothing
    assert out["pnpovss_batch"]["drop_agreement_vs_fp32"] == [1.0, 1.0]
    bf16 = out["pnpovss_bf16_batch"]
    assert 0 < bf16["max_abs_diff_vs_fp32"] and len(bf16["drop_agreement_vs_fp32"]) == 2
    assert all(0.0 <= a <= 1.0 for a in bf16["drop_agreement_vs_fp32"])


@pytest.mark.skipif(not prepacked.available(), reason="this torch has no oneDNN prepacked linear")
def test_packed_row_runs_the_packed_ops_and_the_unpacked_row_does_not(segmenter, tmp_path, monkeypatch):
    """Where the packed ops exist, ``pnpovss_bf16`` really runs them (counted) and
    ``pnpovss_bf16_unpacked`` never does (autocast's linear), with the same maps to bf16 rounding:
    the comparison is packed against unpacked, not autocast against itself."""
    speed = load_speed()
    monkeypatch.setattr(speed, "build_backbone", lambda model, device="cpu": segmenter.backbone)
    monkeypatch.setattr(speed, "limit_address_space", lambda: None)
    monkeypatch.setattr(speed, "gflops", lambda: 1.0)
    monkeypatch.setattr(segmenter.backbone, "pipeline_defaults", {"layer": 2, "head": 1, "drop_k": 3})
    monkeypatch.setattr(segmenter.backbone, "execution", segmenter.backbone.execution)
    calls, real = [], prepacked.linear
    monkeypatch.setattr(prepacked, "linear", lambda m, x: calls.append(m) or real(m, x))
    size, maps, counts = segmenter.backbone.native_image_size, {}, {}
    for name in ("pnpovss_bf16", "pnpovss_bf16_unpacked"):
        calls.clear()
        spec = dict(name=name, model="blip", image_size=size, classes=3, images=1, drop_iters=3, threads=1, batch=2)
        speed.run_row(spec, tmp_path / f"{name}.npz")
        counts[name] = len(calls)
        with np.load(tmp_path / f"{name}.npz") as z:
            maps[name] = z["map0"]
    assert counts["pnpovss_bf16"] > 0 and counts["pnpovss_bf16_unpacked"] == 0
    np.testing.assert_allclose(maps["pnpovss_bf16"], maps["pnpovss_bf16_unpacked"], rtol=1e-2,
                               atol=1e-2 * np.abs(maps["pnpovss_bf16_unpacked"]).max())
