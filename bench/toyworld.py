"""Toy-world mIoU of every stage of the PnP-OVSS pipeline (prints/writes JSON).

    python bench/toyworld.py --seed 7 --images 200 --json toy.json
    python bench/toyworld.py --sweep --seed 0 --images 100      # choose layer/head/DropOut k on a dev seed
    python bench/toyworld.py --map-stats --seed 0 --images 100  # where the maps put their mass
    python bench/toyworld.py --world toyworld-shapes --model toy-shapes --seed 7 --images 24  # the shape-only world

Rows (classes in the caption = the image's labels, plus background, unless said otherwise):
  random_weights       full default pipeline on the toy architecture with random weights (the floor)
  no_vlm               no model at all: colour-distance foreground + the largest present class
  attention            raw cross-attention of the chosen layer/head, one pass, no blur/CRF
  gradcam              GradCAM, one pass, no blur/CRF
  gradcam+dropout      + Salience DropOut (T passes)
  gradcam+dropout+blur + Gaussian blur (argmax, no CRF)
  full                 + dense CRF: the default pipeline
Vocabulary rows (the caption's classes are not told; tag precision/recall/F1 under "tags"):
  vocab_all            every shape class in the caption (keep_all: the paper's pipeline given a
                       vocabulary; formerly full_all_classes)
  vocab_reference      every shape class in the caption, the image's labels' maps kept (eval
                       --labels reference: the CVPR-era scripts' protocol)
  vocab_detect         the presence stage (pnpovss.presence) picks the classes among all six
  vocab_detect_recurrent  + the recurrent CLIP check (toy CLIP, presence_rounds=2)
  oracle_grid_maps     no model: each class's exact coverage of every patch (the best maps the patch
                       grid allows) through the default post-processing, the pipeline's ceiling here
Options, measured beside the default (under "options" in the JSON):
  gradcam+blur+crf     the full pipeline without Salience DropOut (one pass): what DropOut adds
  attention+blur+crf   raw attention (one pass) through the full post-processing: what GradCAM and
                       DropOut add on this model
  full_threshold_binary / full_crf_probs / full_eval_scripts
                       the reference's per-dataset evaluation scripts' post-processing, one change at
                       a time and all together (binary threshold, maps as CRF probabilities,
                       background 1 - sum, 20 CRF iterations)
  full_attention_drop  drop_mode="attention" (one vision pass instead of re-encoding)
  full_drop_k10        the paper's DropOut k = 10 instead of the model preset's k (the toy preset
                       picks k for its 12x12 grid, see --sweep)
  full_eval_scripts    the CVPR-era evaluation scripts' post-processing (New_eval_cam_*.py): absolute
                       threshold on the sum of min-max normalised passes, blur, background 1 - sum of
                       the blurred maps, CRF on the maps as probabilities, 20 iterations
  full_eval_scripts_approx  the earlier approximation of it (threshold after min-max, background before blur)
  full_upsample_bicubic / full_eval_scripts_bicubic / full_eval_scripts_zero_after / full_eval_scripts_exact
  / full_eval_scripts_exact_pass0
                       skimage bicubic-constant upsampling (the evaluation scripts' Attmap_resize) on
                       the default pipeline and on full_eval_scripts; the passes zeroed after their
                       min-max (the reference's order); both (the reference-cvpr-* presets' chain);
                       and VOC's pass 0 only
  full_drop_saliency_reference  DropOut picks patches by the reference's word-piece + [SEP] sum
  full_align_corners_false / full_blur_nearest / full_before_issue13
                       upsampling with align_corners=False, blur border "nearest", both (the defaults
                       before they followed the reference)
  nobg_dataset / nobg_reference
                       the toy world scored as a dataset without a background class (its background
                       pixels ignored): no background channel (default) vs the reference's channel
                       for captions of fewer than 3 classes
  full_bf16            the full pipeline with dtype="bf16" (vision encoder in bf16, see
                       pnpovss.precision); also ``pixel_agreement_with_full``
  full_batch4          the full pipeline on 4 images per forward/backward (Segmenter.segment_batch);
                       ``pixel_agreement_with_full`` should be 1
  full_bf16_compiled   with --compiled-row: ``full_bf16`` with the vision encoder through torch.compile
                       (Backbone.compile_vision); also ``pixel_agreement_with_full``
Scores are accumulated over the whole split in one confusion matrix per row (background + shapes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pnpovss import PipelineConfig, Segmenter
from pnpovss.backbones import resolve_source
from pnpovss.fields import parse_assignments
from pnpovss.metrics import ConfusionMatrix, tag_scores
from pnpovss.postprocess import postprocess
from pnpovss.toyworld.world import SHAPES, WORLDS, make_sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tools/ (not installed)
from tools.toyworld.baselines import no_vlm_predict  # noqa: E402

CLASSES = ["background", *SHAPES]
STAGES = {
    "attention": dict(saliency="attention", drop_iters=1, blur=False, crf=False),
    "gradcam": dict(drop_iters=1, blur=False, crf=False),
    "gradcam+dropout": dict(blur=False, crf=False),
    "gradcam+dropout+blur": dict(crf=False),
    "full": dict(),
}
EVAL_SCRIPTS = dict(threshold_mode="absolute", pass_combine="minmax", background_rule="one_minus_sum_blurred",
                    crf_unary="probs", crf_iters=20)
"""The CVPR-era evaluation scripts' post-processing as first reproduced (bilinear, zero before min-max)."""
OPTIONS = {
    "gradcam+blur+crf": dict(drop_iters=1),
    "attention+blur+crf": dict(saliency="attention", drop_iters=1),
    "full_threshold_binary": dict(threshold_mode="binary"),
    "full_crf_probs": dict(crf_unary="probs"),
    "full_eval_scripts": EVAL_SCRIPTS,
    "full_eval_scripts_approx": dict(threshold_mode="binary", crf_unary="probs", background_rule="one_minus_sum",
                                     crf_iters=20),
    "full_attention_drop": dict(drop_mode="attention"),
    "full_drop_k10": dict(drop_k=10),
    "full_drop_saliency_reference": dict(drop_saliency="reference"),
    "full_align_corners_false": dict(align_corners=False),
    "full_blur_nearest": dict(blur_border="nearest"),
    "full_before_issue13": dict(align_corners=False, blur_border="nearest"),
    "full_upsample_bicubic": dict(upsample="bicubic_constant"),
    "full_eval_scripts_bicubic": dict(EVAL_SCRIPTS, upsample="bicubic_constant"),
    "full_eval_scripts_zero_after": dict(EVAL_SCRIPTS, zero_dropped="after_minmax"),
    "full_eval_scripts_exact": dict(EVAL_SCRIPTS, upsample="bicubic_constant", zero_dropped="after_minmax"),
    "full_eval_scripts_exact_pass0": dict(EVAL_SCRIPTS, upsample="bicubic_constant", zero_dropped="after_minmax",
                                          combine_passes="first"),
    "full_bf16": dict(dtype="bf16"),
}
BATCH = 4
AGREEMENT_ROWS = ("full_bf16", f"full_batch{BATCH}")
"""Rows that also report the fraction of pixels labelled as by ``full``."""
NO_BACKGROUND_LABEL = {
    "nobg_dataset": dict(background=False),
    "nobg_reference": dict(background=False, background_mode="reference"),
}
"""The toy world scored as a dataset *without* a background class (Context-59/ADE20K style: its
background pixels are ignored): the default per-dataset rule (no background channel) against the
reference rule (a background channel when the caption names fewer than 3 classes; a background
prediction is a miss of the pixel's class, see ``pnpovss.evaluate``)."""
MAP_KEYS = ("saliency", "drop_iters", "drop_mode", "drop_k", "halving", "count_first_twice", "pass_combine",
            "drop_saliency", "dtype", "combine_passes", "zero_dropped")
"""The settings that change the grid maps; post-processing variants of one setting share its maps."""


def progress(items, desc: str):
    """A progress bar on stderr (the runs take minutes; stdout keeps the JSON)."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", file=sys.stderr)


def to_global(labels: np.ndarray, names: list[str]) -> np.ndarray:
    """Pipeline label indices (into ``names``) -> toy-world class ids (0 = background)."""
    lut = np.array([CLASSES.index(n) for n in names])
    return lut[labels]


def random_weight_segmenter(model: str, config: PipelineConfig) -> Segmenter:
    """The toy architecture re-initialised at random (seeded): what the pipeline gives with no learning."""
    seg = Segmenter.from_pretrained(model, layer=config.layer, head=config.head)
    torch.manual_seed(0)
    fresh = type(seg.backbone.model)(seg.backbone.model.config).eval().requires_grad_(False)
    seg.backbone.model = fresh
    seg.config = config
    return seg


def oracle_grid_maps(mask: np.ndarray, labels: list[str], grid: tuple[int, int]) -> np.ndarray:
    """(C, gh, gw): the fraction of every patch covered by each class (perfect patch-level maps)."""
    gh, gw = grid
    h, w = mask.shape
    return np.stack([(mask == CLASSES.index(c)).reshape(gh, h // gh, gw, w // gw).mean((1, 3))
                     for c in labels]).astype(np.float32)


def predict(seg: Segmenter, image: np.ndarray, classes: list[str], config: PipelineConfig) -> np.ndarray:
    res = seg.segment(image, classes, keep_all=True, **{k: getattr(config, k) for k in STAGE_KEYS})
    return to_global(res.labels, res.classes)


VOCAB_ROWS = {"vocab_detect": dict(presence_rounds=0), "vocab_detect_recurrent": dict(presence_rounds=2)}
"""The presence rows: segment() with all six shapes as candidates."""


def toy_presence_clip():
    from pnpovss.datasets.toyworld import ToyWorld
    from pnpovss.reward import ClipScorer, load_clip

    return ClipScorer(load_clip("toy"), template=ToyWorld.clip_template)


STAGE_KEYS = ("saliency", "drop_iters", "blur", "crf", "layer", "head")


COMPILED_ROW = "full_bf16_compiled"


def grid_maps(seg: Segmenter, image: np.ndarray, names: Sequence[str], cfg) -> np.ndarray:
    """GradCAM + DropOut class maps of one image under ``cfg`` (no post-processing)."""
    pixels = seg.backbone.preprocess([image], seg.image_size(cfg))
    return seg.class_grid_maps(pixels, seg.encode(pixels, cfg), [list(names)], cfg)[0]


def add_agreement(agree: dict[str, list[int]], name: str, labels: np.ndarray, ref: np.ndarray) -> None:
    """Count the pixels of ``labels`` equal to ``ref`` (the ``full`` row's), and all pixels, into ``agree[name]``."""
    agree[name][0] += int((labels == ref).sum())
    agree[name][1] += labels.size


def compiled_bf16_labels(seg: Segmenter, image: np.ndarray, names: list[str], base) -> np.ndarray:
    """The full pipeline in bf16 with the compiled vision encoder (a choice of the backbone, not a
    config field, so it is switched on around this image only)."""
    cfg = base.replace(dtype="bf16").for_caption(len(names))
    seg.backbone.compile_vision = True
    try:
        maps = grid_maps(seg, image, names, cfg)
    finally:
        seg.backbone.compile_vision = False
    return postprocess(maps, image, cfg)[0]


def run(model: str, seed: int, images: int, size: int, compiled_row: bool = False, world: str = "toyworld",
        **overrides) -> dict:
    seg = Segmenter.from_pretrained(model, presence_clip=toy_presence_clip(), **overrides)
    base = seg.config
    rand = random_weight_segmenter(model, base)
    extra = [COMPILED_ROW] if compiled_row else []
    rows = {name: ConfusionMatrix(len(CLASSES)) for name in
            ["random_weights", "no_vlm", *STAGES, "vocab_all", "vocab_reference", *VOCAB_ROWS, "oracle_grid_maps", *OPTIONS,
             f"full_batch{BATCH}", *extra]}
    kept: dict[str, list[list[str]]] = {name: [] for name in ["full", "vocab_all", *VOCAB_ROWS]}
    truths: list[list[str]] = []
    nobg = {name: ConfusionMatrix(len(SHAPES), unscored_labels=1) for name in NO_BACKGROUND_LABEL}
    agree = {name: [0, 0] for name in (*AGREEMENT_ROWS, *extra)}  # pixels labelled as by "full", pixels
    full_labels: list[np.ndarray] = []
    pending: list = []
    start = time.perf_counter()
    full_seconds = 0.0
    for i in progress(range(images), f"benchmark seed {seed}"):
        s = make_sample(seed, i, size, world)
        truth = s.mask.astype(np.int64)
        truths.append(list(s.labels))
        rows["random_weights"].update(predict(rand, s.image, s.labels, base), truth)
        by_area = sorted(s.labels, key=lambda c: -int((s.mask == CLASSES.index(c)).sum()))
        rows["no_vlm"].update(no_vlm_predict(s.image, by_area), truth)
        # One GradCAM computation per map setting (saliency, DropOut schedule); post-processing variants reuse it.
        grid_cache: dict[tuple, tuple[np.ndarray, float]] = {}  # maps and the seconds they took
        for name, overrides in {**STAGES, **OPTIONS, **NO_BACKGROUND_LABEL}.items():
            cfg = base.replace(**overrides).for_caption(len(s.labels))
            key = tuple(getattr(cfg, k) for k in MAP_KEYS)
            if key not in grid_cache:
                t0 = time.perf_counter()
                maps = grid_maps(seg, s.image, s.labels, cfg)
                grid_cache[key] = (maps, time.perf_counter() - t0)
            t0 = time.perf_counter()
            labels, _ = postprocess(grid_cache[key][0], s.image, cfg)
            if name == "full":  # the whole default pipeline: its maps (even if cached) + post-processing
                full_seconds += grid_cache[key][1] + time.perf_counter() - t0
            if name in NO_BACKGROUND_LABEL:  # shapes 0..5, background prediction = 6 (unscored), truth bg ignored
                pred = to_global(labels, ["background", *s.labels] if cfg.background else s.labels) - 1
                nobg[name].update(np.where(pred < 0, len(SHAPES), pred), np.where(truth == 0, 255, truth - 1))
                continue
            rows[name].update(to_global(labels, ["background", *s.labels]), truth)
            if name == "full":
                full_labels.append(labels)
            if name in agree:
                add_agreement(agree, name, labels, full_labels[-1])
        if compiled_row:
            labels = compiled_bf16_labels(seg, s.image, list(s.labels), base)
            rows[COMPILED_ROW].update(to_global(labels, ["background", *s.labels]), truth)
            add_agreement(agree, COMPILED_ROW, labels, full_labels[-1])
        pending.append(s)
        if len(pending) == BATCH or i == images - 1:  # the full pipeline, BATCH images per pass
            results = seg.segment_batch([p.image for p in pending], [p.labels for p in pending], keep_all=True)
            for p, res, ref in zip(pending, results, full_labels[-len(pending):]):
                rows[f"full_batch{BATCH}"].update(to_global(res.labels, res.classes), p.mask.astype(np.int64))
                add_agreement(agree, f"full_batch{BATCH}", res.labels, ref)
            pending = []
        rows["vocab_all"].update(predict(seg, s.image, list(SHAPES), base), truth)
        ref = seg.segment(s.image, list(s.labels), caption=list(SHAPES))  # eval --labels reference
        rows["vocab_reference"].update(to_global(ref.labels, ref.classes), truth)
        kept["full"].append(list(s.labels))
        kept["vocab_all"].append(list(SHAPES))
        for name, presence in VOCAB_ROWS.items():
            res = seg.segment(s.image, list(SHAPES), **presence)
            rows[name].update(to_global(res.labels, res.classes), truth)
            kept[name].append(res.presence.kept)
        oracle = oracle_grid_maps(s.mask, s.labels, seg.backbone.grid(seg.image_size(base)))
        rows["oracle_grid_maps"].update(to_global(postprocess(oracle, s.image, base)[0], ["background", *s.labels]), truth)
    elapsed = time.perf_counter() - start
    return {
        "seed": seed,
        "images": images,
        "image_px": size,
        **({"world": world} if world != "toyworld" else {}),
        "model": model,
        "layer": base.layer,
        "head": base.head,
        "config": base.to_dict(),
        "rows": {name: cm.summary(CLASSES) for name, cm in rows.items()
                 if name not in OPTIONS and name not in AGREEMENT_ROWS and name != COMPILED_ROW},
        "tags": {name: tag_scores(sets, truths) for name, sets in kept.items()},
        "presence": {"presence_threshold": base.presence_threshold, "presence_clip_ratio": base.presence_clip_ratio,
                     "presence_confident": base.presence_confident, "recurrent_rounds": 2, "clip": "toy"},
        "options": {**{name: {"overrides": OPTIONS[name], **rows[name].summary(CLASSES)} for name in OPTIONS},
                    f"full_batch{BATCH}": {"overrides": {}, "batch": BATCH, **rows[f"full_batch{BATCH}"].summary(CLASSES)},
                    **({COMPILED_ROW: {"overrides": {"dtype": "bf16"}, "compile_vision": True,
                                       **rows[COMPILED_ROW].summary(CLASSES)}} if compiled_row else {})},
        "pixel_agreement_with_full": {name: round(a / n, 5) for name, (a, n) in agree.items() if n},
        "no_background_label": {name: {"overrides": NO_BACKGROUND_LABEL[name], **cm.summary(SHAPES)}
                                for name, cm in nobg.items()},
        "seconds_per_image": full_seconds / images,
        "bench_seconds_per_image": elapsed / images,
    }


DROP_K_CHOICES = (1, 2, 3, 5, 10)
"""Salience DropOut k tried by the sweep. The paper's k = 10 of BLIP-384's 576 patches drops 1.7% of
the grid per pass; on the toy 12x12 grid that fraction is 2.5 patches, and k = 10 drops four times it."""


def sweep_cell(layer: int, head: int | None) -> str:
    """The sweep table's key of a layer/head, e.g. ``L1Hall`` (head mean) or ``L2H3``."""
    return f"L{layer}H{'all' if head is None else head}"


def sweep(model: str, seed: int, images: int, size: int, world: str = "toyworld", **_ignored) -> dict:
    """Model selection for the toy preset on a development seed, in two steps: (1) mIoU of every
    (layer, head) and every layer's head mean (``H=all``), GradCAM with one pass and the default
    post-processing; (2) at the best of those, the full default pipeline for each DropOut k in
    ``DROP_K_CHOICES`` (k depends on the patch grid, which the paper's default does not know)."""
    seg = Segmenter.from_pretrained(model, layer=1, head=0)
    bb = seg.backbone
    layers = list(range(1, bb.num_layers + 1))
    heads: list[int | None] = [*range(bb.num_heads), None]
    cms = {(l, h): ConfusionMatrix(len(CLASSES)) for l, h in itertools.product(layers, heads)}
    from pnpovss.gradcam import (
        cam_from_attention,
        layer_attention_and_grad,
        pool_classes,
    )

    samples = [make_sample(seed, i, size, world) for i in range(images)]
    for s in progress(samples, "sweep: layers x heads"):
        pixels = bb.preprocess([s.image], seg.image_size())
        text = bb.build_text(seg.config.prompt, [s.labels])
        grads = layer_attention_and_grad(bb, bb.encode_image(pixels), text, layers)
        grid = bb.grid(pixels.shape[-1])
        for (l, h), cm in cms.items():
            maps = pool_classes(cam_from_attention(*grads[l], None if h is None else (h,)), text.class_tokens)[0]
            cfg = seg.config.replace(layer=l, head=h, drop_iters=1)
            labels, _ = postprocess(maps.view(-1, *grid).numpy(), s.image, cfg)
            cm.update(to_global(labels, ["background", *s.labels]), s.mask.astype(np.int64))
    table = {sweep_cell(l, h): round(cm.summary(CLASSES)["miou"], 2) for (l, h), cm in cms.items()}
    layer, head = max(cms, key=lambda k: cms[k].summary(CLASSES)["miou"])

    by_k = {k: ConfusionMatrix(len(CLASSES)) for k in DROP_K_CHOICES}
    for s in progress(samples, "sweep: DropOut k"):
        for k, cm in by_k.items():
            res = seg.segment(s.image, s.labels, keep_all=True, layer=layer, head=head, drop_k=k)
            cm.update(to_global(res.labels, res.classes), s.mask.astype(np.int64))
    k_table = {str(k): round(cm.summary(CLASSES)["miou"], 2) for k, cm in by_k.items()}
    drop_k = max(by_k, key=lambda k: by_k[k].summary(CLASSES)["miou"])
    return {"seed": seed, "images": images, **({"world": world} if world != "toyworld" else {}),
            "stage": "gradcam, 1 pass, blur + CRF", "miou_by_layer_head": table,
            "stage_drop_k": f"full default pipeline at {sweep_cell(layer, head)}",
            "miou_by_drop_k": k_table,
            "best": {"layer": layer, "head": "all" if head is None else head, "drop_k": drop_k},
            "preset": {"layer": layer, "head": head, "drop_k": drop_k}}


def write_preset(model: str, result: dict, command: str) -> Path:
    """Store the sweep's choice as the model directory's ``pnpovss_preset.json``."""
    from pnpovss.config import PRESET_FILENAME
    from pnpovss.fileio import atomic_write_text

    path = Path(resolve_source(model)) / PRESET_FILENAME
    preset = result["preset"]
    old = json.loads(path.read_text()) if path.is_file() else {}
    # layer, head and drop_k are replaced; the rest stays (the presence settings chosen by --presence-sweep,
    # the scenes' size for the CRF, a model's own image_size such as the toy BridgeTower's)
    kept = {k: v for k, v in old.get("config", {}).items() if k not in preset}
    notes = {k: old[k] for k in ("presence", "resolution") if k in old}
    doc = {"config": {**result["preset"], **kept}, **notes,
           "selected_by": command + " (step 1: GradCAM, one pass, default blur + CRF, "
           "every layer x (each head, head mean); step 2: the full default pipeline at that layer/head for "
           f"drop_k in {list(DROP_K_CHOICES)}; best mIoU on development seed {result['seed']})",
           "sweep_miou": {"layer_head": result["miou_by_layer_head"][sweep_cell(preset["layer"], preset["head"])],
                          "full": result["miou_by_drop_k"][str(preset["drop_k"])]}}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


PRESENCE_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
CLIP_RATIOS = (0.0005, 0.001, 0.002, 0.005, 0.01)
"""``presence_clip_ratio`` values of the second-opinion sweep (at ``CLIP_THRESHOLDS``)."""
CLIP_THRESHOLDS = (0.5, 0.8, 0.9)


def presence_sweep(model: str, seed: int, images: int, size: int, world: str = "toyworld", **overrides) -> dict:
    """Choose the presence settings on a development seed: mIoU of the default pipeline and tag F1
    with all six shapes as candidates, for each ``presence_threshold`` in ``PRESENCE_THRESHOLDS``
    (ITM alone: ``by_threshold``) and for each (threshold, ``presence_clip_ratio``) of CLIP's second
    opinion (``by_threshold_and_clip_ratio``, ``presence_confident`` as configured); then, at the
    best-F1 setting, 1 and 2 rounds of the recurrent CLIP check."""
    from pnpovss.presence import clip_opinion, select_classes

    clip = toy_presence_clip()
    seg = Segmenter.from_pretrained(model, presence_clip=clip, **overrides)
    confident = seg.config.presence_confident
    grid = [(t, 0.0) for t in PRESENCE_THRESHOLDS] + [(t, r) for t in CLIP_THRESHOLDS for r in CLIP_RATIOS]
    cms = {g: ConfusionMatrix(len(CLASSES)) for g in grid}
    kept: dict[tuple, list[list[str]]] = {g: [] for g in grid}
    samples = [make_sample(seed, i, size, world) for i in range(images)]
    for s in progress(samples, f"presence sweep seed {seed}"):
        scores = seg.detect_classes(s.image, list(SHAPES), presence_clip_ratio=0.0).scores
        opinion = clip_opinion(clip, s.image, SHAPES).tolist()
        done: dict[tuple, np.ndarray] = {}
        for (t, r), cm in cms.items():
            names = tuple(select_classes(list(SHAPES), scores, t, background=True, clip=opinion, clip_ratio=r,
                                         confident=confident)[0])
            if names not in done:
                res = seg.segment(s.image, list(names), keep_all=True) if names else None
                done[names] = np.zeros_like(s.mask, dtype=np.int64) if res is None else to_global(res.labels, res.classes)
            cm.update(done[names], s.mask.astype(np.int64))
            kept[t, r].append(list(names))
    truths = [list(s.labels) for s in samples]
    cell = {g: {"miou": round(cm.summary(CLASSES)["miou"], 2), **tag_scores(kept[g], truths)} for g, cm in cms.items()}
    best = max(grid, key=lambda g: cell[g]["f1"])  # the stage's own task: tagging
    rounds = {}
    for n in (1, 2):
        cm, sets = ConfusionMatrix(len(CLASSES)), []
        for s in samples:
            res = seg.segment(s.image, list(SHAPES), presence_threshold=best[0], presence_clip_ratio=best[1],
                              presence_rounds=n)
            cm.update(to_global(res.labels, res.classes), s.mask.astype(np.int64))
            sets.append(res.presence.kept)
        rounds[str(n)] = {"miou": round(cm.summary(CLASSES)["miou"], 2), **tag_scores(sets, truths)}
    plain = [g for g in grid if g[1] == 0.0]
    return {"seed": seed, "images": images, **({"world": world} if world != "toyworld" else {}),
            "presence_confident": confident,
            "by_threshold": {str(t): cell[t, r] for t, r in plain},
            "by_threshold_and_clip_ratio": {f"{t}/{r}": cell[t, r] for t, r in grid if r > 0},
            "best_threshold_f1": max(plain, key=lambda g: cell[g]["f1"])[0],
            "best_threshold_miou": max(plain, key=lambda g: cell[g]["miou"])[0],
            "best_f1": {"presence_threshold": best[0], "presence_clip_ratio": best[1]},
            "recurrent_at_best_f1": rounds}


def map_stats(model: str, seed: int, images: int, size: int, world: str = "toyworld", **_ignored) -> dict:
    """Where the single-pass class maps put their mass, per (saliency, layer) with heads averaged:
    on the class's own object, on other objects, on background, and how often the map's peak patch
    lies on the own object (>= 20% covered). Word binding vs object finding, beside mIoU. For
    GradCAM also how often the head-mean gradient dS/dA is positive (what relu keeps) on patches
    mostly (>= 50%) of the own object, of other objects and of background (< 5% foreground)."""
    seg = Segmenter.from_pretrained(model, layer=1, head=None)
    bb = seg.backbone
    layers = list(range(1, bb.num_layers + 1))
    from pnpovss.gradcam import (
        cam_from_attention,
        layer_attention_and_grad,
        pool_classes,
    )

    sums = {(sal, l): np.zeros(4) for sal in ("gradcam", "attention") for l in layers}
    positive = {l: np.zeros((3, 2)) for l in layers}  # (own, other, background) x (positive, patches)
    for i in progress(range(images), "map stats"):
        s = make_sample(seed, i, size, world)
        pixels = bb.preprocess([s.image], seg.image_size())
        text = bb.build_text(seg.config.prompt, [s.labels])
        grid = bb.grid(pixels.shape[-1])
        objects = oracle_grid_maps(s.mask, s.labels, grid).reshape(len(s.labels), -1)
        found = layer_attention_and_grad(bb, bb.encode_image(pixels), text, layers)  # A and dS/dA: both rows
        for l in layers:
            attn, grad = found[l]
            for sal in ("gradcam", "attention"):
                maps = pool_classes(cam_from_attention(attn, grad if sal == "gradcam" else None, None),
                                    text.class_tokens)[0].numpy()
                for c, m in enumerate(maps):
                    m = m / max(float(m.sum()), 1e-12)
                    own, other = objects[c], objects.sum(0) - objects[c]
                    sums[sal, l] += [(m * own).sum(), (m * other).sum(), float(own[m.argmax()] >= 0.2), 1]
            g = pool_classes(grad[..., 1:].mean(dim=1), text.class_tokens)[0].numpy()
            for c, gc in enumerate(g):
                for r, region in enumerate((objects[c] >= 0.5, objects.sum(0) - objects[c] >= 0.5, objects.sum(0) < 0.05)):
                    positive[l][r] += [(gc[region] > 0).sum(), region.sum()]
    stats = {f"{sal}_L{l}": {"own": round(a[0] / a[3], 3), "other_objects": round(a[1] / a[3], 3),
                             "background": round(1 - (a[0] + a[1]) / a[3], 3), "peak_on_own": round(a[2] / a[3], 3)}
             for (sal, l), a in sums.items()}
    for l, p in positive.items():
        stats[f"gradcam_L{l}"]["gradient_positive"] = {
            name: round(float(p[r, 0] / max(p[r, 1], 1)), 3) for r, name in enumerate(("own", "other_objects", "background"))}
    return {"seed": seed, "images": images, **({"world": world} if world != "toyworld" else {}),
            "heads": "mean", "stats": stats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy")
    ap.add_argument("--seed", type=int, default=7, help="evaluation seed (0..999; never a training seed)")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=96, help="image size in pixels")
    ap.add_argument("--world", choices=WORLDS, default="toyworld",
                    help="which toy world the images come from (toyworld-shapes: only outlines name the classes)")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--sweep", action="store_true",
                    help="instead: choose the model preset (layer/head, then DropOut k) on a development seed")
    ap.add_argument("--write-preset", action="store_true",
                    help="with --sweep: store the choice as the model directory's pnpovss_preset.json")
    ap.add_argument("--presence-sweep", action="store_true",
                    help="instead: mIoU and tag F1 of each presence_threshold on a development seed")
    ap.add_argument("--map-stats", action="store_true",
                    help="instead: where the class maps put their mass (own object / other objects / background)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compiled-row", action="store_true",
                    help="also the row full_bf16_compiled (torch.compile of the vision encoder: needs a C++ compiler)")
    ap.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                    help="override a pipeline option of the model preset, e.g. --set layer=2 --set head=all")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    resolve_source(args.model)
    overrides = parse_assignments(args.assignments)
    mode = sweep if args.sweep else map_stats if args.map_stats else presence_sweep if args.presence_sweep else run
    extra = {"compiled_row": True} if args.compiled_row and mode is run else {}
    if args.world != "toyworld":
        extra["world"] = args.world
    out = mode(args.model, args.seed, args.images, args.size, **extra, **overrides)
    text = json.dumps(out, indent=2)
    if args.json:
        from pnpovss.fileio import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    print(text)
    if args.sweep and args.write_preset:
        print(f"wrote {write_preset(args.model, out, 'python bench/toyworld.py ' + ' '.join(argv or sys.argv[1:]))}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
