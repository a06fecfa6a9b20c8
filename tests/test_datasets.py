"""Dataset readers on small synthetic directories in each mmsegmentation layout."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pnpovss.cli import main
from pnpovss.datasets import (DATASET_ALIASES, DATASETS, IGNORE_INDEX, VOCABULARY_FILES, canonical_dataset,
                              dataset_names, load_dataset, load_vocabulary, read_classnames)
from pnpovss.datasets.base import CLASSNAMES_DIR
from pnpovss.errors import PnpOvssError
from pnpovss.pipeline import parse_classes
from tools.testing import H, W, make_cityscapes, make_coco, make_voc_like, raw_map, write_pair

@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    make_voc_like(root, "SegmentationClass", "ImageSets/Segmentation/val.txt", [[0, 15, 255], [3, 3, 20]])
    return root


def test_voc21_keeps_background_and_ignore(voc_root):
    ds = load_dataset("voc", voc_root)
    assert ds.name == "voc21" and ds.has_background and ds.num_classes == 21 and len(ds) == 2
    s = ds[0]
    assert s.image.shape == (H, W, 3) and s.label.dtype == np.int64
    assert set(np.unique(s.label)) == {0, 15, IGNORE_INDEX}
    assert ds.image_labels(s.label) == [15]  # background and ignore are not image-level labels
    assert ds.classes[15] == "person" and ds.classes[0] == "background"


def test_voc20_ignores_background(voc_root):
    ds = load_dataset("voc20", voc_root)
    assert not ds.has_background and ds.num_classes == 20 and ds.classes[0] == "aeroplane"
    assert set(np.unique(ds[0].label)) == {14, IGNORE_INDEX}  # 0 -> ignore, 15 -> 14
    assert ds.image_labels(ds[1].label) == [2, 19]


def test_root_may_be_a_parent_directory(voc_root, tmp_path):
    for given in (tmp_path, tmp_path / "data", tmp_path / "data" / "VOCdevkit"):
        assert load_dataset("voc", given).root == voc_root


@pytest.mark.parametrize("name, background, expected", [("context", False, {IGNORE_INDEX, 4, 58}),
                                                        ("context60", True, {0, 5, 59})])
def test_pascal_context(tmp_path, name, background, expected):
    root = tmp_path / "VOC2010"
    make_voc_like(root, "SegmentationClassContext", "ImageSets/SegmentationContext/val.txt", [[0, 5, 59]], mode="L")
    ds = load_dataset(name, root)
    assert ds.has_background is background and ds.num_classes == (60 if background else 59)
    assert set(np.unique(ds[0].label)) == expected


def test_coco_stuff_and_coco_object(tmp_path):
    root = tmp_path / "coco_stuff164k"
    make_coco(root)
    stuff = load_dataset("coco-stuff", root)
    assert stuff.num_classes == 171 and not stuff.has_background and len(stuff) == 2
    assert stuff.ids == ["000000000000", "000000000001"]
    assert set(np.unique(stuff[0].label)) == {0, 79, 80, IGNORE_INDEX}
    obj = load_dataset("coco-object", root)
    assert obj.num_classes == 81 and obj.has_background
    assert set(np.unique(obj[0].label)) == {1, 80, 0, IGNORE_INDEX}  # things +1, stuff -> background
    assert set(np.unique(obj[1].label)) == {0, 13}
    assert obj.classes[1] == "person" and obj.classes[80] == "toothbrush"


def test_ade20k_reduces_zero_label(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    write_pair(root / "images" / "validation", root / "annotations" / "validation", "ADE_val_1", raw_map([0, 1, 150]))
    ds = load_dataset("ade20k", root)
    assert ds.num_classes == 150 and set(np.unique(ds[0].label)) == {IGNORE_INDEX, 0, 149}
    assert ds.classes[0] == "wall" and ds.classes[149] == "flag"


@pytest.mark.parametrize("name, message", [
    ("voc", "JPEGImages"), ("context", "SegmentationClassContext"), ("coco-stuff", "_labelTrainIds.png"),
    ("coco-object", "annotations/val2017"), ("ade20k", "images/validation"),
    ("cityscapes", r"gtFine/val/\*/\*_gtFine_labelTrainIds.png"),
])
def test_missing_root_names_the_layout(tmp_path, name, message):
    with pytest.raises(PnpOvssError, match=message) as err:
        load_dataset(name, tmp_path / "nowhere")
    assert "--root" in str(err.value) and "\n" not in str(err.value)


def test_malformed_roots(voc_root):
    (voc_root / "SegmentationClass" / "im1.png").unlink()
    with pytest.raises(PnpOvssError, match="1 of 2 listed images lack"):
        load_dataset("voc", voc_root)
    (voc_root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(PnpOvssError, match="split file"):
        load_dataset("voc", voc_root)


def test_bad_annotations(voc_root):
    Image.new("RGB", (W, H)).save(voc_root / "SegmentationClass" / "im0.png")
    Image.new("L", (W + 1, H)).save(voc_root / "SegmentationClass" / "im1.png")
    ds = load_dataset("voc", voc_root)
    with pytest.raises(PnpOvssError, match="single-channel index PNG"):
        ds[0]
    with pytest.raises(PnpOvssError, match="annotation is 17x12 but its image is 16x12"):
        ds[1]


@pytest.mark.parametrize("file, count", [("voc.txt", 21), ("context.txt", 60), ("coco_object.txt", 81),
                                         ("coco_stuff.txt", 171), ("ade20k.txt", 150), ("cityscapes.txt", 19)])
def test_classname_files(file, count):
    classes = read_classnames(CLASSNAMES_DIR / file)
    assert len(classes) == count
    first = [c[0] for c in classes]
    names = first[1:] if first[0] == "background" else first
    assert parse_classes(names) == names  # unique, non-empty, no 'background': usable as one caption


def test_synonyms_are_parsed(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("cat\ntv monitor,  television ,tv\n\n")
    assert read_classnames(f) == [["cat"], ["tv monitor", "television", "tv"]]
    f.write_text("cat,,dog\n")
    with pytest.raises(PnpOvssError, match="c.txt:1"):
        read_classnames(f)


def test_toyworld_adapter():
    from pnpovss.toyworld.world import SHAPES, make_sample

    ds = load_dataset("toyworld", seed=3, images=4)
    assert len(ds) == 4 and ds.classes == ["background", *SHAPES] and ds.has_background
    s, ref = ds[2], make_sample(3, 2)
    assert np.array_equal(s.image, ref.image) and np.array_equal(s.label, ref.mask)
    assert [ds.classes[c] for c in ds.image_labels(s.label)] == ref.labels
    with pytest.raises(PnpOvssError, match="reserved for training"):
        load_dataset("toyworld", seed=10**7)


def test_registry_and_cli_error(tmp_path):
    assert {"voc", "voc20", "context", "context60", "coco-object", "coco-stuff", "ade20k", "toyworld"} <= set(dataset_names())
    assert set(DATASET_ALIASES.values()) <= set(DATASETS)  # aliases name registry entries, not other aliases
    assert canonical_dataset("VOC") == "voc21" and canonical_dataset("context") == "context59"
    assert load_vocabulary("voc") == load_vocabulary("voc21") and load_vocabulary("context") == load_vocabulary("context59")
    with pytest.raises(PnpOvssError, match="unknown dataset"):
        load_dataset("nosuch")
    res = CliRunner().invoke(main, ["eval", "--dataset", "ade20k", "--root", str(tmp_path)])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "ADEChallengeData2016" in res.output


def test_background_follows_the_dataset():
    """One rule for eval, tune and their CLI: the background channel is on exactly when the dataset's
    class 0 is background; asking for the other is a one-line error before any model loads."""
    ds = load_dataset("toyworld", images=2)
    assert ds.pipeline_settings({"layer": 2}) == {"layer": 2, "background": True}
    with pytest.raises(PnpOvssError, match="dataset toyworld has background class"):
        ds.pipeline_settings({"background": False})
    res = CliRunner().invoke(main, ["eval", "--dataset", "toyworld", "--images", "1", "--set", "background=false"])
    assert res.exit_code == 1 and "--set background: dataset toyworld has background class" in res.output


def test_cityscapes_reads_city_folders_and_train_ids(tmp_path):
    root = tmp_path / "data" / "cityscapes"
    make_cityscapes(root)
    ds = load_dataset("cityscapes", tmp_path)  # a parent of data/cityscapes
    assert ds.root == root and ds.num_classes == 19 and not ds.has_background
    assert ds.ids == ["frankfurt/frankfurt_000000_000001", "lindau/lindau_000000_000007"]
    assert set(np.unique(ds[0].label)) == {0, 18, IGNORE_INDEX} and ds.image_labels(ds[1].label) == [5, 13]
    assert ds.classes[0] == "road" and ds.classes[6] == "traffic light" and ds.classes[18] == "bicycle"
    assert load_vocabulary("cityscapes") == ds.classes


@pytest.mark.parametrize("name", ["voc21", "voc20", "context60", "context59", "coco-object", "coco-stuff",
                                  "cityscapes", "ade20k"])
def test_sclip_names_cover_every_class_and_keep_ours_as_default(name):
    from pnpovss.datasets.base import table_file

    ours = [c[0] for c in read_classnames(CLASSNAMES_DIR / VOCABULARY_FILES[name])]
    if name in ("voc20", "context59"):
        ours = ours[1:]
    theirs = read_classnames(table_file("sclip", name))
    assert len(theirs) == len(ours)
    first = [c[0] for c in theirs]
    assert parse_classes(first[1:] if name in ("voc21", "context60", "coco-object") else first)


def test_a_peer_table_is_selected_by_name(voc_root, tmp_path):
    ours = load_dataset("voc21", voc_root)
    sclip = load_dataset("voc21", voc_root, class_names="sclip")
    assert "class_names" not in ours.describe() and sclip.describe()["class_names"] == "sclip"
    assert sclip.classes[0] == "background" and sclip.synonyms[0][1:4] == ["sky", "wall", "tree"]
    assert sclip.synonyms[15][:2] == ["person", "person in shirt"] and ours.synonyms[15] == ["person", "people"]
    assert load_dataset("voc20", voc_root, class_names="sclip").classes[0] == "aeroplane"
    with pytest.raises(PnpOvssError, match="unknown class-name table 'nope'; known: pnpovss, sclip"):
        load_dataset("voc21", voc_root, class_names="nope")
    with pytest.raises(PnpOvssError, match="toy world has only its own"):
        load_dataset("toyworld", class_names="sclip")


def test_context_names_follow_the_mmsegmentation_label_order():
    """mmsegmentation's converter numbers Pascal Context's 59 classes alphabetically (its
    PascalContextDataset59; SCLIP's name file for the same labels): class id k must be named as
    that list's k-th class, whatever synonyms we add."""
    from pnpovss.datasets.base import CLASSNAMES_DIR, read_classnames

    ours = read_classnames(CLASSNAMES_DIR / "context.txt")[1:]
    theirs = [names[0] for names in read_classnames(CLASSNAMES_DIR / "sclip" / "context59.txt")]
    assert len(ours) == len(theirs) == 59
    assert all(name in synonyms for name, synonyms in zip(theirs, ours)), [
        (k, name, synonyms) for k, (name, synonyms) in enumerate(zip(theirs, ours)) if name not in synonyms]
