"""What both toy worlds share: the classes, the palette, the seed rule, the mask convention
(``Sample``), the outlines (``_shape_mask``) and the captions. ``world.py`` draws the class-textured
world and ``shapes.py`` the shape-only one, each from these, so neither imports the other's drawing.
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


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float = 25.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0.0, amount, 3), 0, 255).astype(np.float32)


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
