"""Pipeline hyper-parameters as plain data: the :class:`PipelineConfig` dataclass.

Defaults follow the PnP-OVSS paper and its reference code; every constant of the method is a field
here so that a tuning run can change it and a preset file can record it. Precedence when a
:class:`~pnpovss.Segmenter` is built: these defaults < the model directory's own preset
(``pnpovss_preset.json``, e.g. the toy model's measured layer/head) < a user preset file < explicit
keyword arguments / CLI options.

The field table that validates every value (and names each field's stage) is
:mod:`pnpovss.fields`; preset files are :mod:`pnpovss.preset_files`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .errors import ConfigError
from .fields import FIELDS, check_keys, field_spec

PRESET_FILENAME = "pnpovss_preset.json"

REFERENCE_BACKGROUND_BELOW = 3
"""``background_mode="reference"`` adds the background channel to captions of fewer classes than this."""

HeadSpec = int | tuple[int, ...] | None
"""One head (0-based), a set of heads whose maps are averaged, or ``None`` for all heads."""


@dataclass(frozen=True)
class PipelineConfig:
    """Every knob of the PnP-OVSS pipeline. Field docs give the paper/reference default."""

    image_size: int | None = None
    """Square input size in pixels; ``None`` = the checkpoint's native size (BLIP-large: 384)."""
    prompt: str = "a picture of "
    """Caption prefix; the class names follow it, joined by spaces. Prefix tokens carry no class."""
    layer: int = 8
    """Cross-attention layer read for GradCAM, 1-based as in the paper."""
    head: HeadSpec = 9
    """Attention head (0-based), a tuple of heads to average, or None for the mean of all heads."""
    saliency: str = "gradcam"
    """``gradcam``: A * relu(dS/dA) (the paper); ``attention``: raw cross-attention A (an ablation)."""
    drop_iters: int = 4
    """Salience DropOut passes T (1 = no dropout). Patches are dropped after every pass but the last."""
    drop_k: int = 10
    """Patches dropped after each pass (ignored when ``halving``)."""
    halving: bool = False
    """Drop half of the remaining patches after each pass (the CVPR paper's schedule)."""
    count_first_twice: bool = True
    """Combined map = pass 0 + sum of all passes, i.e. pass 0 counted twice, as the reference code does."""
    drop_mode: str = "reencode"
    """How dropped patches are removed: ``reencode`` (mean colour, image re-encoded; the paper) or
    ``attention`` (the patches' keys are masked out of the cross-attention; one vision pass)."""
    threshold: float = 0.15
    """After per-class min-max normalisation, values below this are set to 0."""
    threshold_mode: str = "keep"
    """``keep``: values at or above the threshold are kept (the reference segmentation script);
    ``binary``: they become 1; ``absolute``: 1 where the combined map itself (no min-max) reaches
    the threshold (the CVPR-era evaluation scripts, on the sum of min-max normalised passes)."""
    background: bool = True
    """Add a background channel (label 0) to the output."""
    background_rule: str = "zero"
    """``zero``: background = 1 where every class map is 0 (reference); ``one_minus_sum``: 1 - sum of class maps
    (clamped); ``one_minus_sum_blurred``: 1 - sum of the *blurred* class maps, the background itself
    not blurred (the CVPR-era evaluation scripts)."""
    blur: bool = True
    """Gaussian-blur every channel before the CRF."""
    blur_sigma: float = 0.05
    """Blur sigma as a fraction of max(H, W) of the output image."""
    crf: bool = True
    """Refine with a dense CRF; False gives the plain argmax of the blurred maps."""
    crf_unary: str = "softmax"
    """CRF unary = -log p with p = ``softmax`` over the channels (reference segmentation script) or
    the maps themselves taken as ``probs`` (reference evaluation scripts; sharper unaries)."""
    crf_iters: int = 10
    crf_gaussian_sxy: float = 3.0
    crf_gaussian_compat: float = 7.0
    crf_bilateral_sxy: float = 50.0
    crf_bilateral_srgb: float = 5.0
    crf_bilateral_compat: float = 10.0
    crf_reference_side: int | None = 512
    """The long side, in pixels, at which the CRF's ``sxy`` hold. On an image whose post-processed
    long side L exceeds R, both ``sxy`` grow by L/R, so a kernel covers the same part of the scene
    as at R px (:func:`pnpovss.postprocess.crf_kernels`; docs/how-to/large-images.md); images up to R px
    are unaffected. 512: the reference set its values on dataset images of at most ~500 px, so they
    keep the reference's behaviour there, while a photo is no longer labelled with kernels a tenth
    of its scale (held-out toy scenes upscaled to 1024 px lost 10.0 mIoU points with pixel kernels,
    3.5 with R=512; ``bench/resolution.py``). ``None``: pixels at every size, as the reference
    (every ``reference-*`` preset). The toy model's preset says 96, its scenes' size."""
    postprocess_max_side: int | None = 1024
    """Blur and CRF run on a copy of the image whose long side is at most this many pixels, and the
    labels are upsampled back (``None``: always full resolution). Images up to this size are
    post-processed exactly as the reference does; larger ones cost seconds instead of minutes."""
    presence_threshold: float = 0.9
    """Class presence (``pnpovss.presence``): when the class list is a list of candidates (the
    default of ``segment``; ``keep_all`` skips this), a candidate enters the caption only if the
    backbone's ITM match probability for ``prompt + name`` alone reaches this value. A probability
    (softmax of the ITM head's two logits), so it reads the same on any ITM model. 0.9: best mean
    tag F1 on toy-world development seeds 0 and 1 (``bench/toyworld.py --presence-sweep``)."""
    presence_rounds: int = 0
    """Recurrent presence check (CLIP-as-RNN's idea): after segmenting, drop the kept classes whose
    region CLIP does not recognise (masked vs blank, as the tuning reward) and segment again, at most
    this many rounds. 0 = off. Needs a CLIP model (``presence_clip_model``)."""
    presence_clip_ratio: float = 0.0
    """CLIP's second opinion on the uncertain candidates (``pnpovss.presence``, step 2): a candidate
    whose ITM probability reached ``presence_threshold`` but not ``presence_confident`` is dropped
    when CLIP, shown the whole image, gives it less than this fraction of the probability of its
    best candidate (softmax over the candidates). 0 = off (the default: unmeasured on real
    checkpoints); the toy model's preset sets 0.005, chosen on toy-world development seeds 0 and 1."""
    presence_confident: float = 0.99
    """ITM probability at or above which a candidate is kept without CLIP's second opinion."""
    presence_clip_model: str | None = None
    """The CLIP of the second opinion and the recurrent check, when no scorer is passed in code
    (``Segmenter(presence_clip=...)``): an open_clip model name (its default pretrained tag), a
    local open_clip directory, or ``toy``. Loaded on first use. ``--clip`` sets it."""
    presence_clip_template: str = "a photo of a {}."
    """CLIP's text prompt for a class name (``{}``), for the loaded ``presence_clip_model``."""
    align_corners: bool = True
    """Bilinear upsampling of the grid maps with ``align_corners=True`` (reference segmentation
    script); False centres each patch on its pixels (this package's earlier default; an option)."""
    blur_border: str = "reflect"
    """scipy ``gaussian_filter`` border mode of the blur: ``reflect`` (scipy's default, used by the
    reference), ``nearest``, ``mirror``, ``constant`` or ``wrap``."""
    background_mode: str = "dataset"
    """When the background channel is added: ``dataset``: exactly when ``background`` is on
    (evaluation turns it on for datasets with a background class); ``reference``: also when the
    caption names fewer than 3 classes (the reference segmentation scripts on Pascal Context,
    ADE20K and COCO-Stuff; always on VOC and COCO-Object); ``always``: on every caption (the
    CVPR-era evaluation scripts). See :meth:`for_caption`."""
    pass_combine: str = "sum"
    """How the DropOut passes' class maps are combined: ``sum`` of the raw maps (reference
    segmentation script); ``minmax``: each pass's class map min-max normalised first (the CVPR-era
    evaluation scripts, ``New_eval_cam_*.py``)."""
    drop_saliency: str = "classes"
    """Which saliency picks the patches to drop: ``classes``: the sum over classes of each class's
    mean over its word pieces (ours); ``reference``: the sum over every class word piece plus
    ``[SEP]`` (the reference: a k-piece class counts k times)."""
    dtype: str = "fp32"
    """Precision of the network passes: ``fp32`` (the paper), ``bf16``, ``fp16`` (CUDA only) or
    ``auto`` (bf16 on a CPU with native bf16 or on CUDA, fp16 on a CUDA GPU without bf16, else
    fp32); see :mod:`pnpovss.precision`. GradCAM maps are formed in fp32 either way."""
    combine_passes: str = "all"
    """Which DropOut passes the combined map holds: ``all``; ``first``: pass 0 only (counted twice
    under ``count_first_twice``), as ``New_eval_cam_VOC.py`` does: it appends zero maps inside its
    per-pass loop, so its sum is 2 x pass 0. The later passes cannot change the result then, so
    they are not run."""
    zero_dropped: str = "before_minmax"
    """Under ``pass_combine="minmax"``, whether a pass's dropped patches are zeroed before its
    min-max (ours: a dropped patch cannot set the pass's maximum) or ``after_minmax`` (the
    reference: its search scripts save normalised maps, its evaluation scripts zero them)."""
    upsample: str = "bilinear"
    """Grid maps -> image size: ``bilinear`` (see ``align_corners``; the reference segmentation
    script) or ``bicubic_constant``: each map min-max normalised, then cubic-spline resized with
    zeros outside the grid, i.e. skimage ``resize(order=3, mode="constant")`` (the CVPR-era
    evaluation scripts' ``Attmap_resize``)."""
    class_names: str = "package"
    """Caption names of a dataset's classes in ``eval``/``tune``: this package's (``package``) or
    those the reference wrote (``reference-cvpr``: "table", "pottedplant", raw COCO-Stuff names...;
    ``reference-head``: the HEAD scripts', spaces removed on ADE20K). A dataset the reference never
    evaluated (the toy world) keeps its own names."""
    reward_synonyms: bool = True
    """``tune``'s CLIP text embedding of a class averages its synonyms (class-name file); False:
    the caption name alone, as the reference does."""
    eval_labels: str = "gt"
    """The label protocol ``eval`` and ``tune`` run when none is given: ``gt`` (the caption holds
    the image's ground-truth classes) or ``reference`` (the caption holds the whole dataset
    vocabulary, the ground-truth classes' maps are kept: the CVPR-era scripts). See
    :mod:`pnpovss.evaluate`."""

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            try:
                object.__setattr__(self, f.name, field_spec(f.name).check(f.name, getattr(self, f.name)))
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))

    def heads_tuple(self) -> tuple[int, ...] | None:
        """The head spec as a tuple (None = all heads)."""
        if self.head is None:
            return None
        if isinstance(self.head, int):
            return (self.head,)
        return tuple(int(h) for h in self.head)

    def for_caption(self, num_classes: int) -> "PipelineConfig":
        """The configuration for one caption of ``num_classes`` classes: under ``background_mode
        = "reference"`` the background channel is also added when fewer than 3 classes are named,
        under ``"always"`` always."""
        if self.background or self.background_mode == "dataset" or (
                self.background_mode == "reference" and num_classes >= REFERENCE_BACKGROUND_BELOW):
            return self
        return dataclasses.replace(self, background=True)

    def replace(self, **overrides: Any) -> "PipelineConfig":
        """A copy with ``overrides`` applied; an unknown key is an error, not silently ignored."""
        return dataclasses.replace(self, **check_keys(overrides))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(d["head"], tuple):
            d["head"] = list(d["head"])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PipelineConfig":
        return cls().replace(**dict(data))

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> "PipelineConfig":
        """The configuration a record (a result's or a run's ``config``) ran with: a field it lacks
        takes the value of the library that wrote it (:func:`earlier_values`), not today's default."""
        return cls().replace(**{**earlier_values(), **dict(data)})


_missing = sorted({f.name for f in fields(PipelineConfig)} ^ set(FIELDS))
if _missing:  # every field is validated, parsed and staged by its entry in the field table
    raise RuntimeError(f"PipelineConfig fields and pnpovss.fields.FIELDS differ: {', '.join(_missing)}")


def earlier_values() -> dict[str, Any]:
    """Every field's value in a record written before the field existed: its default (a new
    field's default keeps the earlier behaviour), or, for a field whose default changed since
    (``FieldSpec.changed_default``), the value that behaves as before (``FieldSpec.before``)."""
    defaults = PipelineConfig().to_dict()
    return {k: FIELDS[k].before if FIELDS[k].changed_default else v for k, v in defaults.items()}


def as_recorded(config: Any, recorded: Any) -> Any:
    """``config`` (a :meth:`PipelineConfig.to_dict`) without the fields a recorded configuration
    lacks and that sit at the value the record ran with (:func:`earlier_values`): a setting added
    to the library after the record was written cannot have changed what was recorded unless it
    now asks for other behaviour. Resume checks (``segment``'s outputs, ``tune``'s ``run.json``)
    compare through it, so a new field does not redo or refuse earlier work, and a changed default
    does (its results may differ)."""
    if not isinstance(config, Mapping) or not isinstance(recorded, Mapping):
        return config
    earlier = earlier_values()
    return {k: v for k, v in config.items() if k in recorded or v != earlier.get(k, object())}


__all__ = ["PipelineConfig", "as_recorded", "earlier_values", "HeadSpec", "PRESET_FILENAME", "REFERENCE_BACKGROUND_BELOW"]
