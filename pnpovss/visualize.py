"""Drawing results: the label palette, the PNG of a label map, and the overlay with its legend."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import PnpOvssError


def palette(n: int) -> np.ndarray:
    """n distinct RGB colours; index 0 is black (background), then the usual bit-interleaved map."""
    cols = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        cols[i] = (r, g, b)
    return cols


def label_image(labels: np.ndarray) -> tuple[Image.Image, str]:
    """Label map -> (image whose pixel value is the label, format): an 8-bit palette PNG up to 256
    labels, else 16-bit greyscale. The one label-PNG writer (``segment``'s files, the demo's downloads)."""
    top = int(labels.max()) if labels.size else 0
    if top > 65535:
        raise PnpOvssError(f"{top + 1} labels do not fit in a 16-bit PNG; pass fewer classes")
    if top > 255:
        return Image.fromarray(labels.astype(np.uint16)), "16-bit greyscale"
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(palette(256).reshape(-1).tolist())
    return img, "8-bit palette"


def png_bytes(img: Image.Image) -> bytes:
    """``img`` encoded as PNG, as every result file is."""
    buf = io.BytesIO()
    # zlib's default level takes ~10 s for a 24-megapixel overlay; level 1 is several times faster
    img.save(buf, format="PNG", compress_level=6 if img.width * img.height <= 4_000_000 else 1)
    return buf.getvalue()


def overlay_image(image: np.ndarray, labels: np.ndarray, names: list[str], alpha: float = 0.5,
                  skip_first: bool = False) -> Image.Image:
    """Blend label colours over the image and add a legend strip naming each colour."""
    cols = palette(max(len(names), 1))
    original = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    base = Image.blend(original, Image.fromarray(cols[labels]), alpha)  # in C: no float copies of a large image
    if skip_first:  # leave background pixels as they are
        base.paste(original, mask=Image.fromarray((labels == 0).astype(np.uint8) * 255))
    font, names = legend_font(names)
    row = 16
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max([base.width] + [int(measure.textlength(n, font=font)) + 26 for n in names])  # the text, not the image, sets it
    legend = Image.new("RGB", (width, row * len(names) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for i, name in enumerate(names):
        y = 2 + i * row
        draw.rectangle([4, y + 2, 14, y + row - 3], fill=tuple(int(v) for v in cols[i]), outline=(0, 0, 0))
        draw.text((20, y), name, fill=(0, 0, 0), font=font)
    out = Image.new("RGB", (width, base.height + legend.height), (255, 255, 255))
    out.paste(base, (0, 0))
    out.paste(legend, (0, base.height))
    return out


LEGEND_FONTS = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "NotoSansCJK-Regular.ttc", "Arial Unicode.ttf",
                "arialuni.ttf", "unifont.ttf")
"""Fonts tried, in order, for a legend with characters outside Pillow's own font."""


def _covers(font, text: str) -> bool:
    """Does ``font`` have a glyph for every character of ``text`` (not the .notdef box)?"""
    def glyph(ch: str) -> bytes:
        img = Image.new("L", (32, 32))
        ImageDraw.Draw(img).text((4, 4), ch, font=font, fill=255)
        return img.tobytes()

    missing = glyph("\U0010fffd")  # a private-use code point: drawn as the font's .notdef box
    return all(glyph(ch) != missing for ch in set(text) if not ch.isspace())


def legend_font(names: list[str]) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, list[str]]:
    """A font that can draw every name, and the names to draw: if no font covers a character,
    it is written as its escape (``\\u661f``) rather than as an empty box."""
    text = "".join(names)
    fonts = [ImageFont.load_default(size=12)]
    if not text.isascii():
        for candidate in LEGEND_FONTS:
            try:
                fonts.append(ImageFont.truetype(candidate, 12))
            except OSError:
                continue
    for font in fonts:
        if text.isascii() or _covers(font, text):
            return font, names
    font = fonts[-1]  # the broadest font found: escape only what it lacks
    return font, ["".join(ch if _covers(font, ch) else ch.encode("unicode_escape").decode() for ch in n) for n in names]
