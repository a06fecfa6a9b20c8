"""``pnpovss eval --suite standard``: the eight datasets of the peers' tables from one synthetic
data root in the mmsegmentation layouts (tools.testing.make_mmseg_root), with the tiny BLIP."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pnpovss.cli import main
from pnpovss.suite import SUITES, TITLES
from tools.testing import make_mmseg_root

ORDER = ["voc21", "context60", "coco-object", "voc20", "context59", "coco-stuff", "cityscapes", "ade20k"]


@pytest.fixture
def model_args(tiny_blip_dir):
    return ["--model", str(tiny_blip_dir), "--set", "layer=2", "--set", "head=1", "--threads", "1", "--device", "cpu"]


def suite(root, out, *args):
    return CliRunner().invoke(main, ["eval", "--suite", "standard", "--root", str(root), "--out", str(out),
                                     *map(str, args)], catch_exceptions=False)


def table_cells(output):
    """The table's heading and value rows from the command's output."""
    rows = [r for r in output.splitlines() if r.startswith("| ")]
    heads, values = ([c.strip() for c in r.strip("|").split("|")] for r in rows)
    return heads, values


def test_the_suite_runs_every_dataset_and_its_table_equals_their_jsons(tmp_path, model_args):
    data, out = make_mmseg_root(tmp_path / "data"), tmp_path / "out"
    res = suite(data, out, *model_args)
    assert res.exit_code == 0, res.output
    assert SUITES["standard"] == tuple(ORDER)
    heads, values = table_cells(res.output)
    assert heads == [TITLES[n] for n in ORDER] + ["Mean"]
    combined = json.loads((out / "standard.json").read_text())
    per = {n: json.loads((out / f"{n}.json").read_text()) for n in ORDER}
    assert combined["datasets"] == ORDER and combined["missing"] == {}
    for name, cell in zip(ORDER, values):
        assert combined["miou"][name] == per[name]["miou"] and cell == f"{per[name]['miou']:.1f}"
        assert per[name]["dataset"] == name and per[name]["images"] == 2
    assert combined["mean"] == pytest.approx(np.mean([per[n]["miou"] for n in ORDER]))
    assert values[-1] == f"{combined['mean']:.1f}"
    assert len({per[n]["miou"] for n in ORDER}) > 1  # real, differing scores
    table = "\n".join(r for r in res.output.splitlines() if r.startswith("|"))
    docs = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "evaluate.md"
    assert table in docs.read_text()  # the docs' example is this run
    # each dataset's JSON is what a plain eval of it gives
    single = tmp_path / "voc20.json"
    r = CliRunner().invoke(main, ["eval", "--dataset", "voc20", "--root", str(data), "--json", str(single), *model_args])
    assert r.exit_code == 0, r.output
    one = json.loads(single.read_text())
    assert one["miou"] == per["voc20"]["miou"] and one["confusion_matrix"] == per["voc20"]["confusion_matrix"]
    assert "class_names" not in one  # the default table: the JSON is as before


def test_a_missing_dataset_is_reported_and_strict_fails(tmp_path, model_args):
    data, out = make_mmseg_root(tmp_path / "data", skip=("cityscapes",)), tmp_path / "out"
    res = suite(data, out, *model_args)
    assert res.exit_code == 0, res.output
    assert "cityscapes: missing, left out (Cityscapes not found" in res.output
    heads, values = table_cells(res.output)
    assert values[heads.index("Cityscapes")] == "-" and values[-1].endswith("*")
    assert "* mean over 7 of 8 datasets (missing: cityscapes)" in res.output
    combined = json.loads((out / "standard.json").read_text())
    assert combined["miou"]["cityscapes"] is None and combined["mean_over"] == 7
    assert not (out / "cityscapes.json").exists()
    strict = suite(data, tmp_path / "strict", "--strict", *model_args)
    assert strict.exit_code == 1 and strict.output.count("\n") == 1
    assert "--strict: cityscapes: Cityscapes not found" in strict.output and not (tmp_path / "strict").exists()


def test_an_interrupted_suite_resumes_dataset_by_dataset(tmp_path, model_args, monkeypatch):
    """Ctrl-C during the fourth dataset: the three finished keep their JSONs; the same command
    again evaluates only the rest and gives the uninterrupted table. Other settings
    (--images 1) are another run: nothing is reused."""
    import pnpovss.evaluate

    data = make_mmseg_root(tmp_path / "data")
    full, out = tmp_path / "full", tmp_path / "out"
    assert suite(data, full, *model_args).exit_code == 0
    real, calls = pnpovss.evaluate.evaluate, []

    def interrupted(seg, ds, *args, **kwargs):
        calls.append(ds.name)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(seg, ds, *args, **kwargs)

    monkeypatch.setattr(pnpovss.evaluate, "evaluate", interrupted)
    res = suite(data, out, *model_args)
    assert res.exit_code == 130 and sorted(p.stem for p in out.glob("*.json")) == sorted(ORDER[:3])
    monkeypatch.setattr(pnpovss.evaluate, "evaluate", real)
    calls.clear()
    monkeypatch.setattr(pnpovss.evaluate, "evaluate", lambda seg, ds, *a, **k: calls.append(ds.name) or real(seg, ds, *a, **k))
    res = suite(data, out, *model_args)
    assert res.exit_code == 0, res.output
    assert calls == ORDER[3:]
    assert all(f"{n}: already evaluated with these settings" in res.output for n in ORDER[:3])
    assert json.loads((out / "standard.json").read_text())["miou"] == json.loads((full / "standard.json").read_text())["miou"]
    calls.clear()
    assert suite(data, out, "--images", "1", *model_args).exit_code == 0 and calls == ORDER


def test_peer_class_names_are_recorded(tmp_path, model_args):
    data, out = make_mmseg_root(tmp_path / "data", skip=("VOC2012", "VOC2010", "coco_stuff164k", "cityscapes")), tmp_path / "o"
    res = suite(data, out, "--class-names", "sclip", *model_args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "ade20k.json").read_text())["class_names"] == "sclip"


@pytest.mark.parametrize("args, message", [
    ([], "give one dataset with --dataset NAME or several with --suite NAME"),
    (["--dataset", "voc", "--suite", "standard"], "one of the two"),
    (["--suite", "standard"], "--suite standard needs --root DATA"),
    (["--suite", "standard", "--root", ".", "--json", "x.json"], "leave out --json"),
    (["--dataset", "voc", "--strict"], "--out and --strict belong to --suite"),
    (["--suite", "standard", "--root", "nowhere"], "none of the standard suite's datasets is there"),
    (["--suite", "standard", "--root", ".", "--set", "background=false"], "each dataset of a suite sets"),
])
def test_suite_usage_errors_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["eval", *args])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and message in res.output, res.output


@pytest.mark.slow
def test_torchrun_suite_equals_one_process(tmp_path, tiny_blip_dir):
    """`torchrun --nproc_per_node 2 -m pnpovss eval --suite standard` (gloo, CPU): the same table
    and per-dataset confusion matrices as one process, written once. Slow: the torchrun launcher
    and two fresh processes (~25 s on 2 shared cores)."""
    import os
    import signal
    import subprocess
    import sys

    data = make_mmseg_root(tmp_path / "data", skip=("VOC2010", "coco_stuff164k"))
    args = ["--model", str(tiny_blip_dir), "--set", "layer=2", "--set", "head=1", "--threads", "1", "--device", "cpu"]
    assert suite(data, tmp_path / "one", *args).exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "pnpovss", "eval", "--suite", "standard", "--root", str(data),
                             "--out", str(tmp_path / "two"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "standard.json").read_text()) for d in ("one", "two"))
    assert one["miou"] == two["miou"] and two["mean_over"] == 4 and stdout.count("| VOC21 |") == 1
    for name in ("voc21", "voc20", "cityscapes", "ade20k"):
        a, b = (json.loads((tmp_path / d / f"{name}.json").read_text()) for d in ("one", "two"))
        assert a["confusion_matrix"] == b["confusion_matrix"] and b["processes"] == 2
