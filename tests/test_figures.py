"""bench/figures.py: the command writes every figure (not blank, identical on a rerun), the charts
take their numbers from the benchmark JSON, and those numbers are the docs' generated tables' numbers."""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("bench_figures", ROOT / "bench" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_not_blank(path: Path) -> None:
    img = np.asarray(Image.open(path).convert("RGB")).astype(np.float32)
    assert img.shape[0] > 200 and img.shape[1] > 400, img.shape
    assert img.std() > 20, f"{path.name} is nearly uniform"
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20, f"{path.name} has almost no colours"
    assert (img < 128).mean() > 0.01, f"{path.name} has almost nothing drawn on it"


@pytest.mark.slow
def test_command_writes_every_figure_on_one_small_image(figures, tmp_path, capsys):
    """The docs' command on 1 image at 48 px: every registered PNG exists, is drawn on, and a
    rerun gives the same bytes (no timestamps, fixed seeds). Slow (~10 s): it runs the whole
    command twice, toy model load and three matplotlib renders each time."""
    args = ["--out", str(tmp_path / "a"), "--images", "1", "--size", "48"]
    assert figures.main(args) == 0
    names = [name for name, _ in figures.FIGURES.values()]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(names)
    for name in names:
        assert_not_blank(tmp_path / "a" / name)
        assert Image.open(tmp_path / "a" / name).info.get("Software") is None
    assert figures.main(["--out", str(tmp_path / "b"), "--images", "1", "--size", "48"]) == 0
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert str(tmp_path / "a" / "stages.png") in capsys.readouterr().out


def test_stage_rows_come_from_the_pipeline_itself(figures):
    """The figure's DropOut trace combines (2 x pass 1 + later passes) into the maps that
    Segmenter.segment used, and each later pass is zero on the patches dropped before it."""
    from pnpovss import Segmenter

    seg = Segmenter.from_pretrained("toy")
    (sample,) = figures.stage_samples(7, 1, 96)
    run = figures.stage_maps(seg, sample)
    combined = 2 * run["passes"][0] + sum(run["passes"][1:])
    np.testing.assert_allclose(combined, run["result"].grid_maps, atol=1e-6)
    for passed, dropped in zip(run["passes"][1:], run["dropped"][1:]):
        assert dropped.sum() > 0 and (passed[:, dropped] == 0).all()


def chart_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def table_rows(prefix: str, *tables: str) -> list[list[str]]:
    """Cells of the lines starting with ``prefix`` of generated tables ``docs/generated/NAME.md``
    (what the results pages show; tests/test_docs.py checks they are bench/tables.py's output)."""
    lines = [line for name in tables for line in (ROOT / "docs" / "generated" / f"{name}.md").read_text().splitlines()]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith(prefix)]


def test_ablation_chart_matches_the_toyworld_tables(figures, tmp_path):
    args = figures.parse_args(["--out", str(tmp_path)])
    fig = figures.draw_ablation(args)
    ax = fig.axes[0]
    bars = {lab.get_text().split(" (")[0]: y for lab, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    value_at = {round(t.get_position()[1]): t.get_text() for t in ax.texts if re.fullmatch(r"[\d.]+", t.get_text())}
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    table = {re.match(r"`([^`]+)`", cells[0]).group(1): cells[1] for cells in table_rows("| `", "toyworld-stages", "toyworld-options")
             if re.match(r"`([^`]+)`", cells[0]) and re.fullmatch(r"[\d.]+", cells[1])}
    toy = json.loads(figures.TOY_JSON.read_text())
    expected = [*toy["rows"], *toy["options"]]
    assert set(expected) <= set(table), "a toy-bench row is missing from the toy-world tables"
    for name in expected:
        if name in figures.REFERENCE_ROWS:  # drawn as a reference line, its value in the legend
            assert f"{name}: {figures.REFERENCE_ROWS[name][0]}, {table[name]}" in legend
        else:
            assert value_at[round(bars[name])] == table[name], name


def test_ablation_chart_reads_its_numbers_from_the_json(figures, tmp_path):
    toy = json.loads(figures.TOY_JSON.read_text())
    toy["rows"]["full"]["miou"] = 12.345
    toy["options"]["full_new_option"] = {"overrides": {}, "miou": 43.21}
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(toy))
    fig = figures.draw_ablation(figures.parse_args(["--out", str(tmp_path), "--toy-json", str(path)]))
    assert "12.3" in chart_texts(fig) and "43.2" in chart_texts(fig)
    assert "full_new_option" in [t.get_text() for t in fig.axes[0].get_yticklabels()]


def test_speed_chart_matches_the_speed_table(figures, tmp_path):
    fig = figures.draw_speed(figures.parse_args(["--out", str(tmp_path)]))
    texts = chart_texts(fig)
    cells = [c for row in table_rows("| blip |", "speed-full") + table_rows("| bridgetower |", "speed-full") for c in row[3:]
             if re.fullmatch(r"[\d.]+ s, [\d.]+ GB", c)]
    assert len(cells) == sum(1 for r in json.loads(figures.SPEED_JSON.read_text())["rows"] if r.get("seconds"))
    assert sorted(c.split(", ")[0] for c in cells) == sorted(t for t in texts if t.endswith(" s"))
    assert sorted(c.split(", ")[1][:-3] for c in cells) == sorted(t for t in texts if not t.endswith(" s"))


def test_missing_record_is_a_one_line_error_and_writes_nothing(figures, tmp_path, capsys):
    out = tmp_path / "out"
    rc = figures.main(["--out", str(out), "--only", "speed", "--only", "ablation", "--toy-json", str(tmp_path / "none.json")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("Error: ") and err.count("\n") == 1
    assert "python bench/toyworld.py --seed 7" in err
    assert not out.exists() or not any(out.iterdir())
