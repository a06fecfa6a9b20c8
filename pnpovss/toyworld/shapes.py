"""The ``toyworld-shapes`` world: the toy world's classes, where only the outline names the class.

Why: the class-textured ``toyworld`` lets a model recognise each class by its surface texture, so
plain drawn shapes are invisible to models trained there. Here every fill (object or background) is
drawn from one pool (``FILLS``: plain colours and textures of random colour, angle and scale) with the
same probabilities whatever the class, and each outline varies in scale, rotation and aspect, so no
fill and no fixed pose identifies a class. An object's fill is redrawn (class-independently) while its
mean colour is too close to the background under it, so objects stay visible.

Sample ``i`` of seed ``s`` is drawn from ``PCG64([s, i, 2])`` (a stream of its own, apart from
``toyworld``'s ``PCG64([s, i])``); the seed rule and the mask convention are ``world.py``'s.
"""

from __future__ import annotations

import numpy as np

from .common import (
    COLOURS,
    MIN_VISIBLE_PIXELS,
    PALETTE,
    SHAPES,
    Sample,
    _jitter,
    _n_objects,
    _shape_mask,
    _upsample,
    describe_objects,
)

WORLD = "toyworld-shapes"
FILLS: tuple[str, ...] = ("plain", "stripes", "dots", "checker", "rings", "noise")
FILL_PROBS: tuple[float, ...] = (0.35, 0.2, 0.1, 0.1, 0.1, 0.15)
"""Fill kinds and their probabilities, the same for every class and for the background."""
MIN_CONTRAST = 60.0
"""Least RGB distance between an object's mean fill colour and the background's mean under it."""
RADIUS = (0.12, 0.28)
"""Object half-size as a share of the image side (before the aspect stretch)."""
ASPECT = (0.7, 1.43)
"""Range of the width/height stretch of an outline (log-uniform)."""


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([int(seed), int(index), 2]))


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A fill colour: mostly a jittered palette colour, else a grey or any colour."""
    r = rng.random()
    if r < 0.65:
        return _jitter(rng, PALETTE[COLOURS[int(rng.integers(len(COLOURS)))]], 30.0)
    if r < 0.85:
        return np.full(3, rng.uniform(60, 200), np.float32)
    return rng.uniform(0, 255, 3).astype(np.float32)


def colour_name(rgb: np.ndarray) -> str:
    """The palette name nearest to ``rgb`` (the word captions use for a fill's base colour)."""
    d = [float(np.sum((np.asarray(PALETTE[c], np.float32) - rgb) ** 2)) for c in COLOURS]
    return COLOURS[int(np.argmin(d))]


def fill(rng: np.random.Generator, size: int, kind: str, base: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A (size, size, 3) float fill of ``kind`` in colours ``base`` and ``second``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "plain":
        a = np.ones((size, size), np.float32)
    elif kind == "stripes":
        theta, freq = rng.uniform(0, np.pi), rng.uniform(4, 20)
        t = np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy) + rng.uniform(0, 2 * np.pi))
        a = (t > 0).astype(np.float32) if rng.random() < 0.5 else (t + 1) / 2
    elif kind == "dots":
        freq = rng.uniform(6, 18)
        t = np.sin(2 * np.pi * freq * xx + rng.uniform(0, 6.3)) * np.sin(2 * np.pi * freq * yy + rng.uniform(0, 6.3))
        a = (t > 0.3).astype(np.float32)
    elif kind == "checker":
        cell, theta = rng.uniform(0.05, 0.2), rng.uniform(0, np.pi / 2)
        u = np.cos(theta) * xx - np.sin(theta) * yy
        v = np.sin(theta) * xx + np.cos(theta) * yy
        a = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    elif kind == "rings":
        cx, cy, freq = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(4, 16)
        a = (np.sin(2 * np.pi * freq * np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) + rng.uniform(0, 6.3)) + 1) / 2
    elif kind == "noise":
        cells = int(rng.integers(3, 11))
        a = _upsample(rng.random((cells, cells, 1)).astype(np.float32), size)[..., 0]
    else:
        raise ValueError(f"unknown fill {kind!r}")
    a = a[..., None]
    return base[None, None] * a + second[None, None] * (1 - a)


def outline(shape: str, size: int, pose: tuple[float, ...]) -> np.ndarray:
    """(size, size) bool inside test of ``shape`` at ``pose`` = (cx, cy, r, stretch, rotation), in image
    shares: the same outline whether drawn here or recomputed by a test from ``meta["poses"]``."""
    cx, cy, r, stretch, rot = pose
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    x = (coords[None, :] - cx) / r
    y = (coords[:, None] - cy) / r
    c, s = np.cos(rot), np.sin(rot)
    return _shape_mask(shape, (c * x + s * y) / stretch, (-s * x + c * y) * stretch)


def _draw_fill(rng: np.random.Generator, size: int, probs: tuple[float, ...] = FILL_PROBS) -> tuple[str, np.ndarray, np.ndarray]:
    kind = FILLS[int(rng.choice(len(FILLS), p=probs))]
    base = _colour(rng)
    return kind, base, fill(rng, size, kind, base, _colour(rng))


def fill_probs(kinds: tuple[str, ...] = FILLS) -> tuple[float, ...]:
    """``FILL_PROBS`` restricted to ``kinds`` and renormalised (an easier training distribution)."""
    unknown = set(kinds) - set(FILLS)
    if unknown or not kinds:
        raise ValueError(f"fill kinds {sorted(unknown) or '(none)'}: choose from {', '.join(FILLS)}")
    p = np.array([q if f in kinds else 0.0 for f, q in zip(FILLS, FILL_PROBS)])
    return tuple(p / p.sum())


def make_shape_sample(seed: int, index: int, size: int = 96, *, object_fills: tuple[float, ...] = FILL_PROBS,
                      background_fills: tuple[float, ...] = FILL_PROBS, objects: int | None = None,
                      radius: tuple[float, float] = RADIUS) -> Sample:
    """Sample ``index`` of ``seed`` in ``toyworld-shapes`` (deterministic, independent of other samples).
    The keywords make easier *training* variants (fill kinds from :func:`fill_probs`, a fixed object
    count, larger objects); with their defaults this is the world every evaluation uses."""
    rng = _rng(seed, index)
    bg_kind, _, image = _draw_fill(rng, size, background_fills)
    n = _n_objects(rng) if objects is None else objects
    if n > 1 and rng.random() < 0.85:
        shapes = list(rng.choice(len(SHAPES), size=n, replace=False))
    else:
        shapes = list(rng.integers(len(SHAPES), size=n))
    geo: list[tuple[np.ndarray, str, str, np.ndarray, str, tuple[float, ...]]] = []
    for k in shapes:
        shape = SHAPES[int(k)]
        r = rng.uniform(*radius)
        stretch = np.sqrt(np.exp(rng.uniform(np.log(ASPECT[0]), np.log(ASPECT[1]))))
        extent = r * max(stretch, 1 / stretch) * 0.8
        cx, cy = rng.uniform(extent, 1 - extent, 2)
        rot = rng.uniform(0, 2 * np.pi)
        inside = outline(shape, size, (cx, cy, r, stretch, rot))
        behind = image[inside].mean(0) if inside.any() else image.reshape(-1, 3).mean(0)
        for _ in range(8):  # class-independent redraw: keep the object's fill off the background's colour
            kind, base, obj = _draw_fill(rng, size, object_fills)
            if not inside.any() or np.linalg.norm(obj[inside].mean(0) - behind) >= MIN_CONTRAST:
                break
        geo.append((inside, shape, colour_name(base), obj, kind, (float(cx), float(cy), float(r), float(stretch), float(rot))))

    keep = [True] * len(geo)
    covered = np.zeros((size, size), bool)
    for j in range(len(geo) - 1, -1, -1):
        if (geo[j][0] & ~covered).sum() < MIN_VISIBLE_PIXELS:
            keep[j] = False
            continue
        covered |= geo[j][0]

    mask = np.zeros((size, size), np.uint8)
    objects: list[tuple[str, str]] = []
    fills: list[str] = []
    poses: list[tuple[float, ...]] = []
    for (inside, shape, colour, obj, kind, pose), ok in zip(geo, keep):
        if not ok:
            continue
        image[inside] = obj[inside]
        mask[inside] = SHAPES.index(shape) + 1
        objects.append((shape, colour))
        fills.append(kind)
        poses.append(pose)
    present = set(np.unique(mask).tolist()) - {0}
    labels = [s for i, s in enumerate(SHAPES) if i + 1 in present]
    caption = describe_objects(objects, rng)
    image = image + rng.normal(0, rng.uniform(2, 15), image.shape).astype(np.float32)
    img = np.clip(image, 0, 255).astype(np.uint8)
    return Sample(img, mask, labels, objects, caption, seed, index,
                  {"world": WORLD, "background": bg_kind, "fills": fills, "poses": poses})
