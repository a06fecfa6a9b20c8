"""Dataset evaluation: label mapping back to dataset ids, background handling, the eval command."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pnpovss.cli import main
from pnpovss.config import PipelineConfig
from pnpovss.execution import ExecutionOptions
from pnpovss.datasets.base import IGNORE_INDEX, SegDataset, SegSample
from pnpovss.evaluate import evaluate, predict


class Tiny(SegDataset):
    """Two 2x3 images over classes [a, b, c] (+ background when asked)."""

    def __init__(self, background: bool):
        self.has_background = background
        self.name = "tiny"
        self.synonyms = ([["background"]] if background else []) + [["a"], ["b"], ["c"]]
        off = 1 if background else 0
        self.labels = [np.array([[off + 0, off + 2, IGNORE_INDEX], [off + 2, off + 2, off + 0]]),
                       np.full((2, 3), IGNORE_INDEX if not background else 0)]

    def __len__(self):
        return len(self.labels)

    def load(self, index):
        return SegSample(str(index), np.zeros((2, 3, 3), np.uint8), self.labels[index])


class Oracle:
    """A stand-in Segmenter that returns image 0's truth in the pipeline's label convention
    (index into [background] + caption) and records the captions it was asked for."""

    def __init__(self, dataset):
        self.ds, self.calls = dataset, []
        self.config = PipelineConfig()
        self.backbone = SimpleNamespace(source="oracle", device=torch.device("cpu"), execution=ExecutionOptions())

    def segment_batch(self, images, classes, keep_all, background):
        return [self.segment(image, names, keep_all, background) for image, names in zip(images, classes)]

    def segment(self, image, names, keep_all, background):
        self.calls.append((list(names), background))
        truth = self.ds[0].label
        order = ([self.ds.classes[0]] if background else []) + list(names)
        labels = np.zeros(truth.shape, np.int64)
        for k, name in enumerate(order):
            labels[truth == self.ds.classes.index(name)] = k
        return SimpleNamespace(labels=labels, classes=order, config=self.config.replace(background=background))


@pytest.mark.parametrize("background", [True, False])
def test_pipeline_labels_map_back_to_dataset_ids(background):
    ds = Tiny(background)
    seg = Oracle(ds)
    pred, used = predict(seg, ds, ds[0])
    assert used == [ds.classes.index("a"), ds.classes.index("c")]
    keep = ds[0].label != IGNORE_INDEX
    assert np.array_equal(pred[keep], ds[0].label[keep])
    assert seg.calls == [(["a", "c"], background)]  # the image-level labels, in dataset order
    predict(seg, ds, ds[0], all_classes=True)
    assert seg.calls[-1] == (["a", "b", "c"], background)


def test_image_without_labels_is_all_background():
    ds = Tiny(True)
    seg = Oracle(ds)
    assert not predict(seg, ds, ds[1])[0].any() and not seg.calls
    res = evaluate(seg, ds, [0, 1], progress=False)
    assert res.summary["per_class"]["background"] == 100.0 and res.summary["per_class"]["b"] is None
    assert res.summary["miou"] == 100.0 and res.images == 2 and res.matrix.sum() == 5 + 6


def test_reference_background_mode_adds_the_channel_below_three_classes(segmenter):
    cfg = PipelineConfig(background=False, background_mode="reference")
    assert cfg.for_caption(1).background and cfg.for_caption(2).background and not cfg.for_caption(3).background
    assert not PipelineConfig(background=False).for_caption(1).background  # "dataset": exactly `background`
    assert PipelineConfig(background=False, background_mode="always").for_caption(5).background
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    two = segmenter.segment(image, ["cat", "dog"], keep_all=True, background=False, background_mode="reference")
    three = segmenter.segment(image, ["cat", "dog", "sky"], keep_all=True, background=False, background_mode="reference")
    assert two.classes == ["background", "cat", "dog"] and two.scores.shape[0] == 3
    assert three.classes == ["cat", "dog", "sky"]
    with pytest.raises(Exception, match="background_mode=.sometimes.: expected one of .dataset., .reference., .always."):
        PipelineConfig(background_mode="sometimes")


def test_background_prediction_without_a_background_class_is_a_miss_not_a_class():
    """Context/ADE-style dataset: a pixel predicted as background counts against its true class
    (a false negative) and as no class's false positive; background is not in the mean."""
    ds = Tiny(False)

    class BackgroundOnA(Oracle):
        def __init__(self, dataset):
            super().__init__(dataset)
            self.config = PipelineConfig(background_mode="reference")

        def segment(self, image, names, keep_all, background):
            res = super().segment(image, names, keep_all, background=True)  # 2 classes: the channel is added
            res.labels[self.ds[0].label == self.ds.classes.index("a")] = 0
            return res

    seg = BackgroundOnA(ds)
    pred, _ = predict(seg, ds, ds[0])
    assert set(np.unique(pred)) == {ds.num_classes, 2}  # background -> the unscored label 3, c -> 2
    res = evaluate(seg, ds, [0], progress=False)
    assert res.matrix.shape == (3, 4)
    assert res.summary["per_class"] == {"a": 0.0, "b": None, "c": 100.0} and res.summary["miou"] == 50.0


def test_eval_command_on_the_toy_world(tiny_blip_dir, tmp_path):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"config": {"layer": 2, "head": 1, "drop_iters": 2}}))
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(main, ["eval", "--dataset", "toyworld", "--seed", "2", "--images", "3", "--model",
                                    str(tiny_blip_dir), "--preset", str(preset), "--json", str(out), "--threads", "1",
                                    "--background-mode", "reference"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["config"]["background_mode"] == "reference"  # the toy world has a background class: as "dataset"
    assert set(data["per_class"]) == {"background", "circle", "square", "triangle", "star", "cross", "heart"}
    assert 0 <= data["miou"] <= 100 and data["images"] == 3 and data["seed"] == 2
    assert data["config"]["layer"] == 2 and data["config"]["drop_iters"] == 2 and data["config"]["background"]
    assert np.asarray(data["confusion_matrix"]).sum() == 3 * 96 * 96
    assert "mIoU" in res.output


def test_interrupted_evaluation_resumes_where_it_stopped():
    """Ctrl-C keeps the images already scored; the rerun scores only the rest and gives the
    uninterrupted result. Another index list is another run and starts afresh."""
    ds = Tiny(True)
    ds.labels.append(ds.labels[0].copy())  # image 2 is like image 0; image 1 has no labels
    reference = evaluate(Oracle(ds), ds, [0, 1, 2], progress=False)

    class Interrupted(Oracle):
        def segment(self, image, names, keep_all, background):
            if len(self.calls) == 1:  # image 0 went through; Ctrl-C during image 2
                raise KeyboardInterrupt
            return super().segment(image, names, keep_all, background)

    with pytest.raises(KeyboardInterrupt):
        evaluate(Interrupted(ds), ds, [0, 1, 2], progress=False, resume=True)
    again = Oracle(ds)
    result = evaluate(again, ds, [0, 1, 2], progress=False, resume=True)
    assert len(again.calls) == 1  # only image 2 ran
    assert np.array_equal(result.matrix, reference.matrix) and result.summary == reference.summary
    assert result.progress_file is not None and result.progress_file.is_file()
    other = Oracle(ds)
    evaluate(other, ds, [0, 2], progress=False, resume=True)
    assert len(other.calls) == 2


def test_eval_command_removes_its_progress_after_writing(tiny_blip_dir, tmp_path, monkeypatch):
    import os
    from pathlib import Path

    out = tmp_path / "eval.json"
    args = ["eval", "--dataset", "toyworld", "--seed", "2", "--images", "2", "--model", str(tiny_blip_dir),
            "--set", "layer=2", "--set", "head=1", "--json", str(out), "--threads", "1"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0 and out.is_file(), res.output
    cache = Path(os.environ["PNPOVSS_CACHE"])
    assert not list(cache.rglob("*.json"))  # nothing left to resume
