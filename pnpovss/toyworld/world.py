"""Seeded, deterministic toy worlds of coloured shapes on textured backgrounds.

Two worlds share the classes, the seed rule and the mask convention (``WORLDS``):

* ``toyworld``: each class has its own fine surface texture (the shipped toy models learned it);
* ``toyworld-shapes``: fills come from one pool of plain colours and textures shared by every class
  and by the background, and outlines vary in scale, rotation and aspect, so only the outline
  names the class (``shapes.py``).

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

from dataclasses import dataclass, field

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")
PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}

# Named palette: objects AND backgrounds draw from it, so colour alone cannot find objects.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 180, 50),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 50, 190),
    "orange": (245, 140, 20),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

TRAIN_SEED_BASE = 1_000_000
EVAL_SEED_MAX = 999
MIN_VISIBLE_PIXELS = 20
BACKGROUNDS: tuple[str, ...] = ("noise", "stripes", "gradient", "checker", "blobs")


@dataclass
class Sample:
    """One toy image with its exact segmentation and caption."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, 0 = background, i + 1 = SHAPES[i]
    labels: list[str]  # shape names present, in SHAPES order
    objects: list[tuple[str, str]]  # (shape, colour) of visible objects, bottom to top
    caption: str
    seed: int = 0
    index: int = 0
    meta: dict = field(default_factory=dict)


def is_train_seed(seed: int) -> bool:
    """True for seeds reserved to training (never used for evaluation)."""
    return seed >= TRAIN_SEED_BASE


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([int(seed), int(index)]))


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float = 25.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0.0, amount, 3), 0, 255).astype(np.float32)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A background colour: usually a jittered palette colour (as saturated as objects)."""
    if rng.random() < 0.75:
        return _jitter(rng, PALETTE[COLOURS[rng.integers(len(COLOURS))]], 35.0)
    return rng.uniform(0, 255, 3).astype(np.float32)


def _upsample(small: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a (h, w, c) grid to (size, size, c) with numpy only."""
    h, w = small.shape[:2]
    ys = np.linspace(0, h - 1, size)
    xs = np.linspace(0, w - 1, size)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0)[:, None, None]
    wx = (xs - x0)[None, :, None]
    top = small[y0][:, x0] * (1 - wx) + small[y0][:, x1] * wx
    bot = small[y1][:, x0] * (1 - wx) + small[y1][:, x1] * wx
    return top * (1 - wy) + bot * wy


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


def _polygon_inside(px: np.ndarray, py: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over points (works for non-convex stars)."""
    inside = np.zeros(px.shape, bool)
    n = len(vx)
    for i in range(n):
        x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
        cond = (y0 > py) != (y1 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (py - y0) * (x1 - x0) / (y1 - y0 + 1e-12)
        inside ^= cond & (px < xc)
    return inside


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in the object's normalised frame (u, v roughly in [-1, 1], rotated)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82)
    if shape == "triangle":
        ang = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return _polygon_inside(u, v, np.cos(ang) * 1.05, -np.sin(ang) * 1.05 + 0.2)
    if shape == "star":
        ang = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.1, 0.45)
        return _polygon_inside(u, v, np.cos(ang) * rad, np.sin(ang) * rad)
    if shape == "cross":
        w = 0.33
        return ((np.abs(u) <= w) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= w) & (np.abs(u) <= 0.95))
    if shape == "heart":
        x, y = u * 1.25, -v * 1.25 + 0.15
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    raise ValueError(f"unknown shape {shape!r}")


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


def _n_objects(rng: np.random.Generator) -> int:
    return int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))


def _article_phrase(colour: str, shape: str) -> str:
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape}"


def describe_objects(objects: list[tuple[str, str]], rng: np.random.Generator | None = None) -> str:
    """A training caption naming every (shape, colour) pair, e.g. 'a picture of a red circle and a blue star'
    (not the pipeline's caption, which is :func:`pnpovss.backbones.caption_for`)."""
    objs = list(objects)
    if rng is not None:
        objs = [objs[i] for i in rng.permutation(len(objs))]
    phrases = [_article_phrase(c, s) for s, c in objs]
    if not phrases:
        return "a picture of nothing"
    if len(phrases) == 1:
        body = phrases[0]
    else:
        body = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return "a picture of " + body


WORLDS: tuple[str, ...] = ("toyworld", "toyworld-shapes")
"""World names (also the ``--dataset`` names): the class-textured world and the shape-only world."""


def make_sample(seed: int, index: int, size: int = 96, world: str = "toyworld") -> Sample:
    """Draw sample ``index`` of ``seed`` in ``world`` (deterministic, independent of other samples)."""
    if world == "toyworld-shapes":
        from .shapes import make_shape_sample

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
