"""The docs' figures (the README shows one), drawn from real runs and recorded benchmarks (writes PNGs flat into --out).

    python bench/figures.py --out docs                       # all figures, as committed
    python bench/figures.py --out /tmp/f --images 1 --size 48 --only stages

Figures (``FIGURES``: name -> file name and drawing function; a new figure is one more entry):
  stages    the default pipeline stage by stage on held-out toy-world images (seed 7): image, truth,
            raw attention, each Salience DropOut pass (pass 1 is plain GradCAM; dropped patches in
            black), the combined map, after blur, and the CRF's label map; one row per (image, class)
  ablation  toy-world mIoU of every stage and option row, read from bench/results/toyworld_seed7.json,
            with the no-VLM baseline and the oracle ceiling as reference lines
  speed     seconds per image and peak memory of every speed-bench row, read from
            bench/results/speed_full.json
  presence  the class-presence stage on the stages figure's images: every shape's ITM match
            probability as a candidate, kept or dropped at presence_threshold, and which shapes
            are really there
  tuning    tune's held-out gain over the defaults per (tuning, held-out) seed pair, worst pair
            first, the default selection beside the paper's reward with argmax, read from
            bench/results/tune_robustness.json

Charts read their numbers from the JSON files, so after a re-recorded benchmark one rerun of this
command brings the figures up to date. Output is deterministic: the toy world and model are seeded
and fixed, matplotlib runs with its default style and bundled DejaVu Sans, and the PNGs are written
by Pillow without any metadata (no timestamp, no software version).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOY_JSON = ROOT / "bench" / "results" / "toyworld_seed7.json"
SPEED_JSON = ROOT / "bench" / "results" / "speed_full.json"
TUNE_JSON = ROOT / "bench" / "results" / "tune_robustness.json"
TUNE_COMMAND = "python bench/tune_robustness.py --pairs ... --json bench/results/tune_robustness.json"


class FigureError(Exception):
    """Bad input to this script (a missing or malformed record): printed as one ``Error:`` line."""


# ----------------------------------------------------------------------------------- common
def matplotlib_pyplot():
    """pyplot on the Agg backend with the default style and the bundled font, whatever the user's
    matplotlibrc says: the same PNG on every machine with the same matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise FigureError("matplotlib is not installed; pip install -e \".[docs]\"") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.style.use("default")
    plt.rcParams.update({"font.family": "DejaVu Sans", "font.size": 9, "svg.hashsalt": "pnpovss",
                         "axes.titlesize": 9, "figure.dpi": 100})
    return plt


def png_bytes(fig, dpi: int) -> bytes:
    """Render ``fig`` and encode it with Pillow: no metadata, so a rerun gives identical bytes.

    Stored as a 256-colour palette PNG (a third of the RGB size, which keeps docs/ small): the
    label colours of the CLI overlay, black, white and the legend grey are in the palette exactly,
    the rest is chosen for the image (Pillow's max-coverage quantiser, no dithering)."""
    from PIL import Image

    from pnpovss.visualize import palette

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    buf.seek(0)
    img = Image.open(buf).convert("RGB")
    fixed = [tuple(int(v) for v in c) for c in palette(16)] + [(255, 255, 255), LEGEND_GREY]
    adaptive = img.quantize(colors=256 - len(fixed), method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
    colours = np.array(fixed + [tuple(c) for c in np.array(adaptive.getpalette()[: 3 * (256 - len(fixed))]).reshape(-1, 3)],
                       dtype=np.uint8)
    # each distinct colour to its nearest palette entry (exact where it is one; Pillow's own
    # palette mapping goes through a coarse colour cache and moves some of them)
    rgb = np.asarray(img).reshape(-1, 3).astype(np.int32)
    packed, inverse = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2], return_inverse=True)
    unique = np.stack([packed >> 16, packed >> 8 & 255, packed & 255], axis=1)
    dist = ((unique[:, None, :].astype(np.int32) - colours[None, :, :].astype(np.int32)) ** 2).sum(axis=2)
    index = dist.argmin(axis=1).astype(np.uint8)[inverse.reshape(-1)].reshape(img.height, img.width)
    out_img = Image.fromarray(index, mode="P")
    out_img.putpalette(colours.reshape(-1).tolist())
    out = io.BytesIO()
    out_img.save(out, format="PNG", optimize=True)
    return out.getvalue()


LEGEND_GREY = (180, 180, 180)


def display_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (figures never show /home/...)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def read_json(path: Path, command: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FigureError(f"{path} not found; record it first with: {command}") from None
    except json.JSONDecodeError as exc:
        raise FigureError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); re-record it with: {command}") from None


# ----------------------------------------------------------------------------------- 1. stages
def stage_samples(seed: int, images: int, size: int) -> list:
    """The first ``images`` toy images of ``seed`` with at least two classes (one class shows no
    competition between words). Not chosen by how well the model does: the rows show both."""
    from pnpovss.toyworld.world import make_sample

    out = []
    for index in range(1000):  # evaluation seeds hold 1000 images
        sample = make_sample(seed, index, size)
        if len(sample.labels) >= 2:
            out.append(sample)
        if len(out) == images:
            return out
    raise FigureError(f"toy-world seed {seed} has only {len(out)} images with 2+ classes; ask for fewer with --images")


def stage_maps(seg, sample) -> dict:
    """Every intermediate of the default pipeline on one toy image (the real code path: the final
    label map is ``Segmenter.segment``'s own, and the DropOut trace is checked to combine into it)."""
    import torch

    from pnpovss.dropout import salience_dropout

    cfg = seg.config
    res = seg.segment(sample.image, sample.labels, keep_all=True)  # the labels are known here
    bb = seg.backbone
    pixels = bb.preprocess([sample.image], seg.image_size(cfg))
    embeds = bb.encode_image(pixels)
    text = bb.build_text(cfg.prompt, [sample.labels])
    trace = salience_dropout(bb, pixels, embeds, text, cfg)
    if not np.allclose(trace.class_maps[0].numpy(), res.grid_maps, atol=1e-6):
        raise RuntimeError("the DropOut trace does not reproduce the pipeline's combined maps")
    attention = seg.class_grid_maps(pixels, embeds, [sample.labels], cfg.replace(saliency="attention", drop_iters=1))[0]
    grid = bb.grid(pixels.shape[-1])
    dropped = [torch.zeros(grid[0] * grid[1], dtype=torch.bool)] + [d[0] for d in trace.dropped]
    return {"result": res, "attention": attention, "passes": [p[0].numpy() for p in trace.passes],
            "dropped": [d.view(*grid).numpy() for d in dropped]}


def _norm(m: np.ndarray) -> np.ndarray:
    from pnpovss.postprocess import minmax

    return minmax(m[None].astype(np.float32))[0]


def _heat(plt, image: np.ndarray, grid_map: np.ndarray, dropped: np.ndarray | None = None) -> np.ndarray:
    """A map (grid or pixel resolution) in the 'jet' colours over a dimmed grey copy of the image;
    dropped patches in black. Grid maps are shown as blocks: the patch grid is their resolution."""
    h, w = image.shape[:2]

    def to_pixels(m):  # nearest-neighbour to the image size, exact for any grid
        if m.shape == (h, w):
            return m
        ys = np.arange(h) * m.shape[0] // h
        xs = np.arange(w) * m.shape[1] // w
        return m[ys][:, xs]

    value = to_pixels(_norm(grid_map))[..., None]
    colour = plt.get_cmap("jet")(value[..., 0])[..., :3]
    alpha = 0.25 + 0.65 * value  # low values let the image through, high ones hide it
    out = alpha * colour + (1 - alpha) * _grey(image) / 255.0
    if dropped is not None:
        out[to_pixels(dropped.astype(np.float32)) > 0.5] = 0.0
    return out


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> a lighter grey (H, W, 3) float copy: the maps and labels drawn over it stay readable."""
    return np.repeat(60.0 + 0.6 * image.astype(np.float32).mean(axis=2, keepdims=True), 3, axis=2)


def _label_overlay(image: np.ndarray, labels: np.ndarray, names: list[str]) -> np.ndarray:
    """The CLI's overlay (``NAME.overlay.png``, background left uncoloured) without its legend strip,
    drawn over a grey copy of the image at a stronger blend so the label colours stand out."""
    from pnpovss.visualize import overlay_image

    h, w = image.shape[:2]
    grey = _grey(image).astype(np.uint8)
    return np.asarray(overlay_image(grey, labels, names, alpha=0.8, skip_first=True).crop((0, 0, w, h)))


def _truth_labels(sample, names: list[str]) -> np.ndarray:
    """The toy mask (global class ids) as indices into this image's label list."""
    from pnpovss.toyworld.world import SHAPES

    lut = np.zeros(len(SHAPES) + 1, dtype=np.int64)
    for i, name in enumerate(names[1:], start=1):
        lut[SHAPES.index(name) + 1] = i
    return lut[sample.mask]


def draw_stages(args: argparse.Namespace):
    """Figure 1: one row per (image, class), one column per stage of the default pipeline."""
    import torch
    from matplotlib.patches import Patch

    from pnpovss import Segmenter
    from pnpovss.visualize import palette

    plt = matplotlib_pyplot()
    torch.manual_seed(0)
    seg = Segmenter.from_pretrained("toy")
    cfg = seg.config
    samples = stage_samples(args.seed, args.images, args.size)
    runs = [stage_maps(seg, s) for s in samples]
    passes = cfg.drop_iters
    heads = (["image", "truth", "raw\nattention", "pass 1:\nGradCAM"]
             + [f"pass {t + 1}" for t in range(1, passes)]
             + ["combined\n(all passes)", "after blur", "after CRF\n(labels)"])
    rows = [(s, r, c) for s, r in zip(samples, runs) for c in range(len(s.labels))]
    # fixed layout in inches (square panels, room for row labels, two-line headers and legends)
    panel, gap, left, right, top, bottom = 1.05, 0.06, 0.55, 1.2, 1.15, 0.08
    width = left + len(heads) * panel + (len(heads) - 1) * gap + right
    height = top + len(rows) * panel + (len(rows) - 1) * gap + bottom
    fig, axes = plt.subplots(len(rows), len(heads), figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=gap / panel, hspace=gap / panel)
    for row, (sample, run, c) in enumerate(rows):
        res = run["result"]
        name = sample.labels[c]
        truth = _truth_labels(sample, res.classes)
        own = truth == c + 1
        label = res.classes.index(name)
        inter = np.logical_and(res.labels == label, own).sum()
        union = np.logical_or(res.labels == label, own).sum()
        panels = [sample.image / 255.0, _label_overlay(sample.image, truth, res.classes) / 255.0,
                  _heat(plt, sample.image, run["attention"][c])]
        panels += [_heat(plt, sample.image, p[c], run["dropped"][t]) for t, p in enumerate(run["passes"])]
        panels += [_heat(plt, sample.image, res.grid_maps[c]), _heat(plt, sample.image, res.scores[label]),
                   _label_overlay(sample.image, res.labels, res.classes) / 255.0]
        for col, (ax, panel) in enumerate(zip(axes[row], panels)):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if 2 <= col < len(heads) - 1:  # the class's true outline on its maps
                ax.contour(own.astype(float), levels=[0.5], colors="white", linewidths=0.8)
            if row == 0:
                ax.set_title(heads[col])
            if 3 < col < 3 + passes and row == 0:
                ax.set_title(f"pass {col - 2}\n{int(run['dropped'][col - 3].sum())} dropped")
        axes[row][0].set_ylabel(f"image #{sample.index}\n{name}: IoU {100 * inter / max(union, 1):.0f}%", fontsize=9)
        if c == 0:  # one legend per image, in the CLI overlay's colours
            cols = palette(len(res.classes))
            swatches = [Patch(facecolor=np.array(LEGEND_GREY) / 255.0, edgecolor="black", label=res.classes[0])]
            swatches += [Patch(facecolor=cols[i] / 255.0, edgecolor="black", label=n)
                         for i, n in enumerate(res.classes) if i > 0]
            axes[row][-1].legend(handles=swatches,
                                 loc="upper left", bbox_to_anchor=(1.03, 1.0), fontsize=8, frameon=False)
    fig.suptitle(f"The default pipeline stage by stage: toy BLIP, held-out toy-world seed {args.seed}, the first "
                 f"{len(samples)} images with 2+ classes, one row per class\n"
                 f"caption 'a picture of ' + class names; layer {cfg.layer}, head "
                 f"{'mean' if cfg.head is None else cfg.head}, DropOut T = {passes}, k = {cfg.drop_k}, "
                 f"threshold {cfg.threshold}, blur sigma {cfg.blur_sigma}, CRF {cfg.crf_iters} iterations\n"
                 f"maps min-max normalised (blue 0 -> red 1) over a grey copy of the image; white: the class's "
                 f"true outline; black: patches dropped before that pass; labels in the CLI overlay's colours",
                 fontsize=8.5, x=(left + (width - left - right) / 2) / width, y=1 - 0.05 / height, va="top")
    return fig


# ----------------------------------------------------------------------------------- 2. ablation
TOY_COMMAND = "python bench/toyworld.py --seed 7 --images 200 --compiled-row --json bench/results/toyworld_seed7.json"
REFERENCE_ROWS = {"no_vlm": ("no VLM (colour heuristic)", "--"), "oracle_grid_maps": ("oracle grid maps (ceiling)", ":")}


def bench_module(name: str):
    """A sibling script of bench/ as a module (bench/ is not a package), for its row tables."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STAGE, DEFAULT, OTHER, OPTION = "#1f77b4", "#d62728", "#8c6d31", "#9aa9b8"


def draw_ablation(args: argparse.Namespace):
    """Figure 2: mIoU per row of the toy bench, table rows then options, in the JSON's order;
    colours say which rows are the pipeline's cumulative stages (``bench/toyworld.py``'s STAGES)."""
    plt = matplotlib_pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    stage_names = set(bench_module("toyworld").STAGES)
    data = read_json(args.toy_json, TOY_COMMAND)
    try:
        rows = [(name, row["miou"]) for name, row in data["rows"].items() if name not in REFERENCE_ROWS]
        options = [(name, row["miou"]) for name, row in data.get("options", {}).items()]
        refs = {name: data["rows"][name]["miou"] for name in REFERENCE_ROWS if name in data["rows"]}
        title = f"Toy world, held-out seed {data['seed']}, {data['images']} images: mIoU (%) of each row"
    except (KeyError, TypeError, AttributeError) as exc:
        raise FigureError(f"{args.toy_json} lacks {exc} (not a bench/toyworld.py result?); re-record it with: {TOY_COMMAND}") from None
    names = [n for n, _ in rows + options]
    values = [v for _, v in rows + options]
    colours = [DEFAULT if n == "full" else STAGE if n in stage_names else OTHER for n, _ in rows] + [OPTION] * len(options)
    fig, ax = plt.subplots(figsize=(8.0, 0.3 * len(names) + 2.2))
    y = np.arange(len(names))[::-1]
    ax.barh(y, values, color=colours, height=0.7)
    for yi, v in zip(y, values):
        ax.text(v + 0.8, yi, f"{v:.1f}", va="center", fontsize=8,
                bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    ax.set_yticks(y, [("full (default pipeline)" if n == "full" else n) for n in names], fontsize=8)
    handles = []
    for name, value in refs.items():
        text, style = REFERENCE_ROWS[name]
        ax.axvline(value, color="black", linestyle=style, linewidth=1)
        handles.append(Line2D([], [], color="black", linestyle=style, linewidth=1, label=f"{name}: {text}, {value:.1f}"))
    if options:
        ax.axhline(y[len(rows)] + 0.5, color="grey", linewidth=0.5)
        ax.text(99, y[len(rows)] + 0.1, "options", ha="right", va="center", fontsize=8, color="grey")
    handles += [Patch(color=STAGE, label="pipeline stages, each adding one step"), Patch(color=DEFAULT, label="full: the default pipeline"),
                Patch(color=OTHER, label="other table rows: " + ", ".join(n for n, c in zip(names, colours) if c == OTHER)),
                Patch(color=OPTION, label="options, measured beside the default")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.42, -0.09), ncol=2, fontsize=7.5, frameon=False)
    ax.set_xlim(0, 100)
    ax.set_xlabel("mIoU (%), background + 6 shapes")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------- 3. speed
SPEED_COMMAND = "python bench/speed.py --threads 1 --rounds 1 --json bench/results/speed_full.json"


def draw_speed(args: argparse.Namespace):
    """Figure 3: per (model, size, classes) group, seconds per image (log scale) and peak memory of
    every measured row, in the JSON's order; values as in ``bench/speed.py --table``."""
    plt = matplotlib_pyplot()
    data = read_json(args.speed_json, SPEED_COMMAND)
    try:
        rows = [r for r in data["rows"] if r.get("seconds")]
        names = list(dict.fromkeys(r["name"] for r in rows))
        groups = list(dict.fromkeys((r["model"], r["image_size"], r["classes"]) for r in rows))
        cell = {(r["model"], r["image_size"], r["classes"], r["name"]): r for r in rows}
        threads = data.get("threads")
    except (KeyError, TypeError) as exc:
        raise FigureError(f"{args.speed_json} lacks {exc} (not a bench/speed.py result?); re-record it with: {SPEED_COMMAND}") from None
    if not rows:
        raise FigureError(f"{args.speed_json} has no measured rows; re-record it with: {SPEED_COMMAND}")
    cmap = plt.get_cmap("tab10")
    colour = {n: cmap(i % 10) for i, n in enumerate(names)}
    bar = 0.8 / len(names)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, sharey=True, figsize=(10.5, 0.62 * len(groups) * len(names) / 5 + 2.0),
                                     gridspec_kw={"width_ratios": [1.5, 1]})
    for g, key in enumerate(groups):
        for i, name in enumerate(names):
            r = cell.get((*key, name))
            if r is None:
                continue
            y = len(groups) - 1 - g + 0.4 - (i + 0.5) * bar
            ax_t.barh(y, r["seconds"], height=bar * 0.9, color=colour[name], label=name if g == 0 else None)
            ax_t.text(r["seconds"] * 1.04, y, f"{r['seconds']:.1f} s", va="center", fontsize=6.5)
            if r.get("peak_mb"):
                gb = r["peak_mb"] / 1024
                ax_m.barh(y, gb, height=bar * 0.9, color=colour[name])
                ax_m.text(gb + 0.2, y, f"{gb:.1f}", va="center", fontsize=6.5)
    ticks = [len(groups) - 1 - g for g in range(len(groups))]
    ax_t.set_yticks(ticks, [f"{m} {px} px\n{n} class{'es' if n != 1 else ''}" for m, px, n in groups], fontsize=8)
    for g in range(1, len(groups)):
        for ax in (ax_t, ax_m):
            ax.axhline(len(groups) - g - 0.5, color="grey", linewidth=0.4)
    ax_t.set_xscale("log")
    longest = max(r["seconds"] for r in rows)
    ax_t.set_xlim(min(r["seconds"] for r in rows) / 2, longest * 2.2)
    ax_t.set_xlabel("seconds per image (log scale; median image)")
    ax_t.set_title("time per image, GradCAM + Salience DropOut (T = 4)")
    ax_m.set_xlim(0, max(r.get("peak_mb") or 0 for r in rows) / 1024 * 1.18)
    ax_m.set_xlabel("peak resident memory (GB)")
    ax_m.set_title("peak memory")
    for ax in (ax_t, ax_m):
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_ylim(-0.5, len(groups) - 0.5)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[n]) for n in names]
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
    fig.suptitle(f"Speed bench: full-size architectures, random weights, CPU, {threads} torch thread"
                 f"{'s' if threads != 1 else ''} ({display_path(args.speed_json)})", fontsize=10)
    fig.tight_layout(rect=(0, 0.25 / fig.get_figheight(), 1, 1))
    return fig


# ----------------------------------------------------------------------------------- 4. presence
KEPT, DROPPED, VETOED = "#2e7d32", "#bdbdbd", "#e65100"


def draw_presence(args: argparse.Namespace):
    """Figure 4: per image (the stages figure's), each of the six shapes as a candidate: its ITM
    match probability (log-odds axis, so 0.99 and 0.999 stay apart), kept, dropped at the
    threshold, or dropped by CLIP's second opinion (between the threshold and presence_confident),
    CLIP's share of its best candidate beside each bar, and a tick on the shapes really in the image."""
    plt = matplotlib_pyplot()
    from matplotlib.patches import Patch

    from pnpovss import Segmenter
    from pnpovss.toyworld.world import SHAPES

    seg = Segmenter.from_pretrained("toy")
    threshold, confident = seg.config.presence_threshold, seg.config.presence_confident
    second = seg.config.presence_clip_ratio > 0
    samples = stage_samples(args.seed, args.images, args.size)
    fig, axes = plt.subplots(len(samples), 2, figsize=(7.5, 1.9 * len(samples) + 0.6),
                             gridspec_kw={"width_ratios": [1, 3.2]}, squeeze=False)
    logit = lambda p: np.log(np.clip(p, 1e-4, 1 - 1e-4) / (1 - np.clip(p, 1e-4, 1 - 1e-4)))  # noqa: E731
    for (ax_img, ax), sample in zip(axes, samples):
        pres = seg.segment(sample.image, list(SHAPES)).presence
        ax_img.imshow(sample.image)
        ax_img.set_axis_off()
        ax_img.set_title(f"seed {sample.seed}, image {sample.index}", fontsize=8)
        y = np.arange(len(SHAPES))[::-1]
        colour = [KEPT if c in pres.kept else VETOED if threshold <= p < confident and second else DROPPED
                  for c, p in zip(SHAPES, pres.scores)]
        ax.barh(y, logit(np.asarray(pres.scores)) - logit(1e-4), left=logit(1e-4), height=0.65, color=colour)
        ax.axvline(logit(threshold), color="black", linestyle="--", linewidth=1)
        if second:
            ax.axvline(logit(confident), color="black", linestyle=":", linewidth=1)
        for i, (yi, score) in enumerate(zip(y, pres.scores)):
            share = f"   CLIP {pres.clip_scores[i] / max(pres.clip_scores):.2g}" if pres.clip_scores else ""
            ax.text(logit(1e-4) + 0.1, yi, f"{score:.3f}{share}", va="center", fontsize=7)
        ax.set_yticks(y, [f"{c}  ✓" if c in sample.labels else c for c in SHAPES], fontsize=8)
        ticks = [1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999]
        ax.set_xticks([logit(t) for t in ticks], [f"{t:g}" for t in ticks], fontsize=7)
        ax.set_xlim(logit(1e-4), logit(1 - 1e-4))
    axes[-1, 1].set_xlabel("ITM match probability of \"a picture of <class>\" (log-odds axis)", fontsize=8)
    handles = [Patch(color=KEPT, label="kept (in the caption)"), Patch(color=DROPPED, label="dropped"),
               plt.Line2D([], [], color="black", linestyle="--", label=f"presence_threshold {threshold:g}")]
    if second:
        handles[2:2] = [Patch(color=VETOED, label=f"dropped by CLIP (share < {seg.config.presence_clip_ratio:g})")]
        handles.append(plt.Line2D([], [], color="black", linestyle=":", label=f"presence_confident {confident:g}"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Class presence: all six shapes as candidates (✓ = really in the image)", fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if second else 0.06, 1, 1))
    return fig


# ----------------------------------------------------------------------------------- 5. tuning
def draw_tuning(args: argparse.Namespace):
    """Figure 5: per seed pair (worst first), the held-out mIoU gain of tune's preset over the
    defaults with the default selection, beside the paper's reward with argmax on the same trials."""
    plt = matplotlib_pyplot()
    data = read_json(args.tune_json, TUNE_COMMAND)
    try:
        rows = sorted(data["pairs"], key=lambda r: r["gain"])
        labels = [f"{r['tune_seed']}->{r['held_out_seed']}" for r in rows]
        ours, paper = [r["gain"] for r in rows], [r["paper_gain"] for r in rows]
        summary = data["summary"]
    except (KeyError, TypeError) as exc:
        raise FigureError(f"{args.tune_json} lacks {exc} (not a bench/tune_robustness.py result?); re-record it "
                          f"with: {TUNE_COMMAND}") from None
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(rows) + 2.5), 4.2))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, ours, width=0.4, color="#1565c0", label=f"default (--select robust): mean {summary['mean_gain']:+.1f}, "
                                                            f"worst {summary['worst_gain']:+.1f}")
    ax.bar(x + 0.2, paper, width=0.4, color="#bdbdbd", label=f"paper's reward, argmax: mean {summary['paper_mean_gain']:+.1f}, "
                                                              f"worst {summary['paper_worst_gain']:+.1f}")
    for k, g in enumerate(ours):
        ax.text(k - 0.2, g + (0.4 if g >= 0 else -0.4), f"{g:+.1f}", ha="center", va="bottom" if g >= 0 else "top",
                fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axhline(-1, color="#c62828", linewidth=0.8, linestyle="--", label="-1 mIoU (the bound)")
    ax.set_xticks(x, labels, fontsize=8, rotation=30)
    ax.set_xlabel("tuning seed -> held-out seed (worst pair first)")
    ax.set_ylabel("held-out mIoU gain over the defaults")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    fig.suptitle(f"pnpovss tune on {data['dataset']}: {data['tune_images']} tuning images, {data['iters']} trials, "
                 f"{data['eval_images']} held-out images ({display_path(args.tune_json)})", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------- registry
FIGURES: dict[str, tuple[str, Callable[[argparse.Namespace], object]]] = {
    "stages": ("stages.png", draw_stages),
    "ablation": ("toyworld_ablation.png", draw_ablation),
    "speed": ("speed.png", draw_speed),
    "presence": ("presence.png", draw_presence),
    "tuning": ("tune_robustness.png", draw_tuning),
}
"""name -> (file name under --out, function(args) -> matplotlib figure). The docs use these names."""


def write_figures(args: argparse.Namespace) -> list[Path]:
    """Draw the chosen figures and write each PNG atomically; all are drawn before any is written,
    so a failing figure leaves no half-updated set behind."""
    from pnpovss.fileio import atomic_write_bytes

    plt = matplotlib_pyplot()
    rendered = []
    for name in args.only or list(FIGURES):
        filename, draw = FIGURES[name]
        fig = draw(args)
        rendered.append((Path(args.out) / filename, png_bytes(fig, args.dpi)))
        plt.close(fig)
    for path, data in rendered:
        atomic_write_bytes(path, data)
    return [path for path, _ in rendered]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for the PNGs (the docs': docs)")
    ap.add_argument("--only", action="append", choices=list(FIGURES), help="draw only this figure (repeatable)")
    ap.add_argument("--seed", type=int, default=7, help="toy-world seed of the stages figure (7: held out)")
    ap.add_argument("--images", type=int, default=3, help="images in the stages figure")
    ap.add_argument("--size", type=int, default=96, help="toy image size in pixels for the stages figure")
    ap.add_argument("--toy-json", type=Path, default=TOY_JSON, help="toy bench result for the ablation chart")
    ap.add_argument("--speed-json", type=Path, default=SPEED_JSON, help="speed bench result for the speed chart")
    ap.add_argument("--tune-json", type=Path, default=TUNE_JSON, help="tuning-robustness record for the tuning chart")
    ap.add_argument("--dpi", type=int, default=100)
    args = ap.parse_args(argv)
    if args.images < 1:
        ap.error("--images must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    try:
        for path in write_figures(args):
            print(path)
    except FigureError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
