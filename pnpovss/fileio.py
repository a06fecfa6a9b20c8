"""Files in and out: any image a user may hand us read as RGB uint8, and results written atomically.

Conversions: EXIF orientation is applied; palette/RGBA/LA images are composited on white (what a
viewer shows); greyscale and 1-bit are replicated to RGB; 16-bit and 32-bit integer images are
scaled by their bit depth, float images from [0, 1]; CMYK goes through PIL's conversion. Writes go
to a temporary file in the target directory and are renamed over it, so readers never see a
partial file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, "torch.Tensor"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> (H, W, 3) uint8, EXIF orientation applied."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        return np.asarray(_flatten_alpha(img) if has_alpha else img.convert("RGB"), dtype=np.uint8).copy()
    if mode in ("RGBA", "LA", "RGBa", "La"):
        return np.asarray(_flatten_alpha(img), dtype=np.uint8).copy()
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        if arr.max() > 65535:
            top = 2.0**32 - 1
        return array_to_rgb((np.clip(arr, 0, top) / top * 255.0 + 0.5).astype(np.uint8))
    if mode == "F":
        return array_to_rgb(np.asarray(img, dtype=np.float32))
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1|3|4) arrays of uint8/uint16/float -> (H, W, 3) uint8."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise ImageLoadError(f"image array has shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageLoadError("image array holds NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -0.05 or hi > 1.05:  # small resampling overshoots are clipped; 0..255 floats are not guessed at
            raise ImageLoadError(f"float image array has values in [{lo:g}, {hi:g}]; float images must be in [0, 1] "
                                 "(divide by 255, or pass uint8)")
        out = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        out = np.clip(arr, 0, 255).astype(np.uint8) if arr.dtype != np.bool_ else arr.astype(np.uint8) * 255
    else:
        raise ImageLoadError(f"image array has unsupported dtype {arr.dtype}")
    if out.shape[2] == 4:
        alpha = out[..., 3:4].astype(np.float32) / 255.0
        out = (out[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(out[..., :3])


MAX_PIXELS = 2 * 89_478_485
"""Images with more pixels are refused (Pillow's own decompression-bomb limit) unless a caller
passes a higher ``max_pixels`` (CLI: ``--max-pixels``)."""


@contextlib.contextmanager
def _pillow_size_check_off() -> Iterator[None]:
    """Pillow's global bomb check off while opening; :func:`load_image` applies its own limit."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def tensor_to_rgb(tensor) -> np.ndarray:
    """A torch tensor (3, H, W) / (1, H, W) (torchvision's layout) or (H, W, 3) / (H, W) -> RGB uint8,
    with the value conventions of :func:`array_to_rgb`."""
    arr = tensor.detach().cpu().numpy()
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    elif arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] in (1, 3, 4):
        raise ImageLoadError(f"image tensor of shape {tuple(arr.shape)} is ambiguous (channels first or last?); "
                             "pass a numpy array (H, W, 3)")
    return array_to_rgb(arr)


def _stat_problem(path: Path, exc: OSError) -> str:
    """Why ``path`` cannot be opened, in words: a symbolic link loop and a dangling link are named
    as such (``exists()`` is False for both, and "no such file" would send the user looking for it)."""
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop (the links lead back to themselves); point the link at the image"
    if exc.errno == errno.ENOENT:
        if path.is_symlink():
            return f"a symbolic link to a missing file ({os.readlink(path)})"
        return "no such file"
    return f"cannot open ({exc.strerror or type(exc).__name__})"


def load_image(source: ImageInput, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Path, PIL image or array -> (H, W, 3) uint8. Raises :class:`ImageLoadError` with one line.
    A file above ``max_pixels`` (None: no limit) is refused before it is decoded."""
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    if isinstance(source, Image.Image):
        return pil_to_rgb(source)
    if type(source).__module__.startswith("torch") and hasattr(source, "detach"):
        return tensor_to_rgb(source)
    if isinstance(source, (bytes, bytearray)) or not isinstance(source, (str, os.PathLike)):
        raise ImageLoadError(f"cannot read an image from a {type(source).__name__}; pass a path, a PIL image, "
                             "a numpy array (H, W, 3) or a torch tensor (3, H, W)/(H, W, 3)")
    path = Path(source)
    try:
        path.stat()
    except OSError as exc:
        raise ImageLoadError(f"{path}: {_stat_problem(path, exc)}") from None
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory, not an image")
    try:
        with _pillow_size_check_off(), Image.open(path) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise ImageLoadError(
                    f"{path}: {img.width}x{img.height} is {img.width * img.height:,} pixels, above the limit of "
                    f"{max_pixels:,} that guards against decompression bombs; if you trust the file, pass "
                    f"--max-pixels {img.width * img.height} (API: load_image(..., max_pixels=None))")
            img.load()
            return pil_to_rgb(img)
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"{path}: unreadable or truncated image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


# ----------------------------------------------------------------------------------- atomic writes
TEMP_PREFIX = ".pnpovss-"
"""Temporary files are ``.pnpovss-XXXXXXXX.tmp``: short whatever the target's name is."""


def umask() -> int:
    """The process's file-creation mask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_temp(directory: Path, data: bytes) -> str:
    """``data`` in a new temporary file of ``directory``, flushed to disk, with the permissions a
    plain ``open`` would give (mkstemp's 0600 would hide results from other users); its path. The
    caller renames it into place (one file: :func:`atomic_write_bytes`; a unit of several:
    :func:`pnpovss.outputs.write_result`) or removes it."""
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_temp(path.parent, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
