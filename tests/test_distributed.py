"""Two CPU processes on gloo give exactly the single-process confusion matrix and tune trace."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from pnpovss.distributed import DistContext, from_env


def test_shards_are_strided_and_cover_everything():
    items = list(range(7))
    shards = [DistContext(r, 3).shard(items) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert DistContext().shard(items) == items and DistContext().is_main and not DistContext().enabled


def test_single_process_without_torchrun_env(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = from_env()
    assert ctx == DistContext() and np.array_equal(ctx.all_reduce_sum(np.arange(3)), np.arange(3))


DRIVER = """
import sys
import pnpovss.distributed as d
from pnpovss.cli import main
split = sys.argv.index("--then")
shutdown, d.shutdown = d.shutdown, lambda ctx: None  # keep one process group for both commands
main(sys.argv[1:split], prog_name="pnpovss", standalone_mode=False)
d.shutdown = shutdown
main(sys.argv[split + 1:], prog_name="pnpovss", standalone_mode=False)
"""


def trace(path):
    return [{k: r[k] for k in ("trial", "params", "reward", "rewards")}
            for r in map(json.loads, path.read_text().splitlines())]


@pytest.mark.slow
def test_torchrun_eval_and_tune_equal_single_process(tiny_blip_dir, tiny_clip_dir, tmp_path):
    """`pnpovss eval` and `pnpovss tune` under `torchrun --nproc_per_node 2` (gloo, CPU) give the
    single-process confusion matrix and tune trace exactly. Needs the torchrun launcher and two
    fresh processes importing torch/transformers/open_clip (~15 s on this machine), hence slow;
    one launch serves both commands to keep it at that."""
    from pnpovss.cli import main

    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"config": {"layer": 2, "head": 1, "drop_iters": 2}}))
    common = ["--dataset", "toyworld", "--images", "5", "--model", str(tiny_blip_dir), "--preset", str(preset),
              "--threads", "1"]
    ev = ["eval", *common, "--seed", "4"]
    tune = ["tune", *common, "--clip", str(tiny_clip_dir), "--iters", "6", "--seed", "2"]
    for argv in ([*ev, "--json", str(tmp_path / "one.json")], [*tune, "--out", str(tmp_path / "one")]):
        res = CliRunner().invoke(main, argv, catch_exceptions=False)
        assert res.exit_code == 0, res.output
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(driver), *ev, "--json", str(tmp_path / "two.json"), "--then", *tune, "--out",
                             str(tmp_path / "two")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # never leave workers behind
    assert proc.returncode == 0, stderr[-3000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert a["processes"] == 1 and b["processes"] == 2
    for key in ("miou", "per_class", "pixel_accuracy", "confusion_matrix", "images"):
        assert a[key] == b[key]
    assert trace(tmp_path / "two" / "trace.jsonl") == trace(tmp_path / "one" / "trace.jsonl")
    assert stdout.count("mIoU") == 1 and stdout.count("best trial") == 1  # only rank 0 reports
