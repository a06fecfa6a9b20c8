"""Label-free hyper-parameter search (``pnpovss tune``): random search over pipeline settings,
scored by the CLIP masked-vs-blank reward (:mod:`pnpovss.reward`), resumable and multi-process.

Cost model. A trial must be cheap, so per image the GradCAM maps of *every* cross-attention
layer and head are computed once, with one forward and one backward
(:func:`~pnpovss.gradcam.layer_attention_and_grad` over all layers), pooled per caption class and
kept in a :class:`MapCache` (float16 rows scaled to max 1, with their float32 scales; optionally
also on disk): BLIP-large at 384 px (12 layers x 12 heads x 576 patches) takes ~170 KB per class
per image. A trial is then thresholding + CLIP forwards of the masked images.

Salience DropOut in the search. The reference search (``Search()`` in the authors'
``pnp_get_attention_textloc_weaklysupervised_search*.py``) scores configurations on single-pass
maps (``drop_iter=1``) and keeps DropOut for the final run; so does a space without ``drop_iters``
(``search/spaces/layer_head.json``, the earlier default): trials use single-pass maps straight from
the cache, and the preset written keeps the base configuration's DropOut. The default space
searches DropOut (off, or T = 4 with k = 5 or 10) and the saliency kind (both kinds come from the
cache's one forward/backward), because the toy world shows they matter most. A trial with
``drop_iters > 1`` runs the real DropOut passes for each image
((T-1) vision encodes + T forward/backward passes of its layer) and memoises the result per
(image, saliency, layer, head, DropOut settings) in memory: the first trial of a new combination
costs about one pipeline run per image, repeats are free.

Resume. Every finished trial is appended to ``OUT/trace.jsonl`` (one ``write`` + flush + fsync
per line). Proposals come from gradient-free-optimizers' ask/tell ``RandomSearchOptimizer``
seeded with ``--seed``; trial 0 is the base configuration (the defaults), given to the optimizer as
its ``initial_evaluations``. Random search proposals depend only on its seeded generator, never
on scores, so a restarted run re-creates the optimizer, replays the recorded trials through
ask/tell (checking that each proposal equals the recorded one, which also catches a changed seed
or space) and continues with the first unrecorded trial: the final trace equals an uninterrupted
run's. A truncated last line (a kill mid-write) is dropped. ``OUT/run.json`` records what defines
the run; restarting in the same ``OUT`` with different settings is refused.

Selection. The paper keeps the trial of highest reward (``min_z=0``, the default). Over a few
hundred images the rewards of good configurations can differ by less than their noise, so that
argmax risks a winner's curse (measured in ``search/runs/toyworld``). Every trial therefore also
records the paired z-score of its per-image rewards against the base configuration (trial 0);
with ``min_z > 0`` (``--min-z 2`` is the option we measured) a trial only becomes the best if that
z-score reaches ``min_z``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .backbones.base import Backbone
from .config import PipelineConfig, save_preset
from .datasets.base import SegDataset
from .distributed import DistContext
from .errors import ConfigError, PnpOvssError
from .gradcam import head_cams, layer_attention_and_grad
from .fileio import atomic_write_text
from .pipeline import Segmenter
from .postprocess import postprocess
from .reward import MASK_RULES, MASK_SIGMA, REWARD_VERSION, REWARDS, ClipScorer, image_rewards, reward_masks
from .reward_region import CONTRAST, TRIAL_CRF, image_contrast, segment_masks

DEFAULT_THRESHOLDS = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
LAYER_HEAD_SPACE: dict[str, Any] = {"layer": "each", "head": "each+mean", "threshold": DEFAULT_THRESHOLDS}
"""The earlier default (``search/spaces/layer_head.json``): every layer, every single head and the
mean of all heads (BridgeTower's default and the toy model's are head means, and trial 0 must lie in
the space), thresholds 0.05..0.5; single-pass trials, the preset keeps the base DropOut."""
DEFAULT_SPACE: dict[str, Any] = {"saliency": ["gradcam", "attention"], **LAYER_HEAD_SPACE,
                                 "drop_iters": [1, 4], "drop_k": [5, 10]}
"""Also the saliency kind and Salience DropOut (off, or T = 4 with k = 5 or 10), which the toy world
shows matter most (``search/spaces/default.json``; measured in ``search/runs/toyworld``). DropOut
trials run the real passes (about one pipeline run per image for each new combination)."""
MAP_PARAMS = ("layer", "head", "drop_iters", "drop_k", "halving", "drop_mode", "count_first_twice", "saliency")
"""Parameters that change the class maps (``saliency``: both kinds come from the cache's one
forward/backward)."""
MASK_PARAMS = ("threshold", "blur_sigma")
"""Parameters that change the reward's masks (``blur_sigma``, when searched, replaces the 0.04)."""
DEFAULT_MIN_Z = 0.0
"""Significance a challenger needs over the base configuration (see :func:`run_search`)."""
DROPOUT_PARAMS = ("drop_iters", "drop_k", "halving", "drop_mode", "count_first_twice")
SALIENCIES = ("gradcam", "attention")
"""Saliency kinds the map cache keeps for every image (one forward/backward gives both)."""
TRACE_FILE, BEST_FILE, RUN_FILE = "trace.jsonl", "best.json", "run.json"
TRACE_FORMAT = 2
"""2: every trial records ``z`` (paired z-score against trial 0)."""


def _canon(value: Any) -> Any:
    """JSON-normal form (tuples -> lists) so values compare the same before and after JSON."""
    return json.loads(json.dumps(value))


# ---------------------------------------------------------------------------------- space
@dataclass
class SearchSpace:
    """Ordered parameter -> list of candidate values. gradient-free-optimizers searches the
    *indices* of the lists, so any JSON value (a head set, ``null`` = mean of all heads) works."""

    values: dict[str, list]

    def gfo(self) -> dict[str, np.ndarray]:
        return {name: np.arange(len(vals)) for name, vals in self.values.items()}

    def decode(self, position: Mapping[str, Any]) -> dict[str, Any]:
        return {name: self.values[name][int(position[name])] for name in self.values}

    def encode(self, params: Mapping[str, Any]) -> dict[str, int]:
        pos = {}
        for name, vals in self.values.items():
            want = _canon(params[name])
            if want not in vals:
                raise PnpOvssError(f"the starting value {name}={want!r} is not in the search space {vals}; add it "
                                   "to the space file (trial 0 is always the base configuration)")
            pos[name] = vals.index(want)
        return pos

    def params_of(self, config: PipelineConfig) -> dict[str, Any]:
        d = config.to_dict()
        return {name: _canon(d[name]) for name in self.values}

    @property
    def size(self) -> int:
        return int(np.prod([len(v) for v in self.values.values()]))


def _expand(name: str, spec: Any, backbone: Backbone) -> list:
    if spec == "each":
        if name == "layer":
            return list(range(1, backbone.num_layers + 1))
        if name == "head":
            return list(range(backbone.num_heads))
        raise PnpOvssError(f"space: 'each' is only defined for layer and head, not {name}")
    if spec == "each+mean":
        if name == "head":
            return [*range(backbone.num_heads), None]
        raise PnpOvssError(f"space: 'each+mean' is only defined for head, not {name}")
    if isinstance(spec, dict):
        try:
            start, stop, step = spec["from"], spec["to"], spec.get("step", 1)
        except KeyError:
            raise PnpOvssError(f"space: {name} range needs 'from' and 'to' (and optionally 'step')") from None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, stop, step)):
            raise ConfigError(f"space: {name} range 'from', 'to' and 'step' must be numbers, got {spec!r}")
        if step <= 0 or stop < start:
            raise PnpOvssError(f"space: {name} range from {start} to {stop} step {step} is empty")
        count = int(np.floor((stop - start) / step + 1e-9)) + 1
        vals = [start + k * step for k in range(count)]
        return [round(v, 10) if isinstance(v, float) else v for v in vals]
    if isinstance(spec, list) and spec:
        return [_canon(v) for v in spec]
    raise PnpOvssError(f"space: {name} must be a non-empty list, {{'from', 'to', 'step'}}, 'each' or (head) "
                       f"'each+mean', got {spec!r}")


def load_space(spec: str | os.PathLike[str] | Mapping[str, Any] | None, backbone: Backbone,
               base: PipelineConfig, searchable: Sequence[str] | None = None,
               default: Mapping[str, Any] = DEFAULT_SPACE) -> SearchSpace:
    """A space file (or dict; None = ``default``) checked against the model and config.
    ``searchable``: the parameters the objective sees (default: the CLIP reward's)."""
    if spec is None:
        raw: Mapping[str, Any] = default
    elif isinstance(spec, Mapping):
        raw = spec
    else:
        try:
            raw = json.loads(Path(spec).read_text())
        except FileNotFoundError:
            raise PnpOvssError(f"space file {spec} does not exist (see search/spaces/default.json)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise PnpOvssError(f"space file {spec} is not readable JSON ({exc})") from None
    if not isinstance(raw, Mapping) or not raw:
        raise PnpOvssError("a search space is a JSON object mapping parameter names to candidate values")
    raw = {k: v for k, v in raw.items() if not k.startswith("_")}  # "_comment" keys
    known = set(searchable) if searchable is not None else set(MAP_PARAMS) | set(MASK_PARAMS)
    values: dict[str, list] = {}
    for name, spec_value in raw.items():
        if name not in known:
            raise PnpOvssError(f"space: {name!r} cannot be searched (this objective does not see it); searchable: "
                               f"{', '.join(sorted(known))}")
        vals = _expand(name, spec_value, backbone)
        if len({json.dumps(v) for v in vals}) != len(vals):
            raise PnpOvssError(f"space: {name} lists a value twice")
        for v in vals:
            try:
                cfg = base.replace(**{name: v})
            except ConfigError as exc:
                raise ConfigError(f"space: {exc}") from None
            backbone.check_config(cfg)
        if spec is None:  # the default space always holds the base configuration (trial 0)
            own = _canon(base.to_dict()[name])
            vals = vals if own in vals else [*vals, own]
        values[name] = vals
    orphans = [n for n in DROPOUT_PARAMS if n in values and n != "drop_iters"]
    if orphans and "drop_iters" not in values:
        raise PnpOvssError(f"space: {', '.join(orphans)} only matter with DropOut passes, but trials run single-pass "
                           "maps unless drop_iters is searched too; add drop_iters to the space")
    return SearchSpace(values)


# ---------------------------------------------------------------------------------- map cache
@dataclass
class LayerHeadMaps:
    """Per image: every layer's and head's class maps of one forward/backward."""

    cams: np.ndarray
    """(L, H, C, P) float16, each (layer, head, class) row divided by its maximum."""
    scales: np.ndarray
    """(L, H, C) float32 row maxima."""
    grid: tuple[int, int]

    def class_maps(self, layer: int, heads: Sequence[int] | None) -> np.ndarray:
        """(C, gh, gw) single-pass maps of ``layer`` (1-based), averaged over ``heads`` (None = all)."""
        cams = self.cams[layer - 1].astype(np.float32) * self.scales[layer - 1][..., None]
        sel = cams if heads is None else cams[list(heads)]
        return sel.mean(axis=0).reshape(-1, *self.grid)


def layer_head_maps(backbone: Backbone, embeds: torch.Tensor, text: Any, saliency: str, grid: tuple[int, int],
                    also: Sequence[str] = ()) -> LayerHeadMaps | dict[str, LayerHeadMaps]:
    """One forward + one backward for all layers of one image (batch of 1) -> :class:`LayerHeadMaps`.
    With ``also`` (other saliency kinds), a dict saliency -> maps from the same forward/backward."""
    layers = list(range(1, backbone.num_layers + 1))
    kinds = [saliency, *[k for k in also if k != saliency]]
    out = layer_attention_and_grad(backbone, embeds, text, layers, with_grad="gradcam" in kinds)
    result = {}
    for kind in kinds:
        per_layer = []
        for layer in layers:
            attn, grad = out[layer]
            cam = head_cams(attn, grad if kind == "gradcam" else None)[0]
            per_layer.append(torch.stack([cam[:, pos].mean(dim=1) for pos in text.class_tokens[0]], dim=1))
        maps = torch.stack(per_layer).float().cpu().numpy()  # (L, H, C, P)
        scales = maps.max(axis=-1).astype(np.float32)
        safe = np.where(scales > 0, scales, 1.0)
        result[kind] = LayerHeadMaps((maps / safe[..., None]).astype(np.float16), scales, grid)
    return result if also else result[saliency]


def model_fingerprint(backbone: Backbone) -> str:
    """Identity of the model for the disk cache: its source and, for a local directory, the
    names, sizes and modification times of its files."""
    parts = [json.dumps(backbone.describe(), sort_keys=True)]
    src = Path(backbone.source)
    if src.is_dir():
        parts += [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(src.iterdir()) if p.is_file()]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


class MapCache:
    """Class maps per image for any trial configuration (see the module doc for the cost model)."""

    def __init__(self, segmenter: Segmenter, base: PipelineConfig, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.seg = segmenter
        self.base = base
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._maps: dict[int, LayerHeadMaps] = {}
        self._other: dict[tuple[int, str], LayerHeadMaps] = {}
        """Maps of the saliency kinds other than the base's, from the same forward/backward."""
        self._dropout: dict[tuple, np.ndarray] = {}
        self._fingerprint = model_fingerprint(segmenter.backbone)

    def _disk_path(self, image: np.ndarray, names: Sequence[str]) -> Path | None:
        if self.cache_dir is None:
            return None
        h = hashlib.sha1()
        for part in (self._fingerprint, str(image.shape), "\x1f".join(names), str(self.seg.image_size(self.base)),
                     self.base.prompt, self.base.saliency):
            h.update(part.encode() + b"\x00")
        precision = self.seg.precision(self.base).name
        if precision != "fp32":  # fp32 keys stay as they were, so existing caches remain valid
            h.update(precision.encode() + b"\x00")
        h.update(image.tobytes())
        return self.cache_dir / f"maps-{h.hexdigest()}.npz"

    def add(self, index: int, image: np.ndarray, names: Sequence[str]) -> None:
        """Compute (or read from disk) the layer/head maps of image ``index``."""
        path = self._disk_path(image, names)
        others = [k for k in SALIENCIES if k != self.base.saliency]
        if path is not None and path.is_file():
            try:
                with np.load(path) as z:
                    grid = tuple(int(g) for g in z["grid"])
                    loaded = {k: LayerHeadMaps(z[f"cams_{k}"], z[f"scales_{k}"], grid) for k in others}
                    self._maps[index] = LayerHeadMaps(z["cams"], z["scales"], grid)
                self._other.update({(index, k): m for k, m in loaded.items()})
                return
            except (OSError, KeyError, ValueError):
                pass  # unreadable (or older, base-saliency-only) cache entry: recompute and overwrite it
        bb = self.seg.backbone
        pixels = bb.preprocess([image], self.seg.image_size(self.base))
        text = bb.build_text(self.base.prompt, [list(names)])
        with self.seg.precision(self.base).text_autocast(bb.image_projections()):
            every = layer_head_maps(bb, self.seg.encode(pixels, self.base), text, self.base.saliency,
                                    bb.grid(pixels.shape[-1]), also=others)
        maps = every[self.base.saliency]
        self._maps[index] = maps
        self._other.update({(index, k): every[k] for k in others})
        if path is not None:
            import io

            buf = io.BytesIO()
            extra = {f"{n}_{k}": getattr(every[k], n) for k in others for n in ("cams", "scales")}
            np.savez(buf, cams=maps.cams, scales=maps.scales, grid=np.asarray(maps.grid), **extra)
            from .fileio import atomic_write_bytes

            atomic_write_bytes(path, buf.getvalue())

    def class_maps(self, index: int, config: PipelineConfig, image: Callable[[], np.ndarray],
                   names: Sequence[str]) -> np.ndarray:
        """(C, gh, gw) maps of image ``index`` under ``config``; ``image`` is called only when DropOut
        passes must be run."""
        if config.drop_iters == 1:
            maps = self._maps[index] if config.saliency == self.base.saliency else self._other[(index, config.saliency)]
            return maps.class_maps(config.layer, config.heads_tuple())
        key = (index, config.saliency, config.layer, config.heads_tuple(), *(getattr(config, k) for k in DROPOUT_PARAMS))
        if key not in self._dropout:
            bb = self.seg.backbone
            pixels = bb.preprocess([image()], self.seg.image_size(config))
            self._dropout[key] = self.seg.class_grid_maps(pixels, self.seg.encode(pixels, config), [list(names)], config)[0]
        return self._dropout[key]


# ---------------------------------------------------------------------------------- reward over a dataset
class RewardEvaluator:
    """Reward of a parameter set summed over a fixed list of images (this process's shard)."""

    rewards = REWARDS
    """Names of the per-image score columns (:meth:`per_image`), any of which a search may maximise."""

    def __init__(self, segmenter: Segmenter, dataset: SegDataset, indices: Sequence[int], scorer: ClipScorer, *,
                 all_classes: bool = False, mask_sigma: float = MASK_SIGMA, cache_dir: str | None = None,
                 dist: DistContext | None = None, mask_rule: str = MASK_RULES[0], contrast: bool = False) -> None:
        if mask_rule not in MASK_RULES:
            raise PnpOvssError(f"reward mask rule must be one of {', '.join(MASK_RULES)}, got {mask_rule!r}")
        self.contrast = contrast
        if contrast:  # a third column; off by default, as it costs a second CLIP batch (the complements)
            self.rewards = (*REWARDS, CONTRAST)
        self.seg, self.dataset, self.scorer = segmenter, dataset, scorer
        self.indices = list(indices)
        self.all_classes = all_classes
        self.mask_sigma = mask_sigma
        self.mask_rule = mask_rule
        self.dist = dist or DistContext()
        self.base = segmenter.config.replace(**dataset.pipeline_settings())
        self.cache = MapCache(segmenter, self.base, cache_dir)
        fg = dataset.foreground_ids
        self.text = scorer.text_embeddings([dataset.synonyms[c] for c in fg])
        self._row = {c: k for k, c in enumerate(fg)}
        self._images: dict[int, dict[str, Any]] = {}
        self._built = False
        self.progress = True

    def build(self, progress: bool = True) -> None:
        """Maps and CLIP tensors of this process's images (one forward/backward each). Called by
        the first :meth:`evaluate` if not before, so a resumed run with nothing left to do skips it."""
        from tqdm import tqdm

        self._built = True
        mine = self.dist.shard(self.indices)
        for i in tqdm(mine, unit="img", desc="map cache", disable=not (progress and self.dist.is_main), file=sys.stderr):
            sample = self.dataset[i]
            labels = self.dataset.image_labels(sample.label)
            caption = list(self.dataset.foreground_ids) if self.all_classes else labels
            entry = {"labels": labels, "caption": caption, "names": [self.dataset.classes[c] for c in caption]}
            if labels:
                self.cache.add(i, sample.image, entry["names"])
                entry["clip"] = self.scorer.image_tensor(sample.image)
                if self.contrast:  # segmented again by every trial
                    entry["image"] = sample.image
            self._images[i] = entry

    def trial_config(self, params: Mapping[str, Any]) -> PipelineConfig:
        """The configuration a trial is scored with: single-pass maps unless DropOut is searched."""
        cfg = self.base.replace(**params)
        return cfg if "drop_iters" in params else cfg.replace(drop_iters=1)

    def image_scores(self, params: Mapping[str, Any]) -> np.ndarray:
        """(n_images, len(rewards)) float64 (binary, continuous[, contrast]) per image; rows of other
        processes are 0."""
        cfg = self.trial_config(params)
        sigma = cfg.blur_sigma if "blur_sigma" in params else self.mask_sigma
        out = np.zeros((len(self.indices), len(self.rewards)), dtype=np.float64)
        for row, i in enumerate(self.indices):
            entry = self._images.get(i)
            if entry is None or not entry["labels"]:
                continue
            maps = self.cache.class_maps(i, cfg, lambda: self.dataset[i].image, entry["names"])
            rows = [entry["caption"].index(c) for c in entry["labels"]]
            masks = reward_masks(maps[rows], cfg.threshold, self.scorer.clip.image_size, sigma, self.mask_rule)
            emb = self.scorer.masked_embeddings(i, entry["clip"], masks)
            own = [self._row[c] for c in entry["labels"]]
            out[row, :2] = image_rewards(self.scorer, emb, own, self.text)
            if self.contrast:  # judged on the trial's own segmentation (pnpovss.reward_region)
                labels, _ = postprocess(maps, entry["image"], cfg.replace(crf=TRIAL_CRF and cfg.crf))
                seg = segment_masks(labels, rows, cfg.background, self.scorer.clip.image_size)
                out[row, 2] = image_contrast(self.scorer, ("segment", i), entry["clip"], seg, own, self.text)
        return out

    def per_image(self, params: Mapping[str, Any]) -> np.ndarray:
        """(n_images, 2) rewards of every image (all processes): each row has exactly one non-zero
        contributor in the all-reduce, so the result is bit-identical for any number of processes."""
        if not self._built:
            self.build(self.progress)
        return self.dist.all_reduce_sum(self.image_scores(params))

    def evaluate(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Every reward variant summed over all images."""
        return totals(self.per_image(params), self.rewards)

    def run_info(self) -> dict[str, Any]:
        """What else defines a run of this objective (recorded in ``run.json``)."""
        info = {"mask_sigma": self.mask_sigma, "mask_rule": self.mask_rule, "logit_scale": self.scorer.logit_scale}
        return {**info, "rewards": list(self.rewards)} if self.contrast else info


def totals(per_image: np.ndarray, names: Sequence[str] = REWARDS) -> dict[str, float]:
    return {name: float(np.sum(per_image[:, k])) for k, name in enumerate(names)}


Z_CAP = 1e6


def paired_z(per_image: np.ndarray, base: np.ndarray, names: Sequence[str] = REWARDS) -> dict[str, float]:
    """Paired z-score of each variant's per-image gain over the base configuration: mean gain over
    its standard error (capped at +-1e6 when every image gains the same; 0 when nothing changes)."""
    out = {}
    for k, name in enumerate(names):
        gain = per_image[:, k] - base[:, k]
        mean = float(gain.mean())
        se = float(gain.std(ddof=1)) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
        z = 0.0 if mean == 0 else (mean / se if se > 0 else np.sign(mean) * Z_CAP)
        out[name] = float(np.clip(z, -Z_CAP, Z_CAP))
    return out


# ---------------------------------------------------------------------------------- trace
class TraceLog:
    """Append-only JSON-lines trace that survives a kill at any moment."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, repair: bool = True) -> list[dict]:
        """Complete records; a truncated or corrupt final line is dropped (and cut from the file
        when ``repair``). A corrupt line in the middle is an error: the file was edited."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        records, good_end, pos = [], 0, 0
        lines = data.split(b"\n")
        for n, line in enumerate(lines):
            end = pos + len(line) + 1
            complete = n < len(lines) - 1  # followed by a newline
            if line.strip():
                try:
                    rec = json.loads(line)
                    if not complete or not isinstance(rec, dict):
                        raise ValueError
                except ValueError:
                    if any(rest.strip() for rest in lines[n + 1 :]):
                        raise PnpOvssError(f"{self.path}: line {n + 1} is not valid JSON; the trace was edited "
                                           "or corrupted; use a new --out") from None
                    break
                records.append(rec)
                good_end = end
            elif complete:
                good_end = end
            pos = end
        if repair and good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
        return records

    def append(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _exclusive(out: Path, enabled: bool) -> Iterator[None]:
    """Refuse two tune processes writing the same OUT at once."""
    if not enabled:
        yield
        return
    import fcntl

    path = out / ".lock"
    fh = open(path, "w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise PnpOvssError(f"another 'pnpovss tune' is writing to {out}; wait for it or use another --out") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # still locked: nobody else can be using it
    finally:
        fh.close()


def _check_run(out: Path, run_info: dict, write: bool) -> None:
    path = out / RUN_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise PnpOvssError(f"{path} is unreadable; remove {out} or use another --out") from None
        diff = sorted(k for k in set(old) | set(run_info) if old.get(k) != run_info.get(k))
        if diff:
            raise PnpOvssError(f"{out} holds a different tune run ({', '.join(diff)} differ); restart with the "
                               "original command to resume it, or use another --out")
    elif write:
        atomic_write_text(path, json.dumps(run_info, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------- search
def run_search(evaluator: RewardEvaluator, space: SearchSpace, *, iters: int, seed: int, out_dir: str | os.PathLike[str],
               reward: str = "binary", min_z: float = DEFAULT_MIN_Z, run_info: Mapping[str, Any] | None = None,
               progress: bool = True) -> dict:
    """Random search for ``iters`` trials (trial 0 = the base configuration), resuming whatever
    ``out_dir`` already holds. Returns the best trial record; ``best.json`` is a preset.

    A trial becomes the best when its reward beats the best so far *and* its per-image rewards beat
    the base configuration's by a paired z-score of at least ``min_z`` (0: the paper's plain
    argmax). ``min_z`` only selects among recorded trials, so it may change between restarts."""
    from gradient_free_optimizers.ask_tell import RandomSearchOptimizer
    from tqdm import tqdm

    if reward not in evaluator.rewards:
        raise PnpOvssError(f"reward must be one of {', '.join(evaluator.rewards)}, got {reward!r}")
    if iters < 1:
        raise PnpOvssError(f"--iters must be >= 1, got {iters}")
    dist = evaluator.dist
    out = Path(out_dir)
    main = dist.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    info = _canon({**(run_info or {}), "seed": seed, "reward": reward, "reward_version": REWARD_VERSION,
                   "trace_format": TRACE_FORMAT,
                   "space": space.values, "base_config": evaluator.base.to_dict(), **evaluator.run_info()})
    with _exclusive(out, main):
        _check_run(out, info, write=main)
        log = TraceLog(out / TRACE_FILE)
        trace = log.load(repair=main)
        dist.barrier()
        state = _SearchState(evaluator, log, trace, reward, min_z, out, info, main)
        evaluator.progress = progress
        first = state.trial(0, space.params_of(evaluator.base))  # builds the map cache if it must run
        bar = tqdm(total=iters, initial=max(1, min(len(trace), iters)), unit="trial", desc="tune",
                   disable=not (progress and main), file=sys.stderr)
        opt = RandomSearchOptimizer(space.gfo(), initial_evaluations=[(space.encode(first["params"]), first["reward"])],
                                    random_state=seed)
        bar.set_postfix(best=state.best["reward"])
        for t in range(1, iters):
            params = space.decode(opt.ask(1)[0])
            rec = state.trial(t, params)
            opt.tell([rec["reward"]])
            if t >= len(trace):
                bar.update(1)
                bar.set_postfix(best=state.best["reward"])
        bar.close()
        state.write_best(final=True, iters=iters)
    return state.best


class _SearchState:
    """Trial bookkeeping shared by fresh and replayed trials."""

    def __init__(self, evaluator: RewardEvaluator, log: TraceLog, trace: list[dict], reward: str, min_z: float,
                 out: Path, info: dict, main: bool) -> None:
        self.evaluator, self.log, self.trace, self.reward, self.min_z = evaluator, log, trace, reward, min_z
        self.out, self.info, self.main = out, info, main
        self.best: dict = {}
        self.memo: dict[str, dict] = {}
        self.base_params: dict | None = None
        self._base_images: np.ndarray | None = None

    def base_images(self) -> np.ndarray:
        """Per-image rewards of trial 0 (recomputed once after a resume: deterministic)."""
        if self._base_images is None:
            assert self.base_params is not None
            self._base_images = self.evaluator.per_image(self.base_params)
        return self._base_images

    def trial(self, t: int, params: dict) -> dict:
        params = _canon(params)
        key = json.dumps(params, sort_keys=True)
        if t < len(self.trace):
            rec = self.trace[t]
            if rec.get("trial") != t or rec.get("params") != params:
                raise PnpOvssError(
                    f"{self.log.path} trial {t} has params {rec.get('params')} but this run proposes {params}; "
                    "it was written by a different search; use another --out"
                )
        else:
            t0 = time.perf_counter()
            repeat = key in self.memo
            if repeat:
                rewards, z = self.memo[key]["rewards"], self.memo[key]["z"]
            else:
                images = self.evaluator.per_image(params)
                if t == 0:
                    self._base_images = images
                names = self.evaluator.rewards
                rewards, z = totals(images, names), paired_z(images, self.base_images(), names)
            rec = {"trial": t, "params": params, "reward": rewards[self.reward], "rewards": rewards, "z": z,
                   "repeat": repeat, "seconds": round(time.perf_counter() - t0, 4)}
            if self.main:
                self.log.append(rec)
        if t == 0:
            self.base_params = params
        self.memo.setdefault(key, rec)
        if not self.best or (rec["reward"] > self.best["reward"] and rec["z"][self.reward] >= self.min_z):
            self.best = rec
            self.write_best()
        return rec

    def write_best(self, final: bool = False, iters: int | None = None) -> None:
        if not self.main:
            return
        config = self.evaluator.base.replace(**self.best["params"])
        meta = {"params": self.best["params"], "reward": self.best["reward"], "rewards": self.best["rewards"],
                "z": self.best["z"], "trial": self.best["trial"], "reward_variant": self.reward,
                "min_z": self.min_z, "run": self.info,
                "finished": final, "iters": iters}
        save_preset(self.out / BEST_FILE, config, **meta)


__all__ = ["DEFAULT_SPACE", "LAYER_HEAD_SPACE", "LayerHeadMaps", "MapCache", "RewardEvaluator", "SearchSpace", "TraceLog",
           "layer_head_maps", "load_space", "run_search"]
