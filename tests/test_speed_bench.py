"""The speed benchmark's summary ratios are read by row name (a new row must not shift them)."""

import importlib.util
from pathlib import Path

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
