"""Seconds per image and peak memory of PnP-OVSS against the reference computation pattern, on
full-size architectures with random weights (no download). Prints JSON; not a test.

    python bench/speed.py --json speed.json          # everything (long: hours on 2 CPU cores)
    python bench/speed.py --quick --json quick.json  # BLIP at 384 px, 1 and 5 classes: ~4 min
    python bench/speed.py --table speed.json         # the docs table of a result
    python bench/speed.py --quick --device cuda --json gpu.json   # the GPU check (fp32 vs fp16/bf16, batches)

Rows, per (model, image size, number of classes), T = 4 Salience DropOut passes:
  reference_pattern       what the reference code does per image: at every pass, forward and backward
                          through the whole network (vision encoder included, every weight requiring
                          grad), attention and gradient of ALL cross-attention layers kept and GradCAM
                          computed for every (layer, head); the chosen layer/head then drives the drop
  pnpovss                 our default pipeline: each pass re-encodes the masked image without autograd,
                          backward runs from the match logit to the chosen layer only
  pnpovss_bf16            pnpovss with dtype="bf16" (vision encoder under bf16 autocast, its linear
                          layers prepacked on a CPU; text side and maps fp32; see pnpovss.precision);
                          on CUDA only where the GPU supports bf16
  pnpovss_bf16_unpacked   pnpovss_bf16 with ExecutionOptions(prepack=False) (autocast's linear, which
                          recasts and reorders each weight per call): what prepacking brings
  pnpovss_fp16            the same in fp16 (CUDA only)
  pnpovss_batch, pnpovss_bf16_batch, pnpovss_fp16_batch
                          pnpovss (fp32 / bf16 / fp16) on --batch images per forward/backward;
                          ``seconds`` is per image (the batch's time / its size)
  pnpovss_compiled, pnpovss_bf16_compiled
                          pnpovss (fp32 / bf16) with backbone.compile_vision: the vision encoder through
                          torch.compile (compiled during the warm-up image, which is not timed)
  pnpovss_eager_vision    pnpovss with the vision tower's own eager attention instead of fused
                          attention (BLIP only): how much of the gain the fused attention brings
  pnpovss_attention_drop  drop_mode="attention": one vision pass; dropped patches are hidden from the
                          cross-attention instead of re-encoded (different maps: see max_abs_diff)
  floor                   T vision forwards without grad + one text-side forward/backward: the least
                          any implementation of the method can cost
Each row runs in a fresh subprocess, so ``peak_mb`` (ru_maxrss at its end) is that row's own. One
warm-up image (one pass) is excluded; ``seconds`` is the median over the measured images of the time
from the preprocessed tensor to the combined class maps (blur and CRF, shared by all rows and ~0.05 s,
are left out). ``max_abs_diff`` compares a row's class maps with the reference pattern's;
``max_abs_diff_vs_fp32`` a reduced-precision or batched row's with ``pnpovss``'s (same images), and
``drop_agreement_vs_fp32`` gives, per DropOut pass, the fraction of the patches dropped so far that
``pnpovss`` dropped too. On CUDA each row also records ``gpu_peak_mb`` (torch.cuda.max_memory_allocated)
and every row its ``images_per_second`` (1 / seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pnpovss import PipelineConfig, Segmenter
from pnpovss.backbones.base import Backbone, TextBatch
from pnpovss.dropout import mask_patches, pool_classes, select_patches
from pnpovss.gradcam import cam_from_attention, layer_attention_and_grad
from pnpovss.hooks import capture_outputs
from pnpovss.precision import resolve_precision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tools/ (not installed)

ROWS = ("reference_pattern", "pnpovss", "pnpovss_bf16", "pnpovss_fp16", "pnpovss_batch", "pnpovss_bf16_batch",
        "pnpovss_compiled", "pnpovss_bf16_compiled", "pnpovss_bf16_unpacked",
        "pnpovss_fp16_batch", "pnpovss_eager_vision", "pnpovss_attention_drop", "floor")
TABLE_ROWS = ("reference_pattern", "pnpovss", "pnpovss_bf16", "pnpovss_fp16", "pnpovss_eager_vision",
              "pnpovss_attention_drop", "floor")
CUDA_ONLY = ("pnpovss_fp16", "pnpovss_fp16_batch")
CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train",
           "tv monitor"]  # Pascal VOC's 20; n classes = the first n
MODELS = {"blip": "BLIP ITM-large (ViT-L/16, random weights)",
          "bridgetower": "BridgeTower-large (ViT-L/14, RoBERTa-large, random weights)"}
MEMORY_MARGIN_MB = 1500


# ------------------------------------------------------------------------------------ models and data
def build_backbone(model: str, seed: int = 0, device: str = "cpu", words: Sequence[str] = ()) -> Backbone:
    """A full-size random-weight backbone; the same seed gives the same weights in every process.
    ``words``: more class names its (made-up) tokenizer should spell."""
    from tools import testing

    words = [*testing.WORDS, *" ".join([*CLASSES, *words]).replace(",", " ").split()]
    if model == "blip":
        from transformers import BertTokenizerFast, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

        from pnpovss.backbones.blip import BlipBackbone

        tokenizer = BertTokenizerFast(vocab=testing.wordpiece_vocab(words), do_lower_case=True)
        tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
        torch.manual_seed(seed)
        net = BlipForImageTextRetrieval(testing.blip_itm_large_config())
        processor = BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tokenizer)
        return BlipBackbone(net.to(device), processor, "random:" + model)
    if model == "bridgetower":
        from transformers import BridgeTowerForImageAndTextRetrieval, BridgeTowerImageProcessor, BridgeTowerProcessor

        from pnpovss.backbones.bridgetower import BridgeTowerBackbone

        tokenizer = testing.byte_bpe_tokenizer(words, vocab_size=600)
        torch.manual_seed(seed)
        net = BridgeTowerForImageAndTextRetrieval(testing.bridgetower_large_config(tokenizer))
        processor = BridgeTowerProcessor(image_processor=BridgeTowerImageProcessor(), tokenizer=tokenizer)
        return BridgeTowerBackbone(net.to(device), processor, "random:" + model)
    raise SystemExit(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


def bench_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """480x640 images of coloured rectangles and discs on a gradient: content does not change cost."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640]
    out = []
    for _ in range(count):
        img = np.stack([xx / 640 * 255, yy / 480 * 255, np.full_like(xx, 128)], axis=-1).astype(np.float64)
        for _ in range(6):
            cy, cx, r = rng.integers(40, 440), rng.integers(40, 600), rng.integers(20, 120)
            shape = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2 if rng.random() < 0.5 else (
                (abs(yy - cy) < r) & (abs(xx - cx) < r * 0.7))
            img[shape] = rng.integers(0, 256, 3)
        out.append(img.astype(np.uint8))
    return out


# ------------------------------------------------------------------------------------ the rows
Maps = list[torch.Tensor]
Dropped = list[torch.Tensor]
"""Cumulative (B, P) dropped-patch masks after each DropOut pass but the last."""


def public_match_logit(backbone: Backbone, pixels: torch.Tensor, text: TextBatch) -> torch.Tensor:
    """The match logit by the model's own public forward, vision encoder and all."""
    resize = {"interpolate_pos_encoding": pixels.shape[-1] != backbone.native_image_size}
    out = backbone.model(input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=pixels, **resize)
    scores = out.itm_score if hasattr(out, "itm_score") else out.logits
    return scores[:, 1]


def reference_pattern(backbone: Backbone, pixels: torch.Tensor, text: TextBatch,
                      cfg: PipelineConfig) -> tuple[Maps, Dropped]:
    """The reference's per-image loop: whole-network forward/backward with weight gradients at every
    pass, GradCAM of every layer and head; the chosen ones select the patches to drop."""
    model, grid = backbone.model, backbone.grid(pixels.shape[-1])
    layers = list(range(1, backbone.num_layers + 1))
    heads = cfg.heads_tuple() or tuple(range(backbone.num_heads))
    dropped = torch.zeros(pixels.shape[0], grid[0] * grid[1], dtype=torch.bool, device=pixels.device)
    totals: Maps | None = None
    history: Dropped = []
    model.requires_grad_(True)
    try:
        for t in range(cfg.drop_iters):
            model.zero_grad()
            with torch.enable_grad(), capture_outputs(backbone.cross_attention_modules(layers)) as store:
                logit = public_match_logit(backbone, mask_patches(pixels, dropped, grid) if t else pixels, text)
                for attn in store.values():
                    attn.retain_grad()
                logit.sum().backward()
            with torch.no_grad():
                cams = torch.stack([torch.stack([cam_from_attention(store[layer], store[layer].grad, (h,))
                                                 for h in range(backbone.num_heads)]) for layer in layers])
                maps = cams[cfg.layer - 1, list(heads)].mean(dim=0) * (~dropped)[:, None, :]
                per_class = pool_classes(maps, text.class_tokens)
                weight = 2.0 if t == 0 and cfg.count_first_twice else 1.0
                totals = [weight * m for m in per_class] if totals is None else [a + m for a, m in zip(totals, per_class)]
                saliency = torch.stack([m.sum(dim=0) for m in per_class])
                dropped = dropped | select_patches(saliency, dropped, None if cfg.halving else cfg.drop_k)
                if t < cfg.drop_iters - 1:
                    history.append(dropped.clone())
    finally:
        model.requires_grad_(False)
        model.zero_grad(set_to_none=True)
    assert totals is not None
    return totals, history


def pnpovss(backbone: Backbone, pixels: torch.Tensor, text: TextBatch, cfg: PipelineConfig) -> tuple[Maps, Dropped]:
    """What ``Segmenter`` runs before post-processing, in ``cfg.dtype`` (its own methods)."""
    seg = Segmenter(backbone, cfg)
    out = seg.dropout_maps(pixels, seg.encode(pixels, cfg), text, cfg)
    return [m.flatten(1) for m in out.class_maps], out.dropped


def floor(backbone: Backbone, pixels: torch.Tensor, text: TextBatch, cfg: PipelineConfig) -> tuple[Maps, Dropped]:
    """T vision passes without grad, one text-side forward/backward: a lower bound, not a method."""
    grid = backbone.grid(pixels.shape[-1])
    dropped = torch.zeros(pixels.shape[0], grid[0] * grid[1], dtype=torch.bool, device=pixels.device)
    embeds = [backbone.encode_image(mask_patches(pixels, dropped, grid)) for _ in range(cfg.drop_iters)]
    layer_attention_and_grad(backbone, embeds[0], text, [cfg.layer])
    return [], []


def pnpovss_eager_vision(backbone: Backbone, pixels: torch.Tensor, text: TextBatch,
                         cfg: PipelineConfig) -> tuple[Maps, Dropped]:
    """``pnpovss`` with fused vision attention switched off."""
    backbone.fused_vision_attention = False
    return pnpovss(backbone, pixels, text, cfg)


def with_dtype(dtype: str, compiled: bool = False, packed: bool = True
               ) -> Callable[[Backbone, torch.Tensor, TextBatch, PipelineConfig], tuple[Maps, Dropped]]:
    def row(bb: Backbone, px: torch.Tensor, text: TextBatch, cfg: PipelineConfig) -> tuple[Maps, Dropped]:
        bb.execution = bb.execution.replace(compile_vision=compiled, prepack=packed)
        return pnpovss(bb, px, text, cfg.replace(dtype=dtype))

    return row


ROW_FUNCS: dict[str, Callable[[Backbone, torch.Tensor, TextBatch, PipelineConfig], tuple[Maps, Dropped]]] = {
    "reference_pattern": reference_pattern,
    "pnpovss": pnpovss,
    "pnpovss_bf16": with_dtype("bf16"),
    "pnpovss_fp16": with_dtype("fp16"),
    "pnpovss_batch": pnpovss,
    "pnpovss_bf16_batch": with_dtype("bf16"),
    "pnpovss_fp16_batch": with_dtype("fp16"),
    "pnpovss_compiled": with_dtype("fp32", compiled=True),
    "pnpovss_bf16_compiled": with_dtype("bf16", compiled=True),
    "pnpovss_bf16_unpacked": with_dtype("bf16", packed=False),
    "pnpovss_eager_vision": pnpovss_eager_vision,
    "pnpovss_attention_drop": lambda bb, px, text, cfg: pnpovss(bb, px, text, cfg.replace(drop_mode="attention")),
    "floor": floor,
}


# ------------------------------------------------------------------------------------ child process
def limit_address_space() -> None:
    """Cap this process at what the machine has free (minus a margin), so that a row that does not
    fit fails with an allocation error we can report, instead of waking the kernel's OOM killer."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kib = lambda v: int(v.split()[0]) * 1024  # noqa: E731
    limit = kib(status["VmSize"]) + kib(meminfo["MemAvailable"]) - MEMORY_MARGIN_MB * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def gflops() -> float:
    """Matmul throughput right now: on a shared machine it swings 2-3x within minutes, so every
    timed image records it beside its seconds."""
    a = torch.randn(1024, 1024)
    start = time.perf_counter()
    for _ in range(8):
        a @ a
    return 8 * 2 * 1024**3 / (time.perf_counter() - start) / 1e9


def run_row(spec: dict[str, Any], maps_path: Path) -> dict[str, Any]:
    """Build the model, warm up on one pass, time ``spec['images']`` images (in batches of
    ``spec['batch']`` for the batch rows); save their maps and dropped patches."""
    torch.set_num_threads(spec["threads"])
    device = spec.get("device", "cpu")
    cuda = device.startswith("cuda")
    if not cuda:  # a CUDA context reserves far more address space than it uses
        limit_address_space()
    row = {k: spec[k] for k in ("name", "model", "image_size", "classes")}
    batch = spec.get("batch", 1) if spec["name"].endswith("_batch") else 1
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    try:
        backbone = build_backbone(spec["model"], device=device)
        cfg = PipelineConfig().replace(**backbone.pipeline_defaults).replace(
            image_size=spec["image_size"], drop_iters=spec["drop_iters"])
        names = CLASSES[: spec["classes"]]
        count = max(spec["images"], batch)
        images = backbone.preprocess(bench_images(count + 1), spec["image_size"])
        fn = ROW_FUNCS[spec["name"]]
        fn(backbone, images[:1], backbone.build_text(cfg.prompt, [names]), cfg.replace(drop_iters=1))  # warm-up
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds, speeds, maps, drops = [], [], [], []
        for i in range(1, count + 1, batch):
            pixels = images[i : i + batch]
            text = backbone.build_text(cfg.prompt, [names] * len(pixels))
            speeds.append(gflops())
            sync()
            start = time.perf_counter()
            out, dropped = fn(backbone, pixels, text, cfg)
            sync()
            seconds += [(time.perf_counter() - start) / len(pixels)] * len(pixels)
            maps += [m.float().cpu().numpy() for m in out]
            drops += [torch.stack([d[b] for d in dropped]).cpu().numpy() if dropped else None
                      for b in range(len(pixels))] if out else []
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and not any(w in str(exc).lower() for w in ("alloc", "out of memory")):
            raise
        row.update(skipped=f"out of memory ({' '.join(str(exc).split())[:120]})")
        return row
    if maps:
        np.savez(maps_path, **{f"map{j}": m for j, m in enumerate(maps)},
                 **{f"drop{j}": d for j, d in enumerate(drops) if d is not None})
    row.update(seconds_each=seconds, gflops_each=speeds, layer=cfg.layer, head=cfg.head, batch=batch, device=device,
               peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, drop_iters=cfg.drop_iters)
    if cuda:
        row.update(gpu_peak_mb=torch.cuda.max_memory_allocated() / 2**20, gpu=torch.cuda.get_device_name())
    return row


# ------------------------------------------------------------------------------------ parent
def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (model, size, classes, row) to measure, heaviest sizes last."""
    sizes = {"blip": [384] if args.quick else [384, 768], "bridgetower": [770]}
    classes = {"blip": [1, 5] if args.quick else [1, 5, 20],
               "bridgetower": [int(c) for c in args.bridgetower_classes.split(",")]}
    models = ["blip"] if args.quick else args.models.split(",")
    specs = []
    for model in models:
        for size in sizes[model]:
            images = args.images or (1 if size >= 700 or args.quick else 2)
            for n in classes[model]:
                for name in (args.rows.split(",") if args.rows else ROWS):
                    if name == "pnpovss_eager_vision" and model != "blip":
                        continue  # only BLIP's vision tower gets fused attention
                    if not row_runs_on(name, args.device):
                        continue
                    specs.append(dict(name=name, model=model, image_size=size, classes=n, images=images,
                                      drop_iters=args.drop_iters, threads=args.threads, device=args.device,
                                      batch=args.batch))
    return specs


def row_runs_on(name: str, device: str) -> bool:
    """fp16 rows on CUDA only; bf16 rows where the device supports bf16 (any CPU: emulated where
    it is not native, which the row's time then shows)."""
    if name in CUDA_ONLY:
        return device.startswith("cuda")
    if "bf16" in name:
        try:
            resolve_precision("bf16", device)
        except Exception:
            return False
    return True


def key_of(row: dict[str, Any]) -> tuple:
    return row["model"], row["image_size"], row["classes"], row["name"]


def run_child(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One row in a fresh interpreter, so that its peak RSS is its own."""
    stem = "-".join(str(k) for k in key_of(spec))
    out, maps = workdir / f"{stem}.json", workdir / f"{stem}.npz"
    print(f"[speed] {stem} ...", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec), "--child-out", str(out),
                           "--child-maps", str(maps)], stderr=subprocess.PIPE, text=True)
    if proc.returncode or not out.exists():
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode} (killed?)"]
        row = {k: spec[k] for k in ("name", "model", "image_size", "classes")}
        row["skipped"] = f"child failed: {tail[0][:200]}"
    else:
        row = json.loads(out.read_text())
    row["maps"] = str(maps) if maps.exists() else None
    shown = [round(s, 1) for s in row.get("seconds_each", [])]
    print(f"[speed] {stem}: {shown} s, {row.get('peak_mb', 0):.0f} MB {row.get('skipped', '')}", file=sys.stderr,
          flush=True)
    return row


def merge(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rounds of the same row -> one row: median and min over all measured images, max peak."""
    merged: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        row = merged.setdefault(key_of(run), {**run, "seconds_each": [], "gflops_each": [], "peak_mb": 0.0})
        row["seconds_each"] += run.get("seconds_each", [])
        row["gflops_each"] += run.get("gflops_each", [])
        row["peak_mb"] = max(row["peak_mb"] or 0.0, run.get("peak_mb") or 0.0)
        row["maps"] = row.get("maps") or run.get("maps")
        if run.get("seconds_each"):
            row.pop("skipped", None)
    out = []
    for row in merged.values():
        secs = row.pop("seconds_each")
        speeds = row.pop("gflops_each")
        row.update(seconds=round(statistics.median(secs), 2) if secs else None,
                   seconds_min=round(min(secs), 2) if secs else None,
                   seconds_each=[round(s, 2) for s in secs], peak_mb=round(row["peak_mb"]) or None,
                   gflops=round(statistics.median(speeds)) if speeds else None)
        out.append(row)
    return out


def compare_maps(base: str, other: str) -> dict[str, Any]:
    """Largest map difference over the images both files hold, the base maps' largest value, and
    per DropOut pass the mean fraction of the base's dropped patches that ``other`` dropped too."""
    with np.load(base) as a, np.load(other) as b:
        keys = [k for k in a.files if k.startswith("map") and k in b.files]
        drops = [k for k in a.files if k.startswith("drop") and k in b.files]
        out: dict[str, Any] = {"max_abs_diff": float(max(np.abs(a[k] - b[k]).max() for k in keys)),
                               "base_map_max": float(max(np.abs(a[k]).max() for k in keys))}
        if drops:
            per_pass = np.mean([(a[k] & b[k]).sum(axis=1) / np.maximum(a[k].sum(axis=1), 1) for k in drops], axis=0)
            out["drop_agreement"] = [round(float(v), 4) for v in per_pass]
    return out


def with_diffs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the JSON: ``max_abs_diff`` of each row's maps against the reference pattern's (same
    model, size and classes) and the reference maps' own largest value, for scale; for the
    reduced-precision and batch rows also against ``pnpovss`` (fp32, one image at a time)."""
    ref = {key_of(r)[:3]: r for r in rows if r["name"] == "reference_pattern"}
    fp32 = {key_of(r)[:3]: r for r in rows if r["name"] == "pnpovss"}
    out = []
    for row in rows:
        base = ref.get(key_of(row)[:3])
        clean = {k: v for k, v in row.items() if k != "maps"}
        clean["max_abs_diff"] = None
        if clean.get("seconds"):
            clean["images_per_second"] = round(1 / clean["seconds"], 4)
        if base and base.get("maps") and row.get("maps"):
            diff = compare_maps(base["maps"], row["maps"])
            clean["max_abs_diff"], clean["ref_map_max"] = diff["max_abs_diff"], diff["base_map_max"]
        ours = fp32.get(key_of(row)[:3])
        if row["name"] != "pnpovss" and row["name"].startswith("pnpovss_") and ours and ours.get("maps") \
                and row.get("maps") and ("16" in row["name"] or "batch" in row["name"]):
            diff = compare_maps(ours["maps"], row["maps"])
            clean["max_abs_diff_vs_fp32"] = diff["max_abs_diff"]
            clean["drop_agreement_vs_fp32"] = diff.get("drop_agreement")
        out.append(clean)
    return out


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Against the targets: speed-up over the reference pattern, cost over the floor, memory over
    the reference (from medians; ``*_min`` from the fastest image, the least disturbed by others)."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault(key_of(r)[:3], {})[r["name"]] = r
    out = []
    for (model, size, n), group in groups.items():
        ours, ref, low, attn, bf16, fp16 = (group.get(k) or {} for k in (
            "pnpovss", "reference_pattern", "floor", "pnpovss_attention_drop", "pnpovss_bf16", "pnpovss_fp16"))
        entry: dict[str, Any] = dict(model=model, image_size=size, classes=n)
        for stat in ("seconds", "seconds_min"):
            tag = stat.replace("seconds", "")
            if ours.get(stat) and ref.get(stat):
                entry[f"speedup_vs_reference{tag}"] = round(ref[stat] / ours[stat], 2)
            if ours.get(stat) and low.get(stat):
                entry[f"pnpovss_over_floor{tag}"] = round(ours[stat] / low[stat], 2)
            if attn.get(stat) and ref.get(stat):
                entry[f"attention_drop_speedup_vs_reference{tag}"] = round(ref[stat] / attn[stat], 2)
            for dtype, low_p in (("bf16", bf16), ("fp16", fp16)):
                if low_p.get(stat) and ours.get(stat):
                    entry[f"{dtype}_over_pnpovss{tag}"] = round(low_p[stat] / ours[stat], 2)
                if low_p.get(stat) and ref.get(stat):
                    entry[f"{dtype}_speedup_vs_reference{tag}"] = round(ref[stat] / low_p[stat], 2)
            for single, batched in (("pnpovss", "pnpovss_batch"), ("pnpovss_bf16", "pnpovss_bf16_batch"),
                                    ("pnpovss_fp16", "pnpovss_fp16_batch")):
                one, many = group.get(single) or {}, group.get(batched) or {}
                if one.get(stat) and many.get(stat):
                    entry[f"{batched}_gain_per_image{tag}"] = round(one[stat] / many[stat], 2)
        if ours.get("peak_mb") and ref.get("peak_mb"):
            entry["memory_vs_reference"] = round(ours["peak_mb"] / ref["peak_mb"], 2)
        out.append(entry)
    return out


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows = with_diffs(merge(runs))
    return json.dumps({"rows": rows, "ratios": ratios(rows), "threads": args.threads, "rounds": args.rounds,
                       "device": args.device, "batch": args.batch, "torch": torch.__version__,
                       "cpu_count": os.cpu_count()}, indent=1)


def markdown(result: dict[str, Any]) -> str:
    """The docs table: one line per (model, size, classes), seconds and MB per row."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in result["rows"]:
        groups.setdefault(key_of(r)[:3], {})[r["name"]] = r
    lines = ["| model | px | classes | " + " | ".join(TABLE_ROWS) + " | speed-up | ours / floor | max abs diff (ref. max) |",
             "| --- | --- | --- |" + " --- |" * (len(TABLE_ROWS) + 3)]
    # derived from the rows every time, never read back from the file
    by_key = {(r["model"], r["image_size"], r["classes"]): r for r in ratios(result["rows"])}
    for key, group in groups.items():
        cells = []
        for name in TABLE_ROWS:
            r = group.get(name, {})
            cells.append(f"{r['seconds']:.1f} s, {r['peak_mb'] / 1024:.1f} GB" if r.get("seconds")
                         else r.get("skipped", "-").split(" (")[0])
        ratio = by_key.get(key, {})
        ours = group.get("pnpovss", {})
        diff = (f"{ours['max_abs_diff']:.1g} ({ours['ref_map_max']:.1g})"
                if ours.get("max_abs_diff") is not None else "-")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) +
                     f" | {ratio.get('speedup_vs_reference', '-')}x | {ratio.get('pnpovss_over_floor', '-')}x | {diff} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the JSON here (rewritten after every row)")
    parser.add_argument("--quick", action="store_true",
                        help="BLIP at 384 px with 1 and 5 classes only, 1 image and 1 round per row (~4 min)")
    parser.add_argument("--models", default="blip,bridgetower")
    parser.add_argument("--bridgetower-classes", default="1,20", help="class counts for BridgeTower (its rows are slow)")
    parser.add_argument("--rows", default=None,
                        help=f"comma list of rows [default: all that run on --device: {','.join(ROWS)}]")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the GPU check); rows run one at a time")
    parser.add_argument("--batch", type=int, default=4, help="images per forward/backward in the *_batch rows")
    parser.add_argument("--images", type=int, default=0, help="measured images per row and round (default 2; 1 at >= 700 px)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="repeat the rows below 700 px this many times, interleaved, to spread out other load "
                             "[default: 2; 1 with --quick]")
    parser.add_argument("--drop-iters", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--table", type=Path, help="instead: print the markdown table of a JSON this wrote")
    parser.add_argument("--keep-maps", type=Path, default=None, metavar="DIR",
                        help="keep every row's class maps (.npz) and row JSON in DIR instead of a temporary "
                             "directory (for comparing two versions of the code map for map)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-maps", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    if args.child:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        args.child_out.write_text(json.dumps(run_row(json.loads(args.child), args.child_maps)))
        return
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pnpovss-speed-") as scratch:
        tmp = args.keep_maps or scratch
        for spec, round_ in schedule(plan(args), args.rounds):
            workdir = Path(tmp) / f"round{round_}"
            workdir.mkdir(parents=True, exist_ok=True)
            runs.append(run_child(spec, workdir))
            text = report(runs, args)
            if args.json:  # after every row: a long run that is stopped keeps what it measured
                args.json.write_text(text + "\n")
    print(text)


def schedule(specs: list[dict[str, Any]], rounds: int) -> list[tuple[dict[str, Any], int]]:
    """Per (model, size): all its rows, repeated ``rounds`` times below 700 px (once above)."""
    order: list[tuple[dict[str, Any], int]] = []
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for spec in specs:
        groups.setdefault((spec["model"], spec["image_size"]), []).append(spec)
    for (_, size), group in groups.items():
        for round_ in range(rounds if size < 700 else 1):
            order += [(spec, round_) for spec in group]
    return order


if __name__ == "__main__":
    main()
