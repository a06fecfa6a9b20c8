"""Execution options (pnpovss.execution): one explicit object per model, recorded with the results,
and forward replacements that belong to the thread that made them."""

import json
import threading

import numpy as np
import pytest
import torch

from pnpovss import Segmenter, runner
from pnpovss.execution import ExecutionOptions, replaced_forwards, replacement_of


def test_options_are_explicit_and_recorded_in_every_result_file(segmenter, tmp_path, rng):
    from PIL import Image

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(paths[-1])
    out = tmp_path / "out"
    runner.run(segmenter, runner.FolderJob(paths, ["sky", "sand"], out, keep_all=True, batch_size=1), model="tiny",
               progress=False)
    expected = segmenter.backbone.execution.to_json()
    assert expected == {"fused_attention": True, "shared_image_attention": True, "prepack": True,
                        "compile_vision": False}
    assert json.loads((out / "img0.json").read_text())["execution"] == expected
    assert json.loads((out / runner.SUMMARY_NAME).read_text())["execution"] == expected


def test_from_pretrained_takes_the_options(tiny_blip_dir):
    seg = Segmenter.from_pretrained(str(tiny_blip_dir), layer=2, head=1,
                                    execution=ExecutionOptions(fused_attention=False, prepack=False))
    assert not seg.backbone.execution.fused_attention and not seg.backbone.execution.prepack
    assert not seg.backbone.fused_vision_attention


def test_a_replacement_is_seen_by_its_own_thread_only():
    lin = torch.nn.Linear(3, 3)
    x = torch.randn(2, 3)
    own = lin(x)
    entered, checked, other = threading.Event(), threading.Event(), {}

    def elsewhere() -> None:
        entered.wait(10)
        other["out"], other["replacement"] = lin(x), replacement_of(lin)
        checked.set()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    with replaced_forwards([lin], lambda m: (lambda inp: torch.zeros(inp.shape[0], 3))):
        assert torch.equal(lin(x), torch.zeros(2, 3))
        entered.set()
        checked.wait(10)
    thread.join()
    assert torch.equal(other["out"], own) and other["replacement"] is None
    assert torch.equal(lin(x), own) and replacement_of(lin) is None
    with pytest.raises(KeyError):
        with replaced_forwards([lin], lambda m: (lambda inp: torch.ones(1))):
            raise KeyError("inside")
    assert torch.equal(lin(x), own)  # undone after an exception too
