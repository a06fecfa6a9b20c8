"""Results as supervision Detections and COCO annotations, checked with the real clients:
pycocotools reads the file back into our label maps pixel for pixel, supervision loads it as a
dataset and draws ``to_detections()``."""

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pnpovss.cli import main
from pnpovss.errors import PnpOvssError
from tools.testing import make_toy_folder

pytest.importorskip("pycocotools")
sv = pytest.importorskip("supervision")

from pycocotools.coco import COCO  # noqa: E402

CANDIDATES = ["circle", "square", "star", "triangle"]


@pytest.fixture
def toy_folder(tmp_path):
    """Five toy-world images (96 px)."""
    return make_toy_folder(tmp_path / "toy", 5, seed=5)


@pytest.fixture(scope="module")
def toy_segmenter():
    from pnpovss import Segmenter

    return Segmenter.from_pretrained("toy", device="cpu")


def segment(*args):
    return CliRunner().invoke(main, ["segment", *map(str, args), "--model", "toy", "--device", "cpu"],
                              catch_exceptions=False)


def candidate_map(out, stem, candidates):
    """Our label map NAME.labels.png in category ids (candidate index + 1; 0 = background)."""
    meta = json.loads((out / f"{stem}.json").read_text())
    labels = np.asarray(Image.open(out / f"{stem}.labels.png")).astype(np.int64)
    lut = np.array([0 if meta["config"]["background"] and k == 0 else candidates.index(c) + 1
                    for k, c in enumerate(meta["classes"])])
    return lut[labels]


def coco_map(coco, image_id):
    """The label map pycocotools' annToMask rebuilds from the file (category ids; 0 where no mask)."""
    info = coco.imgs[image_id]
    out = np.zeros((info["height"], info["width"]), dtype=np.int64)
    covered = np.zeros_like(out)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        m = coco.annToMask(ann).astype(bool)
        out[m] = ann["category_id"]
        covered += m
        assert ann["area"] == m.sum() and ann["iscrowd"] == 0
        ys, xs = np.nonzero(m)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert covered.max() <= 1  # one class per pixel
    return out


def test_the_issue_command_writes_a_file_pycocotools_reads_into_our_label_maps(tmp_path):
    out = tmp_path / "out"
    res = segment("examples/", "--classes", "circle,star,square", "--coco", out / "ann.json", "--out", out)
    assert res.exit_code == 0, res.output
    coco = COCO(str(out / "ann.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["circle", "star", "square"]
    [image] = coco.loadImgs(coco.getImgIds())
    assert image["file_name"] == "shapes.png" and (image["height"], image["width"]) == Image.open("examples/shapes.png").size[::-1]
    ours = candidate_map(out, "shapes", ["circle", "star", "square"])
    assert len(np.unique(ours)) >= 3  # background and at least two shapes: a real comparison
    assert np.array_equal(coco_map(coco, image["id"]), ours)
    presence = json.loads((out / "shapes.json").read_text())["presence"]
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert ann["score"] == presence[coco.cats[ann["category_id"]]["name"]]["score"]


def test_coco_file_of_a_folder_loads_in_pycocotools_and_supervision(toy_folder, tmp_path):
    out, ann = tmp_path / "out", tmp_path / "ann.json"
    res = segment(toy_folder, "--classes", ",".join(CANDIDATES), "--coco", ann, "--out", out, "--keep-all")
    assert res.exit_code == 0, res.output
    coco = COCO(str(ann))
    assert sorted(im["file_name"] for im in coco.dataset["images"]) == [f"img{i}.png" for i in range(5)]
    for im in coco.dataset["images"]:
        assert np.array_equal(coco_map(coco, im["id"]), candidate_map(out, im["file_name"][:-4], CANDIDATES))
    assert all("score" not in a for a in coco.dataset["annotations"])  # --keep-all: no presence decision
    ds = sv.DetectionDataset.from_coco(images_directory_path=str(toy_folder), annotations_path=str(ann))
    assert ds.classes == CANDIDATES and len(ds) == 5
    for path, _, det in ds:
        ours = candidate_map(out, path.rsplit("/", 1)[-1][:-4], CANDIDATES)
        rebuilt = np.zeros_like(ours)
        for m, cid in zip(det.mask, det.class_id):
            rebuilt[m] = cid + 1  # supervision's class ids index its classes list
        assert np.array_equal(rebuilt, ours)


def test_a_resumed_run_and_worker_processes_write_the_same_complete_file(toy_folder, tmp_path):
    """Interrupted after two images (here: a first run over two of the five), the same command
    over all five skips those and still writes all five images, equal to one uninterrupted run;
    --workers 1 gives the same file too."""
    args = ("--classes", ",".join(CANDIDATES))
    fresh, resumed, workers = tmp_path / "fresh", tmp_path / "resumed", tmp_path / "workers"
    assert segment(toy_folder, *args, "--out", fresh, "--coco", fresh / "ann.json").exit_code == 0
    first = segment(toy_folder / "img0.png", toy_folder / "img3.png", *args, "--out", resumed,
                    "--coco", resumed / "ann.json")
    assert first.exit_code == 0 and len(json.loads((resumed / "ann.json").read_text())["images"]) == 2
    again = segment(toy_folder, *args, "--out", resumed, "--coco", resumed / "ann.json")
    assert again.exit_code == 0 and "skipping 2 image(s) already segmented" in again.output
    assert (resumed / "ann.json").read_text() == (fresh / "ann.json").read_text()
    assert segment(toy_folder, *args, "--out", workers, "--workers", 1, "--batch-size", 2,
                   "--coco", workers / "ann.json").exit_code == 0
    assert (workers / "ann.json").read_text() == (fresh / "ann.json").read_text()
    assert len(json.loads((fresh / "ann.json").read_text())["images"]) == 5


def test_to_detections_draws_with_supervision_and_covers_the_foreground(toy_segmenter):
    from pnpovss.toyworld.world import make_sample

    image = make_sample(5, 1).image
    res = toy_segmenter.segment(image, CANDIDATES)
    det = res.to_detections(vocabulary=CANDIDATES)
    assert len(det) == len(np.unique(res.labels[res.labels > 0])) >= 1
    assert np.array_equal(det.mask.any(axis=0), res.labels != 0)  # the union is the non-background pixels
    assert det.mask.sum(axis=0).max() == 1  # disjoint
    assert [CANDIDATES[i] for i in det.class_id] == list(det.data["class_name"])
    for m, name, box, conf in zip(det.mask, det.data["class_name"], det.xyxy, det.confidence):
        assert np.array_equal(m, res.labels == res.classes.index(name))
        ys, xs = np.nonzero(m)
        assert list(box) == [xs.min(), ys.min(), xs.max(), ys.max()]
        assert conf == pytest.approx(res.presence.scores[res.presence.candidates.index(name)])
    drawn = sv.MaskAnnotator().annotate(scene=image.copy(), detections=det)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    own = res.to_detections()  # class ids index the result's own labels
    assert [res.classes[i] for i in own.class_id] == list(own.data["class_name"])
    kept = toy_segmenter.segment(image, CANDIDATES, keep_all=True).to_detections()
    assert kept.confidence is None  # no presence stage, no score
    with pytest.raises(PnpOvssError, match="not in the given vocabulary"):
        res.to_detections(vocabulary=["zebra"])


def test_to_coco_of_one_result_matches_its_labels(toy_segmenter):
    from pnpovss.toyworld.world import make_sample

    res = toy_segmenter.segment(make_sample(5, 2).image, CANDIDATES)
    data = res.to_coco("a.png")
    assert [c["name"] for c in data["categories"]] == CANDIDATES  # the presence stage's candidates
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    lut = np.array([0] + [CANDIDATES.index(c) + 1 for c in res.classes[1:]])
    assert np.array_equal(coco_map(coco, 1), lut[res.labels])


def test_without_the_extra_one_line_names_it(toy_folder, tmp_path, monkeypatch, toy_segmenter):
    from pnpovss.toyworld.world import make_sample

    res = toy_segmenter.segment(make_sample(5, 2).image, CANDIDATES)
    monkeypatch.setitem(sys.modules, "supervision", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    with pytest.raises(PnpOvssError, match=r"optional 'interop' extra: pip install 'pnpovss\[interop\]'"):
        res.to_detections()
    out = tmp_path / "out"
    r = segment(toy_folder, "--classes", "circle", "--coco", out / "ann.json", "--out", out)
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "pnpovss[interop]" in r.output
    assert not out.exists()  # refused before anything was written


def test_coco_target_checks(toy_folder, tmp_path):
    out = tmp_path / "out"
    r = segment(toy_folder, "--classes", "circle", "--coco", out / "img2.json", "--out", out)
    assert r.exit_code == 1 and "one of the run's own files" in r.output and not out.exists()
    (tmp_path / "d").mkdir()
    r = segment(toy_folder, "--classes", "circle", "--coco", tmp_path / "d", "--out", out)
    assert r.exit_code != 0 and not out.exists()
