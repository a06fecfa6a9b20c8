"""Seeded, deterministic toy worlds of coloured shapes on textured backgrounds.

Two worlds share the classes, the seed rule and the mask convention (``WORLDS``):

* ``toyworld``: each class has its own fine surface texture (the shipped toy models learned it);
* ``toyworld-shapes``: fills come from one pool of plain colours and textures shared by every class
  and by the background, and outlines vary in scale, rotation and aspect, so only the outline
  names the class (``shapes.py``).

What both share (classes, palette, seed rule, ``Sample``, outlines, captions) is in ``common.py``.

Why: no pretrained VLM weights can be downloaded here, so the pipeline is tested on a
world small enough that a tiny BLIP trained on the CPU learns to localise words, yet hard
enough (saturated textured backgrounds, occlusion, several classes per image) that a
colour heuristic does not solve it.

Sample ``i`` of seed ``s`` is drawn from its own ``numpy.random.Generator(PCG64)``
seeded with ``(s, i)``, so it is identical on any machine and independent of how many
samples are drawn. Seed rule: evaluation uses seeds ``0 .. EVAL_SEED_MAX``; training
uses seeds ``>= TRAIN_SEED_BASE``, so training images never equal evaluation images.
"""

from __future__ import annotations

import numpy as np

from .common import (COLOURS, EVAL_SEED_MAX, MIN_VISIBLE_PIXELS, PALETTE, PLURALS, SHAPES, TRAIN_SEED_BASE, Sample,
                     _jitter, _n_objects, _shape_mask, _upsample, describe_objects, is_train_seed)
from .shapes import make_shape_sample


BACKGROUNDS: tuple[str, ...] = ("noise", "stripes", "gradient", "checker", "blobs")


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([int(seed), int(index)]))


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A background colour: usually a jittered palette colour (as saturated as objects)."""
    if rng.random() < 0.75:
        return _jitter(rng, PALETTE[COLOURS[rng.integers(len(COLOURS))]], 35.0)
    return rng.uniform(0, 255, 3).astype(np.float32)


def _background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c1, c2 = _random_colour(rng), _random_colour(rng)
    if kind == "noise":
        cells = int(rng.integers(3, 9))
        small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
        # mix with palette colours so that blobs of object-like colour appear
        pick = rng.random((cells, cells)) < 0.5
        small[pick] = c1
        img = _upsample(small, size)
    elif kind == "stripes":
        theta = rng.uniform(0, np.pi)
        freq = rng.uniform(3, 10)
        t = np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy) + rng.uniform(0, 6.3))
        a = (t > 0).astype(np.float32)[..., None] if rng.random() < 0.6 else ((t + 1) / 2)[..., None]
        img = c1 * a + c2 * (1 - a)
    elif kind == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        t = np.cos(theta) * xx + np.sin(theta) * yy
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
        img = c1 * t[..., None] + c2 * (1 - t[..., None])
    elif kind == "checker":
        cell = rng.uniform(0.08, 0.3)
        theta = rng.uniform(0, np.pi / 2)
        u = np.cos(theta) * xx - np.sin(theta) * yy
        v = np.sin(theta) * xx + np.cos(theta) * yy
        a = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)[..., None]
        img = c1 * a + c2 * (1 - a)
    else:  # blobs: smooth colour field plus soft discs of palette colours (distractors)
        img = np.broadcast_to(c1, (size, size, 3)).astype(np.float32).copy()
        for _ in range(int(rng.integers(2, 6))):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.3)
            d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / r
            a = np.clip(1.5 - d, 0, 1)[..., None]
            img = img * (1 - a) + _random_colour(rng) * a
    img = img + rng.normal(0, rng.uniform(4, 18), (size, size, 3)).astype(np.float32)
    return img


# Each class has its own fine surface texture (random colour, jittered phase/frequency).
# Why: a from-scratch ViT on one CPU thread learns outline-only shape identity far too
# slowly (image-level presence stayed at chance for 300+ steps); a class-typical texture,
# like fur or grass in real images, gives every patch local evidence of its class, which is
# what word-to-patch cross-attention needs. Backgrounds never use these fine textures.
_CLASS_TEXTURE = {
    "circle": ("stripes", 0.0),
    "square": ("stripes", np.pi / 2),
    "triangle": ("stripes", np.pi / 4),
    "star": ("dots", 0.0),
    "cross": ("stripes", 3 * np.pi / 4),
    "heart": ("rings", 0.0),
}


def _object_texture(rng: np.random.Generator, size: int, base: np.ndarray, shape: str = "circle",
                    centre: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """Object fill: its colour modulated by the class's fine texture plus mild noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind, theta = _CLASS_TEXTURE[shape]
    theta = theta + rng.uniform(-0.2, 0.2)
    freq = rng.uniform(16, 20)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "stripes":
        t = np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
    elif kind == "dots":
        t = np.sin(2 * np.pi * freq * xx + phase) * np.sin(2 * np.pi * freq * yy + phase)
    else:
        d = np.sqrt((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2)
        t = np.sin(2 * np.pi * freq * d + phase)
    amp = rng.uniform(30, 45)
    tex = amp * t[..., None] + rng.normal(0, 6, (size, size, 1)).astype(np.float32)
    # dark colours get lighter texture and light colours darker, so the pattern stays visible
    return base[None, None, :] + np.where(base.mean() > 128, tex - amp * 0.5, tex + amp * 0.5)


WORLDS: tuple[str, ...] = ("toyworld", "toyworld-shapes")
"""World names (also the ``--dataset`` names): the class-textured world and the shape-only world."""


def make_sample(seed: int, index: int, size: int = 96, world: str = "toyworld") -> Sample:
    """Draw sample ``index`` of ``seed`` in ``world`` (deterministic, independent of other samples)."""
    if world == "toyworld-shapes":
        return make_shape_sample(seed, index, size)
    if world != "toyworld":
        raise ValueError(f"unknown toy world {world!r}; known: {', '.join(WORLDS)}")
    rng = _rng(seed, index)
    bg_kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    image = _background(rng, size, bg_kind)

    n = _n_objects(rng)
    if n > 1 and rng.random() < 0.85:
        shapes = list(rng.choice(len(SHAPES), size=n, replace=False))
    else:
        shapes = list(rng.integers(len(SHAPES), size=n))
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    geo: list[tuple[np.ndarray, str, str, np.ndarray]] = []
    for k in shapes:
        shape = SHAPES[int(k)]
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        r = rng.uniform(0.11, 0.24)
        cx, cy = rng.uniform(r * 0.8, 1 - r * 0.8, 2)
        rot = rng.uniform(-0.5, 0.5) if shape in ("triangle", "star", "heart") else rng.uniform(0, np.pi)
        x = (coords[None, :] - cx) / r
        y = (coords[:, None] - cy) / r
        c, s = np.cos(rot), np.sin(rot)
        u = c * x + s * y
        v = -s * x + c * y
        inside = _shape_mask(shape, u, v)
        fill = _object_texture(rng, size, _jitter(rng, PALETTE[colour], 20.0), shape, (cx, cy))
        geo.append((inside, shape, colour, fill))

    # Visibility under occlusion (later objects on top); drop tiny ones so labels stay honest.
    keep = [True] * len(geo)
    covered = np.zeros((size, size), bool)
    for j in range(len(geo) - 1, -1, -1):
        vis = geo[j][0] & ~covered
        if vis.sum() < MIN_VISIBLE_PIXELS:
            keep[j] = False
            continue
        covered |= geo[j][0]

    mask = np.zeros((size, size), np.uint8)
    objects: list[tuple[str, str]] = []
    for (inside, shape, colour, fill), ok in zip(geo, keep):
        if not ok:
            continue
        image[inside] = fill[inside]
        mask[inside] = SHAPES.index(shape) + 1
        objects.append((shape, colour))
    present = set(np.unique(mask).tolist()) - {0}
    labels = [s for i, s in enumerate(SHAPES) if i + 1 in present]
    # An object fully hidden by a same-class object above it is still "present"; keep only
    # objects whose class is in the mask (always true here, since visible >= threshold).
    caption = describe_objects(objects, rng)
    img = np.clip(image, 0, 255).astype(np.uint8)
    return Sample(img, mask, labels, objects, caption, seed, index, {"background": bg_kind})


def make_split(seed: int, n: int, size: int = 96, world: str = "toyworld") -> list[Sample]:
    """Samples ``0 .. n-1`` of ``seed`` in ``world``."""
    return [make_sample(seed, i, size, world) for i in range(n)]


def vocabulary() -> list[str]:
    """All words captions and prompts can use (for building the toy tokenizer)."""
    extra = [
        "a", "an", "the", "picture", "photo", "image", "of", "and", "with", "on", "in",
        "background", "object", "objects", "shape", "shapes", "nothing", "there", "is",
        "are", "one", "two", "three", "four", "some", "this", "that", "colour", "color",
        ",", ".", "small", "large", "big",
    ]
    words = extra + list(SHAPES) + [PLURALS[s] for s in SHAPES] + list(COLOURS)
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)


__all__ = ["BACKGROUNDS", "COLOURS", "EVAL_SEED_MAX", "MIN_VISIBLE_PIXELS", "PALETTE", "PLURALS", "SHAPES",
           "TRAIN_SEED_BASE", "WORLDS", "Sample", "describe_objects", "is_train_seed", "make_sample", "make_split",
           "vocabulary"]
"""The toy worlds' public names: this module's and those it shares with ``shapes.py`` (``common.py``)."""
