"""Train a tiny image-text-matching model (BLIP or BridgeTower) on toy-world image-caption pairs (CPU).

Why: the pipeline needs an ITM model whose word tokens' cross-attention looks at their own
object. One loop serves both architectures; what differs lives in ``arches.py``. Masks are never used in training; localisation must emerge. Objectives:

* ITM on positives and *hard* negatives (a present shape replaced by an absent one, an
  absent shape added, colours swapped between objects, a colour changed), with captions
  partly in the pipeline's own prompt form ``"a picture of circle star"``;
* ITC between ``vision_proj(image [CLS])`` and ``text_proj(text-only [CLS])``, images with
  the same shape set counted as soft positives (BLIP only: BridgeTower-ITM has no projections);
* a token-level auxiliary head (training only, not saved) on a middle text layer: at every
  shape-word token predict whether that shape is in the image and which colour it has.
  This is image-level caption information, but answering it *at the word token* forces
  that token's cross-attention to look up its own object, which is what GradCAM reads.

Run: ``python -m tools.toyworld.train_itm --arch blip|bridgetower --world toyworld|toyworld-shapes
--out DIR --steps N --seed S`` (``train_blip`` is the same command with ``--arch blip``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pnpovss.gradcam import head_cams
from pnpovss.hooks import capture_outputs
from pnpovss.toyworld.world import (
    COLOURS,
    SHAPES,
    TRAIN_SEED_BASE,
    Sample,
    describe_objects,
    make_sample,
)

from .arches import ARCHES, BlipArch
from .pixels import to_pixels

PROMPT_PREFIX = "a picture of "


@dataclass
class TrainConfig:
    """Hyper-parameters (stored in training.json so a run can be reproduced)."""

    out: str = "toy_blip"
    arch: str = "blip"
    """Architecture (``arches.ARCHES``): ``blip`` or ``bridgetower``."""
    world: str = "toyworld"
    """Toy world to train on (``world.WORLDS``): ``toyworld`` or ``toyworld-shapes``."""
    steps: int = 4000
    seed: int = 0
    batch: int = 32
    lr: float = 3e-4
    warmup: int = 200
    weight_decay: float = 0.02
    pool: int = 8000
    image_size: int = 96
    patch: int = 8
    vision_hidden: int = 128
    vision_layers: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    heads: int = 4
    aux_layer: int = 1
    aux_weight: float = 2.0
    itc_weight: float = 0.2
    vis_aux_weight: float = 1.0
    vision_warmup_steps: int = 300
    prompt_prob: float = 0.5
    curriculum_steps: int = 600
    curriculum_min_area: int = 0
    curriculum_max_objects: int = 2
    """During the curriculum, only images with at most this many objects (1: one large object at a
    time, a plain classification problem before scenes)."""
    vis_cls_weight: float = 0.0
    """Weight of an image-level presence loss on the vision [CLS] token (training only, like the patch
    head): a dense signal through every patch's attention, where the best-patch loss reaches one
    patch per class. Outline identity is a whole-object property, which a [CLS] head can read."""
    """During the curriculum, only images whose smallest class region has at least this many pixels
    (large objects first: an outline spanning more patches is easier to learn)."""
    cross_layers: int = 2
    """BridgeTower only: cross-modal layers (fed by the last ``cross_layers`` of ``text_layers`` tower layers)."""
    probe_every: int = 250
    probe_n: int = 48
    save_every: int = 0
    threads: int = 1
    max_minutes: float = 0.0
    init: str = ""
    """Continue from this saved checkpoint (a second training stage) instead of random weights.
    The training-only heads are not saved, so they are re-initialised and fitted alone first."""
    head_warmup: int = 100
    """With ``init``: steps that train only the re-initialised training heads (model frozen)."""
    vis_pool: str = "max"
    """Pooling of the per-patch shape logits for the image-level MIL loss: ``max`` (one patch per
    object needs the evidence) or ``lse`` (log-mean-exp at ``vis_lse_r``: a soft max that rewards
    every patch of the object for carrying it, so a word's attention can spread over the object)."""
    vis_lse_r: float = 5.0
    presence_prob: float = 0.0
    """Share of a batch's caption pairs replaced by single-class prompts (``a picture of X``): the
    positive names a present shape, the negative an absent one. This is the presence stage's query."""
    confusable: str = ""
    """Shape pairs the model mixes up, e.g. ``triangle:cross``; in those single-class pairs the absent
    shape is, half the time, the partner of a present one (a hard negative for presence)."""


# ---------------------------------------------------------------- tokenizer / model


def encode(tok, texts: list[str], itm: bool = True, arch=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise for ``arch`` (default BLIP: for ITM the first token becomes [ENC], as in LAVIS)."""
    return (arch or BlipArch()).encode(tok, texts, itm)


def smallest_object(s: Sample) -> int:
    """Visible pixels of the sample's smallest class region (0 for an empty image)."""
    counts = np.bincount(s.mask.ravel())[1:]
    return int(counts[counts > 0].min()) if (counts > 0).any() else 0


def prompt_text(classes: list[str]) -> str:
    """The pipeline's query form, e.g. 'a picture of circle star'."""
    return PROMPT_PREFIX + " ".join(classes)


# ---------------------------------------------------------------- captions and negatives


def positive_caption(s: Sample, rng: np.random.Generator, prompt_prob: float) -> str:
    """Full caption, a caption naming a subset of objects, or the pipeline prompt form."""
    r = rng.random()
    if r < prompt_prob:
        labels = list(s.labels)
        if len(labels) > 1 and rng.random() < 0.3:
            k = int(rng.integers(1, len(labels)))
            labels = [labels[i] for i in sorted(rng.choice(len(labels), k, replace=False))]
        if rng.random() < 0.5:
            labels = [labels[i] for i in rng.permutation(len(labels))]
        return prompt_text(labels)
    objs = list(s.objects)
    if len(objs) > 1 and rng.random() < 0.35:
        k = int(rng.integers(1, len(objs)))
        objs = [objs[i] for i in rng.choice(len(objs), k, replace=False)]
    return describe_objects(objs, rng)


def negative_caption(s: Sample, rng: np.random.Generator, prompt_prob: float) -> str:
    """Hard negative: mostly a minimal edit of a true description that makes it false."""
    absent = [x for x in SHAPES if x not in s.labels]
    if rng.random() < prompt_prob and absent:
        labels = list(s.labels)
        if rng.random() < 0.5 and len(labels) > 0:
            labels[int(rng.integers(len(labels)))] = absent[int(rng.integers(len(absent)))]
            labels = list(dict.fromkeys(labels))
        else:
            labels.insert(int(rng.integers(len(labels) + 1)), absent[int(rng.integers(len(absent)))])
        if rng.random() < 0.3 and len(labels) > 2:
            # drop a present one, keep the absent one: the caption stays false
            keep_absent = [x for x in labels if x not in s.labels]
            rest = [x for x in labels if x in s.labels]
            rest.pop(int(rng.integers(len(rest))))
            labels = [x for x in labels if x in keep_absent or x in rest]
        return prompt_text(labels)
    objs = list(s.objects)
    colours_of = {}
    for sh, c in objs:
        colours_of.setdefault(sh, set()).add(c)
    for _ in range(6):
        kind = int(rng.integers(4))
        new = list(objs)
        if kind == 0 and absent:  # replace a shape by an absent one
            j = int(rng.integers(len(new)))
            new[j] = (absent[int(rng.integers(len(absent)))], new[j][1])
        elif kind == 1 and len(new) >= 2:  # swap colours of two objects
            i, j = rng.choice(len(new), 2, replace=False)
            (si, ci), (sj, cj) = new[i], new[j]
            if ci == cj or si == sj:
                continue
            new[i], new[j] = (si, cj), (sj, ci)
        elif kind == 2:  # change one colour
            j = int(rng.integers(len(new)))
            sh = new[j][0]
            choices = [c for c in COLOURS if c not in colours_of[sh]]
            new[j] = (sh, choices[int(rng.integers(len(choices)))])
        elif kind == 3 and absent:  # add an absent shape
            new.insert(int(rng.integers(len(new) + 1)), (absent[int(rng.integers(len(absent)))], COLOURS[int(rng.integers(len(COLOURS)))]))
        else:
            continue
        if not caption_is_true(new, s):
            if len(new) > 2 and rng.random() < 0.3:
                # keep the false object, drop a true one (shorter false captions too)
                true_idx = [k for k, o in enumerate(new) if _object_true(o, s)]
                if true_idx:
                    new.pop(int(true_idx[int(rng.integers(len(true_idx)))]))
            return describe_objects(new, rng)
    return prompt_text([absent[0]] if absent else ["nothing"])


def confusable_pairs(spec: str) -> dict[str, list[str]]:
    """``"a:b,c:d"`` -> each shape's confusable partners (both directions)."""
    out: dict[str, list[str]] = {}
    for pair in filter(None, (x.strip() for x in spec.split(","))):
        a, b = pair.split(":")
        if a not in SHAPES or b not in SHAPES:
            raise SystemExit(f"--confusable {spec!r}: {pair!r} is not two of {', '.join(SHAPES)}")
        out.setdefault(a, []).append(b)
        out.setdefault(b, []).append(a)
    return out


def presence_pair(s: Sample, rng: np.random.Generator, partners: dict[str, list[str]]) -> tuple[str, str] | None:
    """(positive, negative) single-class prompts for ``s``, or None when every shape is present."""
    absent = [x for x in SHAPES if x not in s.labels]
    if not absent:
        return None
    hard = [p for c in s.labels for p in partners.get(c, []) if p in absent]
    pool = hard if hard and rng.random() < 0.5 else absent
    pos = s.labels[int(rng.integers(len(s.labels)))]
    return prompt_text([pos]), prompt_text([pool[int(rng.integers(len(pool)))]])


def _object_true(o: tuple[str, str], s: Sample) -> bool:
    return o in s.objects


def caption_is_true(objs: list[tuple[str, str]], s: Sample) -> bool:
    return all(_object_true(o, s) for o in objs)


# ---------------------------------------------------------------- token-level auxiliary targets


def word_id(tok, word: str) -> int:
    """The id of ``word`` inside a caption (its last piece; byte-level BPE marks a word start with a space)."""
    return tok(PROMPT_PREFIX + word, add_special_tokens=False)["input_ids"][-1]


def aux_targets(tok, texts: list[str], ids: torch.Tensor, samples: list[Sample]):
    """For every shape-word token: presence (0/1) of that shape, colour distribution if present."""
    shape_ids = {word_id(tok, s): i for i, s in enumerate(SHAPES)}
    B, T = ids.shape
    pos_b, pos_t, presence, colour_t, colour_mask = [], [], [], [], []
    for b in range(B):
        s = samples[b]
        for t in range(T):
            k = shape_ids.get(int(ids[b, t]))
            if k is None:
                continue
            shape = SHAPES[k]
            pos_b.append(b)
            pos_t.append(t)
            present = shape in s.labels
            presence.append(float(present))
            dist = np.zeros(len(COLOURS), np.float32)
            for sh, c in s.objects:
                if sh == shape:
                    dist[COLOURS.index(c)] += 1
            if dist.sum() > 0:
                dist /= dist.sum()
            colour_t.append(dist)
            colour_mask.append(float(present))
    return (
        torch.tensor(pos_b, dtype=torch.long),
        torch.tensor(pos_t, dtype=torch.long),
        torch.tensor(presence),
        torch.tensor(np.array(colour_t)).reshape(-1, len(COLOURS)),
        torch.tensor(colour_mask),
    )


class AuxHead(nn.Module):
    """Training-only head on a middle text layer (never saved with the ITM checkpoint)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1 + len(COLOURS)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


# ---------------------------------------------------------------- GradCAM probe


def class_token_positions(tok, ids: torch.Tensor, classes: list[str]) -> dict[str, list[int]]:
    """Positions of each class's word pieces in a pipeline-form prompt (from the token counts of the
    growing prompt, so word-piece and byte-level BPE tokenisers, with their word-start pieces, agree)."""
    out: dict[str, list[int]] = {}
    row = ids.tolist()

    def length(classes_so_far: list[str]) -> int:
        return 1 + len(tok((PROMPT_PREFIX + " ".join(classes_so_far)).strip(), add_special_tokens=False)["input_ids"])

    t = length([])
    for k, c in enumerate(classes):
        end = length(classes[: k + 1])
        out[c] = list(range(t, end))
        t = end
    assert t <= len(row)
    return out


def gradcam_maps(model, tok, images: np.ndarray, class_lists: list[list[str]], arch=None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per layer, (B, heads, T, patches) GradCAM of the ITM match logit (:func:`pnpovss.gradcam.head_cams`),
    and the token ids. The attention probabilities are captured by hooks that live only for the forward."""
    arch = arch or BlipArch()
    model.eval()
    modules = arch.cross_attention(model)
    ids, att = arch.encode(tok, [prompt_text(c) for c in class_lists])
    with capture_outputs(modules) as store:
        score = arch.match_full(model, ids, att, to_pixels(images))
    attns = [store[L] for L in range(len(modules))]
    grads = torch.autograd.grad(score[:, 1].sum(), attns)
    return [head_cams(a.detach(), g) for a, g in zip(attns, grads)], ids


def probe_localisation(model, tok, samples: list[Sample], threshold: float = 0.15, arch=None) -> dict:
    """Pointing accuracy and quick mIoU for every (layer, head) and the head mean."""
    images = np.stack([s.image for s in samples])
    classes = [list(s.labels) for s in samples]
    cams, ids = gradcam_maps(model, tok, images, classes, arch)
    size = images.shape[1]
    n_layers = len(cams)
    heads = cams[0].shape[1]
    grid = int(round(math.sqrt(cams[0].shape[-1])))
    cell = size // grid
    ncls = len(SHAPES) + 1
    results = {}
    for L in range(n_layers):
        for h in list(range(heads)) + ["mean"]:
            inter = np.zeros(ncls)
            union = np.zeros(ncls)
            hits = total = 0
            for b, s in enumerate(samples):
                pos = class_token_positions(tok, ids[b], classes[b])
                cam = cams[L][b].mean(0) if h == "mean" else cams[L][b, h]
                maps = []
                for c in classes[b]:
                    m = cam[pos[c]].mean(0).reshape(grid, grid)
                    cid = SHAPES.index(c) + 1
                    small = (s.mask == cid).reshape(grid, cell, grid, cell).mean((1, 3))
                    am = int(m.argmax())
                    hits += bool(small.reshape(-1)[am] >= 0.2)
                    total += 1
                    mn, mx = m.min(), m.max()
                    maps.append((m - mn) / (mx - mn + 1e-8))
                up = F.interpolate(torch.stack(maps)[None], size=(size, size), mode="bilinear", align_corners=False)[0]
                bgmap = (up.max(0).values < threshold).numpy()
                arg = up.argmax(0).numpy()
                lab = np.array([SHAPES.index(c) + 1 for c in classes[b]])[arg]
                pred = np.where(bgmap, 0, lab)
                for c in range(ncls):
                    pc, mc = pred == c, s.mask == c
                    inter[c] += np.logical_and(pc, mc).sum()
                    union[c] += np.logical_or(pc, mc).sum()
            valid = union > 0
            results[f"L{L}_h{h}"] = {
                "pointing": hits / max(total, 1),
                "miou": float((inter[valid] / union[valid]).mean()),
            }
    best = max(results, key=lambda k: results[k]["miou"])
    return {"per_head": results, "best": best, "best_miou": results[best]["miou"], "best_pointing": results[best]["pointing"]}


@torch.no_grad()
def itm_accuracy(model, tok, samples: list[Sample], seed: int = 12345, arch=None) -> float:
    """Held-out accuracy on one positive and one hard negative caption per image."""
    model.eval()
    rng = np.random.Generator(np.random.PCG64(seed))
    texts, labels = [], []
    for s in samples:
        texts.append(positive_caption(s, rng, 0.5))
        labels.append(1)
        texts.append(negative_caption(s, rng, 0.5))
        labels.append(0)
    images = np.stack([s.image for s in samples for _ in range(2)])
    arch = arch or BlipArch()
    ids, att = arch.encode(tok, texts)
    pred = arch.match_full(model, ids, att, to_pixels(images)).argmax(-1).numpy()
    return float((pred == np.array(labels)).mean())


@torch.no_grad()
def presence_auc(model, tok, samples: list[Sample], arch=None) -> dict[str, float]:
    """ROC AUC of the ITM match probability of ``a picture of X`` for present vs absent X: per
    shape, and pooled over shapes (``all``), as the presence stage uses it."""
    arch = arch or BlipArch()
    model.eval()
    pixels = to_pixels(np.stack([s.image for s in samples]))
    tokens = arch.image_tokens(model, pixels)
    ids, att = arch.encode(tok, [prompt_text([c]) for c in SHAPES])
    probs = []
    for b in range(len(samples)):
        rows = torch.full((len(SHAPES),), b, dtype=torch.long)
        probs.append(arch.match(model, ids, att, pixels, tokens, rows).softmax(-1)[:, 1])
    p = torch.stack(probs).numpy()
    y = np.array([[c in s.labels for c in SHAPES] for s in samples])
    out = {c: _auc(p[:, k], y[:, k]) for k, c in enumerate(SHAPES)}
    out["all"] = _auc(p.ravel(), y.ravel())
    return out


@torch.no_grad()
def patch_presence_auc(model, vis_aux: nn.Module, samples: list[Sample], arch=None,
                       cls_aux: nn.Module | None = None) -> tuple[float, float]:
    """Pooled ROC AUC of the training-only vision heads for present vs absent shapes: the patch head's
    best-patch logit and the [CLS] head's logit (nan without it). Whether the vision side alone carries
    class evidence, the first thing the shape world must learn."""
    arch = arch or BlipArch()
    model.eval()
    tokens = arch.image_tokens(model, to_pixels(np.stack([s.image for s in samples])))
    y = np.array([[c in s.labels for c in SHAPES] for s in samples]).ravel()
    patch = _auc(vis_aux(tokens[:, 1:]).max(1).values.numpy().ravel(), y)
    return patch, (_auc(cls_aux(tokens[:, 0]).numpy().ravel(), y) if cls_aux is not None else float("nan"))


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = score[positive], score[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None]).mean()
    ties = (pos[:, None] == neg[None]).mean()
    return float(greater + 0.5 * ties)


# ---------------------------------------------------------------- saving


def save_checkpoint(arch, model, tok, cfg: TrainConfig, out: str, extra: dict) -> None:
    """Write model + processor + training.json to ``out`` atomically (temp dir, then rename)."""
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_itm_", dir=parent)
    os.chmod(tmp, 0o755)
    arch.save(model, tok, cfg, tmp)
    with open(os.path.join(tmp, "training.json"), "w") as f:
        json.dump({"config": asdict(cfg), **extra}, f, indent=1)
    preset = os.path.join(out, "pnpovss_preset.json")
    if os.path.exists(preset):  # the measured pipeline preset belongs to the model directory: keep it
        shutil.copy2(preset, os.path.join(tmp, "pnpovss_preset.json"))
    old = None
    if os.path.exists(out):
        old = out + ".old"
        if os.path.exists(old):
            shutil.rmtree(old)
        os.rename(out, old)
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old)


# ---------------------------------------------------------------- training


def train(cfg: TrainConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.Generator(np.random.PCG64([cfg.seed, 7]))
    t0 = time.time()
    arch = ARCHES[cfg.arch]()
    tok = arch.tokenizer()
    previous: dict = {}
    if cfg.init:
        model = arch.load(cfg.init)
        if arch.vocab_size(model) != len(tok):
            raise SystemExit(f"--init {cfg.init}: its vocabulary ({arch.vocab_size(model)}) is not the toy tokenizer's ({len(tok)})")
        meta = os.path.join(cfg.init, "training.json")
        if os.path.exists(meta):
            with open(meta) as f:
                old = json.load(f)
            # every key of the earlier record but its per-probe history (e.g. a distillation's record)
            previous = {"stages": old.get("stages", []) + [{k: v for k, v in old.items() if k not in ("stages", "history")}]}
    else:
        model = arch.build(cfg, tok)
    vision_width, text_width = arch.widths(model)
    aux = AuxHead(text_width)
    # Image-level shape presence from the best patch (MIL, training only): each patch must
    # carry local class evidence, which the word tokens' cross-attention can then find.
    vis_aux = nn.Linear(vision_width, len(SHAPES))
    cls_aux = nn.Linear(vision_width, len(SHAPES))
    params = [*model.parameters(), *aux.parameters(), *vis_aux.parameters(),
              *(cls_aux.parameters() if cfg.vis_cls_weight > 0 else ())]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    train_seed = TRAIN_SEED_BASE + cfg.seed
    pool = [make_sample(train_seed, i, cfg.image_size, cfg.world) for i in range(cfg.pool)]
    pool_imgs = np.stack([s.image for s in pool])
    simple = np.array([i for i, s in enumerate(pool)
                       if len(s.objects) <= cfg.curriculum_max_objects and smallest_object(s) >= cfg.curriculum_min_area])
    probe_set = [make_sample(0, i, cfg.image_size, cfg.world) for i in range(cfg.probe_n)]
    itm_set = [make_sample(0, cfg.probe_n + i, cfg.image_size, cfg.world) for i in range(2 * cfg.probe_n)]
    # one-object images of the same evaluation seed (after the probe's): the curriculum's task, held out
    single_set = [s for s in (make_sample(0, 3 * cfg.probe_n + i, cfg.image_size, cfg.world) for i in range(12 * cfg.probe_n))
                  if len(s.objects) == 1][: 2 * cfg.probe_n]
    print(f"pool ready in {time.time() - t0:.1f}s, params {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M", flush=True)

    partners = confusable_pairs(cfg.confusable)
    history = []
    last_probe: dict = {}
    t_train = time.time()
    # the auxiliary head reads this text layer's output; the hook lives only while training runs
    with capture_outputs({"h": arch.text_layer(model, cfg.aux_layer)}, select=arch.text_layer_output) as aux_hidden:
        for step in range(1, cfg.steps + 1):
            model.train()
            # progress is by steps or, under a wall-time budget, by time, so the LR anneals either way
            progress = step / cfg.steps
            if cfg.max_minutes > 0:
                progress = max(progress, (time.time() - t_train) / (cfg.max_minutes * 60 - (t_train - t0)))
            lr = cfg.lr * min(1.0, step / cfg.warmup) * (0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * 0.9 + 0.1)
            for g in opt.param_groups:
                g["lr"] = lr
            src = simple if step <= cfg.curriculum_steps and len(simple) >= cfg.batch else np.arange(len(pool))
            idx = rng.choice(src, cfg.batch, replace=False)
            batch = [pool[i] for i in idx]
            imgs = pool_imgs[idx]
            if rng.random() < 0.5:
                imgs = imgs[:, :, ::-1].copy()  # horizontal flip: captions have no left/right
            pix = to_pixels(imgs)
            vis = arch.image_tokens(model, pix)

            loss_vis = torch.zeros(())
            if cfg.vis_aux_weight > 0:
                # MIL: a shape is present iff its best patch says so (max over patches). Unlike
                # mean pooling (stayed at chance), this trains per-patch class evidence quickly.
                present = torch.tensor([[float(c in s.labels) for c in SHAPES] for s in batch])
                patch_logits = vis_aux(vis[:, 1:])
                if cfg.vis_pool == "lse":
                    r = cfg.vis_lse_r
                    pooled = (torch.logsumexp(r * patch_logits, 1) - math.log(patch_logits.shape[1])) / r
                else:
                    pooled = patch_logits.max(1).values
                loss_vis = F.binary_cross_entropy_with_logits(pooled, present)
            if cfg.vis_cls_weight > 0:
                present = torch.tensor([[float(c in s.labels) for c in SHAPES] for s in batch])
                loss_vis = loss_vis + cfg.vis_cls_weight * F.binary_cross_entropy_with_logits(cls_aux(vis[:, 0]), present)
            warm = step <= cfg.vision_warmup_steps
            loss_itm = loss_aux = loss_itc = torch.zeros(())
            logits = torch.zeros(1, 2)
            target = torch.zeros(1, dtype=torch.long)
            if not warm:
                pos = [positive_caption(s, rng, cfg.prompt_prob) for s in batch]
                neg = [negative_caption(s, rng, cfg.prompt_prob) for s in batch]
                for i, s in enumerate(batch):
                    if cfg.presence_prob > 0 and rng.random() < cfg.presence_prob:
                        pair = presence_pair(s, rng, partners)
                        if pair:
                            pos[i], neg[i] = pair
                texts = pos + neg
                samples2 = batch + batch
                ids, att = arch.encode(tok, texts)
                rows = torch.arange(len(batch)).repeat(2)
                logits = arch.match(model, ids, att, pix, vis, rows)
                target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
                loss_itm = F.cross_entropy(logits, target)

                pb, pt, presence, colour_t, colour_m = aux_targets(tok, texts, ids, samples2)
                loss_aux = torch.zeros(())
                if len(pb):
                    a = aux(aux_hidden["h"][pb, pt])
                    loss_aux = F.binary_cross_entropy_with_logits(a[:, 0], presence)
                    if colour_m.sum() > 0:
                        lc = -(colour_t * F.log_softmax(a[:, 1:], -1)).sum(-1)
                        loss_aux = loss_aux + (lc * colour_m).sum() / colour_m.sum()

                loss_itc = torch.zeros(())
                features = arch.contrastive(model, tok, vis, pos) if cfg.itc_weight > 0 else None
                if features is not None:
                    vf, tf = features
                    sim = vf @ tf.t() / 0.07
                    same = torch.tensor([[float(set(a.labels) == set(b.labels)) for b in batch] for a in batch])
                    tgt = same / same.sum(1, keepdim=True)
                    loss_itc = 0.5 * (-(tgt * F.log_softmax(sim, 1)).sum(1).mean() - (tgt.t() * F.log_softmax(sim.t(), 1)).sum(1).mean())
            heads_only = bool(cfg.init) and step <= cfg.head_warmup
            model.requires_grad_(not heads_only)
            loss = cfg.vis_aux_weight * loss_vis if warm else (
                loss_itm + cfg.aux_weight * loss_aux + cfg.itc_weight * loss_itc + cfg.vis_aux_weight * loss_vis)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if step % 25 == 0 or step == 1:
                acc = float((logits.argmax(-1) == target).float().mean())
                print(f"step {step} loss {loss.item():.3f} itm {loss_itm.item():.3f} aux {loss_aux.item():.3f} itc {loss_itc.item():.3f} vis {loss_vis.item():.3f} acc {acc:.2f} lr {lr:.2e} t {time.time() - t0:.0f}s", flush=True)
            done = step == cfg.steps or (cfg.max_minutes > 0 and time.time() - t0 > cfg.max_minutes * 60)
            if cfg.probe_every and (step % cfg.probe_every == 0 or done):
                pr = probe_localisation(model, tok, probe_set, arch=arch)
                ia = itm_accuracy(model, tok, itm_set, arch=arch)
                pa = presence_auc(model, tok, itm_set, arch=arch)
                patch_auc, cls_auc = patch_presence_auc(model, vis_aux, itm_set, arch=arch,
                                                        cls_aux=cls_aux if cfg.vis_cls_weight > 0 else None)
                single_aucs = patch_presence_auc(model, vis_aux, single_set, arch=arch,
                                                 cls_aux=cls_aux if cfg.vis_cls_weight > 0 else None)
                means = {k: v for k, v in pr["per_head"].items() if k.endswith("mean")}
                last_probe = {"step": step, "itm_acc": ia, "best": pr["best"], "best_miou": pr["best_miou"],
                              "best_pointing": pr["best_pointing"], "presence_auc": pa, "patch_presence_auc": patch_auc, "cls_presence_auc": cls_auc,
                              "single_object_presence_auc": {"patch": single_aucs[0], "cls": single_aucs[1], "images": len(single_set)},
                              "head_means": means, "per_head": pr["per_head"]}
                history.append({k: v for k, v in last_probe.items() if k != "per_head"})
                top = sorted(pr["per_head"].items(), key=lambda kv: -kv[1]["miou"])[:4]
                print(f"PROBE step {step} patch-head presence auc {patch_auc:.3f} cls-head {cls_auc:.3f} (one-object images: "
                      f"{single_aucs[0]:.3f} / {single_aucs[1]:.3f}) | ITM presence auc "
                      + " ".join(f"{k}:{v:.3f}" for k, v in pa.items()), flush=True)
                print(f"PROBE step {step} itm_acc {ia:.3f} best {pr['best']} miou {pr['best_miou']:.3f} point {pr['best_pointing']:.3f} | "
                      + " ".join(f"{k}:{v['miou']:.3f}/{v['pointing']:.2f}" for k, v in top)
                      + " | means " + " ".join(f"{k}:{v['miou']:.3f}/{v['pointing']:.2f}" for k, v in means.items()), flush=True)
                if cfg.save_every and (step % cfg.save_every == 0 or done):
                    save_checkpoint(arch, model, tok, cfg, cfg.out, {"metrics": last_probe, "history": history, "steps_done": step,
                                                               "wall_seconds": time.time() - t0, **previous})
            if done:
                break

    extra = {"metrics": last_probe, "history": history, "steps_done": step, "wall_seconds": time.time() - t0, **previous}
    save_checkpoint(arch, model, tok, cfg, cfg.out, extra)
    return extra


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f, v in asdict(TrainConfig()).items():
        p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    args = p.parse_args(argv)
    cfg = TrainConfig(**{k: v for k, v in vars(args).items()})
    res = train(cfg)
    print(json.dumps({k: v for k, v in res["metrics"].items() if k != "per_head"}, indent=1))


if __name__ == "__main__":
    main()
