"""`pnpovss segment` over folders: the split over processes, identity with one process (gloo, two
processes under torchrun), resume of an interrupted multi-process run, --workers, --skip-bad and
the run summary."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pnpovss import runner
from pnpovss.cli import expand_inputs, main
from pnpovss.distributed import DistContext
from pnpovss.errors import PnpOvssError
from tools.testing import make_toy_folder

TOY = ["--model", "toy", "--vocab", "toyworld", "--batch-size", "1"]


@pytest.fixture
def toy_folder(tmp_path):
    """Eight toy-world images (96 px): the shipped toy model segments one in ~0.2 s."""
    return make_toy_folder(tmp_path / "toy", 8, seed=3)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def units(out: Path) -> dict[str, tuple[bytes, bytes, dict]]:
    """Every image's (labels PNG bytes, overlay PNG bytes, parsed JSON) in an output directory."""
    return {p.name[: -len(".json")]: ((out / p.name.replace(".json", ".labels.png")).read_bytes(),
                                      (out / p.name.replace(".json", ".overlay.png")).read_bytes(),
                                      json.loads(p.read_text()))
            for p in out.glob("*.json") if p.name != runner.SUMMARY_NAME}


def test_split_is_strided_disjoint_and_follows_the_sorted_inputs(toy_folder):
    paths = expand_inputs((str(toy_folder),))
    assert [p.name for p in paths] == [f"img{i}.png" for i in range(8)]
    shards = [DistContext(r, 3, r).shard(paths) for r in range(3)]
    assert [[p.name for p in s] for s in shards] == [["img0.png", "img3.png", "img6.png"],
                                                     ["img1.png", "img4.png", "img7.png"], ["img2.png", "img5.png"]]
    assert sorted(p for s in shards for p in s) == paths
    assert DistContext().gather({"a": 1}) == [{"a": 1}]  # a plain process gathers only itself


def test_each_rank_writes_exactly_its_share_and_together_they_equal_one_process(toy_folder, tmp_path, monkeypatch):
    """The runner's split, without a process group: ranks 0 and 1 of 2 run one after the other
    into one directory (the all-gathers see only the calling rank). Each writes only its own
    images, and the union is byte for byte the single-process output."""
    from pnpovss import Segmenter

    seg = Segmenter.from_pretrained("toy", device="cpu")
    paths = expand_inputs((str(toy_folder),))[:5]
    monkeypatch.setattr(DistContext, "gather", lambda self, obj: [obj])
    one, two = tmp_path / "one", tmp_path / "two"
    runner.run(seg, runner.FolderJob(paths, ["circle", "square", "star"], one, batch_size=1), model="toy",
               progress=False)
    for rank in (0, 1):
        before = set(units(two))
        summary = runner.run(seg, runner.FolderJob(paths, ["circle", "square", "star"], two, batch_size=2),
                             DistContext(rank, 2, rank), model="toy", progress=False)
        assert set(units(two)) - before == {p.stem for p in paths[rank::2]}
        assert summary.segmented == len(paths[rank::2]) and summary.processes == 2
    assert units(two) == units(one) and len(units(one)) == 5


def test_out_check_leaves_nothing_alone_and_keeps_the_directory_under_torchrun(tmp_path, monkeypatch):
    """Under torchrun the processes must not create and remove --out at the same time (a run once
    failed so): there the main process checks first and the directory is then created and kept."""
    runner.check_out_dir(tmp_path / "a" / "out", DistContext())
    assert not (tmp_path / "a").exists()
    monkeypatch.setattr(DistContext, "gather", lambda self, obj: [obj])
    runner.check_out_dir(tmp_path / "b" / "out", DistContext(1, 2, 1))
    assert (tmp_path / "b" / "out").is_dir() and not list((tmp_path / "b" / "out").iterdir())
    (tmp_path / "file").write_text("")
    with pytest.raises(PnpOvssError, match="--out .*file/out: cannot"):
        runner.check_out_dir(tmp_path / "file" / "out", DistContext(0, 2, 0))


def test_workers_overlap_writes_the_same_files(toy_folder, tmp_path):
    """--workers 1 (a DataLoader decoding ahead, a process pool post-processing) against the
    serial path, with batches of 3 and the automatic batch size."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert run("segment", toy_folder, "--model", "toy", "--vocab", "toyworld", "--out", a).exit_code == 0
    res = run("segment", toy_folder, "--model", "toy", "--vocab", "toyworld", "--out", b, "--workers", 1,
              "--batch-size", 3)
    assert res.exit_code == 0, res.output
    assert units(a) == units(b) and len(units(a)) == 8
    summary = json.loads((b / runner.SUMMARY_NAME).read_text())
    assert summary["workers"] == 1 and summary["batch_size"] == 3 and summary["processes"] == 1
    assert summary["counts"] == {"inputs": 8, "segmented": 8, "already_done": 0, "skipped": 0}
    assert summary["images_per_second"] > 0 and summary["model"] == "toy" and summary["device"] == "cpu"


@pytest.mark.parametrize("workers", [0, 1])
def test_skip_bad_reports_a_truncated_file_and_finishes_the_rest(toy_folder, tmp_path, workers):
    (toy_folder / "img3b.png").write_bytes((toy_folder / "img3.png").read_bytes()[:300])
    out = tmp_path / "out"
    res = run("segment", toy_folder, *TOY, "--out", out, "--skip-bad", "--workers", workers)
    assert res.exit_code == 0, res.output
    assert "skipped 1 unreadable image(s)" in res.output
    summary = json.loads((out / runner.SUMMARY_NAME).read_text())
    assert summary["counts"] == {"inputs": 9, "segmented": 8, "already_done": 0, "skipped": 1}
    [skip] = summary["skipped"]
    assert skip["path"] == str(toy_folder / "img3b.png") and "truncated" in skip["reason"]
    assert sorted(units(out)) == [f"img{i}" for i in range(8)]
    assert not list(out.glob("img3b.*"))
    # without the flag: one line naming the file, and nothing written at all (as before)
    res = run("segment", toy_folder, *TOY, "--out", tmp_path / "strict", "--workers", workers)
    assert res.exit_code == 1 and "img3b.png" in res.output and "truncated" in res.output
    assert not (tmp_path / "strict").exists()


def test_an_input_named_like_the_summary_is_refused(toy_folder, tmp_path):
    (toy_folder / "img0.png").rename(toy_folder / "pnpovss_run.png")
    res = run("segment", toy_folder, *TOY, "--out", tmp_path / "out")
    assert res.exit_code == 1 and "pnpovss_run.png" in res.output and "overwrite the run summary" in res.output
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ torchrun, 2 processes
def torchrun(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "pnpovss", "segment", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, **kwargs)


def finish(proc, timeout=240):
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # never leave workers behind


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(toy_folder, tmp_path):
    """`torchrun --nproc_per_node 2 -m pnpovss segment` (gloo, CPU, with --workers 1) writes
    byte-identical label and overlay PNGs and equal JSON to one plain process. Slow: the torchrun
    launcher and two fresh processes importing torch and transformers (~20 s on 2 shared cores)."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert run("segment", toy_folder, *TOY, "--out", one).exit_code == 0
    proc = torchrun([toy_folder, *TOY, "--out", two, "--workers", 1])
    _, stderr = finish(proc)
    assert proc.returncode == 0, stderr[-3000:]
    assert units(two) == units(one) and len(units(one)) == 8
    summary = json.loads((two / runner.SUMMARY_NAME).read_text())
    assert summary["processes"] == 2 and summary["counts"]["segmented"] == 8
    assert stderr.count("segmented 8 image(s)") == 1 and stderr.count("loading toy") == 1  # rank 0 reports


@pytest.mark.slow
def test_interrupted_torchrun_run_resumes(toy_folder, tmp_path):
    """Two processes killed (SIGKILL, as a crash) once an image is written; the same command
    again segments only the rest, and the directory then equals a single-process run. Slow: two
    torchrun launches (~40 s on 2 shared cores)."""
    from pnpovss.toyworld.world import make_sample

    for i in range(8, 40):  # more images: a window of seconds to interrupt in, even on a loaded machine
        Image.fromarray(make_sample(3, i).image).save(toy_folder / f"img{i}.png")
    out = tmp_path / "out"
    proc = torchrun([toy_folder, *TOY, "--out", out])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(list(out.glob("img*.json"))) < 1:
        time.sleep(0.02)
    ended = proc.poll()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    _, stderr = proc.communicate()
    done = len(units(out))
    errors = [line for line in stderr.splitlines() if "Error" in line or "rror:" in line]
    assert ended is None and 1 <= done < 40, f"the kill came at {done} of 40 images (exit {ended}): {errors[:10]}"
    assert not (out / runner.SUMMARY_NAME).exists()
    proc = torchrun([toy_folder, *TOY, "--out", out])
    _, stderr = finish(proc)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads((out / runner.SUMMARY_NAME).read_text())
    assert summary["counts"]["already_done"] >= done and summary["counts"]["segmented"] == 40 - summary["counts"]["already_done"]
    assert f"skipping {summary['counts']['already_done']} image(s)" in stderr
    single = tmp_path / "single"
    assert run("segment", toy_folder, *TOY, "--out", single).exit_code == 0
    assert units(out) == units(single)


@pytest.mark.parametrize("keep_all, rounds", [(True, 0), (False, 0), (False, 1)])
def test_pending_results_pickle_and_finish_as_segment_batch(segmenter, rng, monkeypatch, keep_all, rounds):
    """What the post-processing pool receives: a pickled PendingResult, finished there, equals
    segment_batch's result (presence decision included; with the recurrent check the result comes
    finished, since the check needs the labels)."""
    import pickle

    import pnpovss.presence as presence
    from pnpovss import Segmenter

    monkeypatch.setattr(presence, "recognised", lambda clip, rgb, labels, names, kept, cands: list(kept[1:]) or list(kept))
    seg = Segmenter(segmenter.backbone, segmenter.config, presence_clip=object())
    imgs = [(rng.random((30 + i, 40, 3)) * 255).astype(np.uint8) for i in range(2)]
    names = ["cat", "dog", "sky"]
    kw = dict(keep_all=keep_all, presence_threshold=0.0, presence_rounds=rounds)
    direct = seg.segment_batch(imgs, names, **kw)
    pending = seg.segment_batch_pending(imgs, names, **kw)
    assert all((p.result is not None) == bool(rounds) for p in pending)
    for want, p in zip(direct, pending):
        got = pickle.loads(pickle.dumps(p)).finish()
        assert np.array_equal(got.labels, want.labels) and np.array_equal(got.scores, want.scores)
        assert got.classes == want.classes
        assert (got.presence is None) == keep_all and (keep_all or got.presence.kept == want.presence.kept)


def test_throughput_bench_ratios_pair_rows_by_processes_and_workers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_throughput",
                                                  Path(__file__).resolve().parent.parent / "bench" / "throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ips = {(1, 0): 2.0, (1, 1): 3.0, (2, 0): 3.0, (2, 1): 4.5}
    rows = [dict(model="toy", processes=p, workers=w, images_per_second=v, images=8, threads_per_process=1,
                 seconds=8 / v, wall_seconds=20.0, same_files_as_first=True) for (p, w), v in reversed(ips.items())]
    rows.append(dict(model="blip", processes=1, workers=0, error="out of memory"))
    assert bench.ratios(rows) == {"toy": {"overlap_1_process": 1.5, "overlap_2_process": 1.5,
                                          "two_processes_workers_0": 1.5, "two_processes_workers_1": 1.5}, "blip": {}}
    table = bench.markdown({"rows": rows})
    assert "| toy | 8 | 2 | 1 | 1 | 4.500 |" in table and "| blip | - | 1 | 0 | - | failed |" in table


@pytest.mark.slow
def test_torchrun_coco_file_is_complete(toy_folder, tmp_path):
    """--coco under torchrun: rank 0 writes the one file after every rank's images are written, and
    it equals a single process's file (all eight images). Slow: a torchrun launch (~20 s)."""
    pytest.importorskip("pycocotools")
    one, two = tmp_path / "one", tmp_path / "two"
    assert run("segment", toy_folder, *TOY, "--out", one, "--coco", one / "ann.json").exit_code == 0
    proc = torchrun([toy_folder, *TOY, "--out", two, "--coco", two / "ann.json"])
    _, stderr = finish(proc)
    assert proc.returncode == 0, stderr[-3000:]
    assert (two / "ann.json").read_text() == (one / "ann.json").read_text()
    assert len(json.loads((one / "ann.json").read_text())["images"]) == 8


@pytest.mark.parametrize("workers", [0, 1])
def test_skip_bad_with_nothing_segmented_exits_1(tmp_path, workers):
    """--skip-bad over a folder where every image is bad: the summary lists them, and the run
    fails (exit 1, one line) instead of reporting "segmented 0" as a success."""
    d = tmp_path / "bad"
    d.mkdir()
    for i in range(2):
        (d / f"b{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 40)
    out = tmp_path / "out"
    res = run("segment", d, *TOY, "--out", out, "--skip-bad", "--workers", workers)
    assert res.exit_code == 1, res.output
    assert res.output.strip().splitlines()[-1].startswith("Error: no image could be segmented: all 2 were unreadable")
    assert json.loads((out / runner.SUMMARY_NAME).read_text())["counts"]["skipped"] == 2


def test_more_workers_than_cores_warns_once(toy_folder, tmp_path, monkeypatch):
    """torch warns when a DataLoader has more workers than cores, once when built and again when
    iterated; the run shows it once."""
    import warnings

    import torch

    monkeypatch.setattr(torch._utils, "cpu_count", lambda: 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run("segment", toy_folder, *TOY, "--out", tmp_path / "out", "--workers", 2)
    assert res.exit_code == 0, res.output
    assert sum("This DataLoader will create 2 worker processes" in str(w.message) for w in caught) == 1


def test_an_error_every_process_raises_is_printed_by_process_0_only(tmp_path, monkeypatch):
    """Under torchrun (RANK set) a gathered check's error is printed once: by rank 0; the other
    ranks exit 1 silently. An error of one process alone is printed by it."""
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(2):
        (d / f"bad{i}.png").write_bytes(b"not a png")
    for rank, printed in (("0", True), ("1", False)):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setattr(runner, "check_same_inputs", lambda paths, ctx: None)
        from pnpovss import distributed
        monkeypatch.setattr(distributed, "from_env", lambda device: DistContext(int(rank), 2, int(rank)))
        monkeypatch.setattr(DistContext, "gather", lambda self, obj: [obj, obj])
        res = run("segment", d, *TOY, "--out", tmp_path / "out")
        assert res.exit_code == 1 and ("bad" in res.output) == printed, res.output


@pytest.mark.slow
def test_ctrl_c_with_workers_exits_within_3_s(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during a --workers 2
    run: exit 130 within 3 s, one line, no worker traceback; no worker process is left. Slow: a
    fresh process loads the toy model and segments 256 px images until two are written (~10 s)."""
    from pnpovss.toyworld.world import make_sample

    d = tmp_path / "in"
    d.mkdir()
    for i in range(40):
        Image.fromarray(make_sample(3, i, 256).image).save(d / f"img{i}.png")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pnpovss", "segment", str(d), *TOY, "--out", str(out),
                             "--workers", "2"], stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and len(list(out.glob("img*.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        waited = time.monotonic() - sent
        stderr = proc.stderr.read()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # never leave workers behind
    assert proc.returncode == 130 and waited <= 3.0, (proc.returncode, waited, stderr[-2000:])
    assert "Traceback" not in stderr and stderr.rstrip().endswith("interrupted: rerun the same command to continue "
                                                                  "where it stopped")
    deadline = time.monotonic() + 10  # the workers end too (DataLoader's check their parent every 5 s)
    with pytest.raises(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)  # raises once no process of the run's group is left
            time.sleep(0.2)


def test_outputs_written_before_a_new_setting_at_its_default_are_not_redone(toy_folder, tmp_path):
    """A field added to the library later, left at its default, cannot have changed an output: a
    rerun keeps outputs whose recorded configuration lacks it. A missing field with a value other
    than its default is another configuration: that image is segmented again."""
    from pnpovss import PipelineConfig

    out = tmp_path / "out"
    assert run("segment", toy_folder, *TOY, "--out", out).exit_code == 0
    defaults = PipelineConfig().to_dict()
    files = sorted(p for p in out.glob("*.json") if p.name != runner.SUMMARY_NAME)
    at_default = next(k for k, v in json.loads(files[0].read_text())["config"].items() if v == defaults[k])
    for p in files:  # as if written before the field existed
        meta = json.loads(p.read_text())
        del meta["config"][at_default]
        p.write_text(json.dumps(meta))
    assert run("segment", toy_folder, *TOY, "--out", out).exit_code == 0
    assert json.loads((out / runner.SUMMARY_NAME).read_text())["counts"]["already_done"] == 8
    meta = json.loads(files[0].read_text())
    differs = next(k for k, v in meta["config"].items() if k in defaults and v != defaults[k])
    del meta["config"][differs]  # the toy preset's own value: not the default, so not the same run
    files[0].write_text(json.dumps(meta))
    assert run("segment", toy_folder, *TOY, "--out", out).exit_code == 0
    assert json.loads((out / runner.SUMMARY_NAME).read_text())["counts"]["already_done"] == 7


def test_each_image_is_decoded_once(toy_folder, tmp_path, monkeypatch):
    """The check before the model loads decodes every image; the run uses those decodes (up to
    KEEP_DECODED_BYTES of pixels) instead of decoding again. Past the budget an image is decoded
    a second time, when its batch comes."""
    from pnpovss import workers

    counts: dict[str, int] = {}

    def counting(path, *args, **kwargs):
        counts[Path(path).name] = counts.get(Path(path).name, 0) + 1
        return real(path, *args, **kwargs)

    real = runner.load_image
    monkeypatch.setattr(runner, "load_image", counting)
    monkeypatch.setattr(workers, "load_image", counting)
    res = run("segment", toy_folder, "--model", "toy", "--classes", "circle,star", "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    assert len(counts) == 8 and set(counts.values()) == {1}, counts
    counts.clear()
    monkeypatch.setattr(runner, "KEEP_DECODED_BYTES", 0)  # only the first image is kept
    res = run("segment", toy_folder, "--model", "toy", "--classes", "circle,star", "--out", tmp_path / "b")
    assert res.exit_code == 0, res.output
    assert sorted(counts.values()) == [1] + [2] * 7, counts
    assert units(tmp_path / "a") == units(tmp_path / "b")  # the same outputs either way
