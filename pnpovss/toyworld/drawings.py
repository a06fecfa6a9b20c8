"""Plain shapes drawn with PIL: a filled disc, square or triangle on noisy grey, no texture.

Why: the shape world (``toyworld-shapes``) claims that only the outline names a class; a picture drawn
outside either world, the way a visitor of the demo page draws one, is the check of that claim (the
textured world's model sees nothing in it). The shape-world bar, ``bench/toy_drawings.py`` and the
page's drawn example all use these drawings.
"""

from __future__ import annotations

import numpy as np

DRAWN_SHAPES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("circle", (210, 40, 40)), ("square", (40, 70, 210)), ("triangle", (40, 170, 60)))
"""The plain drawings of the shape-world bar: a filled red disc, blue square and green triangle."""


def _mask(shape: str, width: int, height: int, x: float, k: float) -> np.ndarray:
    """(height, width) bool mask of ``shape`` drawn with PIL at offset (x, 0), scaled by ``k`` from its 96 px layout."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([x + 26 * k, 24 * k, x + 70 * k, 68 * k], fill=1)
    elif shape == "square":
        draw.rectangle([x + 28 * k, 28 * k, x + 68 * k, 68 * k], fill=1)
    elif shape == "triangle":
        draw.polygon([(x + 48 * k, 20 * k), (x + 74 * k, 70 * k), (x + 22 * k, 70 * k)], fill=1)
    else:
        raise ValueError(f"no plain drawing of {shape!r}; drawn shapes: circle, square, triangle")
    return np.asarray(img, bool)


def _noisy_grey(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return np.clip(128 + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def plain_drawing(shape: str, colour: tuple[int, int, int], seed: int = 0, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """One plain filled ``shape`` (circle, square or triangle) on a noisy grey background, and its exact
    (size, size) bool mask."""
    img = _noisy_grey(np.random.default_rng(seed), size, size)
    mask = _mask(shape, size, size, 0, size / 96)
    img[mask] = colour
    return img, mask


def drawn_row(seed: int = 0, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """The three drawings side by side on one noisy grey strip (size x 3*size): the page's drawn example.
    Returns the image and its label map (0 background, i + 1 for ``DRAWN_SHAPES[i]``)."""
    img = _noisy_grey(np.random.default_rng(seed), size, 3 * size)
    labels = np.zeros((size, 3 * size), np.uint8)
    for i, (shape, colour) in enumerate(DRAWN_SHAPES):
        mask = _mask(shape, 3 * size, size, i * size, size / 96)
        img[mask] = colour
        labels[mask] = i + 1
    return img, labels
