"""Readers for the standard benchmarks in their usual (mmsegmentation) directory layouts.

Each reader is a small subclass of :class:`FolderDataset` that only states its layout, its
class-name file and how raw annotation values become dataset class ids:

=============  ==========================================  ======================================
reader         layout under ``--root``                     raw annotation -> class id
=============  ==========================================  ======================================
PascalVOC      JPEGImages/, SegmentationClass/,            21: as is; 20: 0 -> 255, k -> k-1
               ImageSets/Segmentation/val.txt
PascalContext  JPEGImages/, SegmentationClassContext/,     60: as is; 59: 0 -> 255, k -> k-1
               ImageSets/SegmentationContext/val.txt
COCOStuff      images/val2017/, annotations/val2017/       as is (0..170, 255)
               *_labelTrainIds.png
COCOObject     same as COCOStuff                           things 0..79 -> 1..80, stuff -> 0
ADE20K         images/validation/, annotations/validation/ 0 -> 255, k -> k-1 (150 classes)
Cityscapes     leftImg8bit/val/CITY/*_leftImg8bit.png,     as is (19 train ids, 255)
               gtFine/val/CITY/*_gtFine_labelTrainIds.png
=============  ==========================================  ======================================

255 is always ignored. ``--root`` may be the dataset directory itself or a parent of it (for
instance ``data`` or ``data/VOCdevkit`` for ``data/VOCdevkit/VOC2012``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import PnpOvssError
from ..fileio import load_image
from .base import CLASSNAMES_DIR, DEFAULT_TABLE, IGNORE_INDEX, SegDataset, SegSample, read_classnames, table_file


def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
    """mmseg's ``reduce_zero_label``: 0 (unlabelled/"other") -> ignore, k -> k-1, 255 stays."""
    out = raw.astype(np.int64) - 1
    out[raw == 0] = IGNORE_INDEX
    out[raw == IGNORE_INDEX] = IGNORE_INDEX
    return out


class FolderDataset(SegDataset):
    """Images and index-PNG annotations in two directories, optionally listed by a split file."""

    title: str = ""
    default_root: str = ""
    """mmsegmentation's ``data_root`` (relative to the working directory)."""
    img_dir: str = ""
    ann_dir: str = ""
    img_suffix: str = ".jpg"
    ann_suffix: str = ".png"
    split_file: str | None = None
    classnames_file: str = ""
    drop_first_class: bool = False
    """Use the class-name file without its first line (the background of the 21/60-class variants)."""
    nested: bool = False
    """Files lie one folder deeper (Cityscapes' city folders); ids are then ``CITY/NAME``."""

    def __init__(self, root: str | Path | None = None, class_names: str | None = None) -> None:
        self.class_names = class_names or DEFAULT_TABLE
        peer = table_file(self.class_names, self.name)
        self.root = self._find_root(Path(root) if root is not None else Path(self.default_root))
        if peer is None:
            names = read_classnames(CLASSNAMES_DIR / self.classnames_file)
            self.synonyms = names[1:] if self.drop_first_class else names
        else:  # a peer's file per variant; its background line may list stuff names: keep ours first
            names = read_classnames(peer)
            if self.has_background and names[0][0].lower() != "background":
                names[0] = ["background", *names[0]]
            self.synonyms = names
        self.ids = self._list_ids()

    # ------------------------------------------------------------------ layout
    def expected_layout(self, root: Path) -> str:
        star = "*/*" if self.nested else "*"
        parts = [f"{root / self.img_dir}/{star}{self.img_suffix}", f"{root / self.ann_dir}/{star}{self.ann_suffix}"]
        if self.split_file:
            parts.append(str(root / self.split_file))
        return ", ".join(parts)

    def _candidates(self, root: Path) -> list[Path]:
        tail = Path(self.default_root).parts
        return [root] + [root.joinpath(*tail[i:]) for i in range(len(tail) - 1, -1, -1)]

    def _find_root(self, root: Path) -> Path:
        for cand in self._candidates(root):
            if (cand / self.img_dir).is_dir() and (cand / self.ann_dir).is_dir():
                return cand
        raise PnpOvssError(
            f"{self.title} not found under {str(root)!r}: expected {self.expected_layout(root)} "
            f"(the mmsegmentation layout {self.default_root}); pass the dataset directory with --root"
        )

    def _list_ids(self) -> list[str]:
        if self.split_file:
            split = self.root / self.split_file
            try:
                ids = [line.strip() for line in split.read_text().splitlines() if line.strip()]
            except OSError:
                raise PnpOvssError(
                    f"{self.title}: split file {split} is missing; expected {self.expected_layout(self.root)}"
                ) from None
        else:
            ann_dir = self.root / self.ann_dir
            found = ann_dir.glob(f"{'*/' if self.nested else ''}*{self.ann_suffix}")
            ids = sorted(p.relative_to(ann_dir).as_posix()[: -len(self.ann_suffix)] for p in found)
        if not ids:
            raise PnpOvssError(f"{self.title} under {str(self.root)!r} lists no images; expected {self.expected_layout(self.root)}")
        missing = [i for i in ids if not self._img_path(i).is_file() or not self._ann_path(i).is_file()]
        if missing:
            raise PnpOvssError(
                f"{self.title}: {len(missing)} of {len(ids)} listed images lack an image or annotation file "
                f"(first: {missing[0]!r}, looked for {self._img_path(missing[0])} and {self._ann_path(missing[0])})"
            )
        return ids

    def _img_path(self, sample_id: str) -> Path:
        return self.root / self.img_dir / f"{sample_id}{self.img_suffix}"

    def _ann_path(self, sample_id: str) -> Path:
        return self.root / self.ann_dir / f"{sample_id}{self.ann_suffix}"

    # ------------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.ids)

    def convert_label(self, raw: np.ndarray) -> np.ndarray:
        """Raw annotation values -> dataset class ids (identity unless a subclass says otherwise)."""
        return raw.astype(np.int64)

    def load(self, index: int) -> SegSample:
        sample_id = self.ids[index]
        image = load_image(self._img_path(sample_id))
        path = self._ann_path(sample_id)
        try:
            with Image.open(path) as ann:
                if ann.mode not in ("P", "L", "I", "I;16"):
                    raise PnpOvssError(
                        f"{path}: annotation is a {ann.mode} image; expected a single-channel index PNG "
                        "(pixel value = class id, 255 = ignore)"
                    )
                raw = np.asarray(ann)
        except (OSError, SyntaxError) as exc:
            raise PnpOvssError(f"{path}: unreadable annotation ({exc.__class__.__name__})") from None
        if raw.shape != image.shape[:2]:
            raise PnpOvssError(f"{path}: annotation is {raw.shape[1]}x{raw.shape[0]} but its image is "
                               f"{image.shape[1]}x{image.shape[0]}")
        return SegSample(sample_id, image, self.convert_label(raw))


class WithOrWithoutBackground(FolderDataset):
    """A layout whose raw class 0 is background, read either with it as class 0 or with it ignored
    (and every other id shifted down by one), the two conventions of the OVSS literature."""

    variants: tuple[str, str] = ("", "")
    """Dataset names (with background, without)."""

    def __init__(self, root: str | Path | None = None, background: bool = True, class_names: str | None = None) -> None:
        self.has_background = background
        self.drop_first_class = not background
        self.name = self.variants[0 if background else 1]
        super().__init__(root, class_names)

    def convert_label(self, raw: np.ndarray) -> np.ndarray:
        return raw.astype(np.int64) if self.has_background else reduce_zero_label(raw)


class PascalVOC(WithOrWithoutBackground):
    """Pascal VOC 2012 val (1449 images): 21 classes with background, or 20 with background ignored."""

    title = "Pascal VOC 2012"
    default_root = "data/VOCdevkit/VOC2012"
    img_dir, ann_dir = "JPEGImages", "SegmentationClass"
    split_file = "ImageSets/Segmentation/val.txt"
    classnames_file = "voc.txt"
    variants = ("voc21", "voc20")


class PascalContext(WithOrWithoutBackground):
    """Pascal Context val (5105 images) as converted by mmsegmentation: 60 classes with background,
    or 59 with background ignored. The converter numbers the 59 classes in alphabetical order
    (mmsegmentation's ``PascalContextDataset59``; SCLIP's ``cls_context59.txt`` and the reference's
    own Context list agree), so ``classnames/context.txt`` lists them in that order."""

    title = "Pascal Context"
    default_root = "data/VOCdevkit/VOC2010"
    img_dir, ann_dir = "JPEGImages", "SegmentationClassContext"
    split_file = "ImageSets/SegmentationContext/val.txt"
    classnames_file = "context.txt"
    variants = ("context60", "context59")


class COCOStuff(FolderDataset):
    """COCO-Stuff 164k val2017 (5000 images), 171 classes (80 things then 91 stuff)."""

    name = "coco-stuff"
    title = "COCO-Stuff 164k"
    default_root = "data/coco_stuff164k"
    img_dir, ann_dir = "images/val2017", "annotations/val2017"
    ann_suffix = "_labelTrainIds.png"
    classnames_file = "coco_stuff.txt"


class COCOObject(COCOStuff):
    """COCO-Object: COCO-Stuff 164k with the 80 thing classes kept (ids 1..80) and every stuff
    class merged into background (0), the protocol of GroupViT/TCL/SCLIP."""

    name = "coco-object"
    title = "COCO-Object (from COCO-Stuff 164k)"
    classnames_file = "coco_object.txt"
    has_background = True
    num_things = 80

    def convert_label(self, raw: np.ndarray) -> np.ndarray:
        raw = raw.astype(np.int64)
        out = np.where(raw < self.num_things, raw + 1, 0)
        out[raw == IGNORE_INDEX] = IGNORE_INDEX
        return out


class ADE20K(FolderDataset):
    """ADE20K (ADEChallengeData2016) validation, 2000 images, 150 classes; 0 ("other") ignored."""

    name = "ade20k"
    title = "ADE20K"
    default_root = "data/ade/ADEChallengeData2016"
    img_dir, ann_dir = "images/validation", "annotations/validation"
    classnames_file = "ade20k.txt"

    def convert_label(self, raw: np.ndarray) -> np.ndarray:
        return reduce_zero_label(raw)


class Cityscapes(FolderDataset):
    """Cityscapes val (500 images in 3 city folders), 19 classes as mmsegmentation's
    ``*_gtFine_labelTrainIds.png`` (made by cityscapesscripts' ``createTrainIdLabelImgs``); 255
    (every other label id) ignored."""

    name = "cityscapes"
    title = "Cityscapes"
    default_root = "data/cityscapes"
    img_dir, ann_dir = "leftImg8bit/val", "gtFine/val"
    img_suffix, ann_suffix = "_leftImg8bit.png", "_gtFine_labelTrainIds.png"
    nested = True
    classnames_file = "cityscapes.txt"
