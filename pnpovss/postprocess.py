"""From patch-grid class maps to a label map (PnP-OVSS steps 4-7).

normalise + threshold on the grid -> bilinear (or bicubic-constant) upsampling -> background channel -> Gaussian blur
(sigma a fraction of the image size) + min-max -> dense CRF (or argmax).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from .config import PipelineConfig


def minmax(maps: np.ndarray, constant: str = "zero") -> np.ndarray:
    """Min-max normalise each channel of (C, ...) to [0, 1]. A constant channel carries no
    ranking: it becomes 0 (``constant="zero"``) or keeps its value clipped to [0, 1] (``"keep"``)."""
    out = np.empty_like(maps, dtype=np.float32)
    for c, m in enumerate(maps):
        lo, hi = float(m.min()), float(m.max())
        if hi - lo > 1e-12:
            out[c] = (m - lo) / (hi - lo)
        else:
            out[c] = 0.0 if constant == "zero" else np.clip(m, 0.0, 1.0)
    return out


def threshold_maps(grid_maps: np.ndarray, threshold: float, mode: str = "keep") -> np.ndarray:
    """Step 4a: per class min-max normalise, zero values below ``threshold``; the rest keep their
    value (``keep``) or become 1 (``binary``). ``absolute``: 1 where the map itself reaches it."""
    if mode == "absolute":  # the CVPR-era evaluation: the combined map's own scale, no min-max
        return (np.asarray(grid_maps) >= threshold).astype(np.float32)
    norm = minmax(grid_maps)
    kept = norm if mode == "keep" else np.ones_like(norm)
    return np.where(norm >= threshold, kept, 0.0).astype(np.float32)


def upsample(maps: np.ndarray, size: tuple[int, int], align_corners: bool = True) -> np.ndarray:
    """Bilinear (C, gh, gw) -> (C, H, W). ``align_corners=True`` as the reference segmentation
    script (corner patches' centres sit on the image corners, so border patches reach further in);
    ``False`` places patch centres at their pixel centres."""
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=align_corners)[0].numpy()


def upsample_bicubic_constant(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, gh, gw) -> (C, H, W) as the CVPR-era evaluation scripts' ``Attmap_resize``: each map
    shifted to minimum 0 and divided by its maximum (when positive), then skimage ``resize(order=3,
    mode="constant")``, i.e. a cubic spline over the grid with zeros outside it (pixel-area
    aligned) and the result clipped to the map's range. Border patches fade towards 0."""
    from scipy.ndimage import zoom

    out = np.empty((maps.shape[0], *size), dtype=np.float32)
    for c, m in enumerate(np.asarray(maps, dtype=np.float32)):
        m = m - m.min()
        if m.max() > 0:
            m = m / m.max()
        factors = (size[0] / m.shape[0], size[1] / m.shape[1])
        up = zoom(m, factors, order=3, mode="grid-constant", cval=0.0, grid_mode=True)
        out[c] = np.clip(up, m.min(), m.max())
    return out


def background_channel(class_maps: np.ndarray, rule: str = "zero") -> np.ndarray:
    """Step 5: ``zero`` -> 1 where every class map is 0; ``one_minus_sum`` -> clamp(1 - sum)."""
    if rule == "zero":
        return np.all(class_maps <= 0, axis=0).astype(np.float32)
    return np.clip(1.0 - class_maps.sum(axis=0), 0.0, 1.0).astype(np.float32)


def blur(maps: np.ndarray, sigma_fraction: float, mode: str = "reflect") -> np.ndarray:
    """Step 6: Gaussian blur of each channel with sigma = fraction * max(H, W), then min-max.
    ``mode`` is scipy's border rule (the reference calls scipy with its default, ``reflect``)."""
    h, w = maps.shape[-2:]
    sigma = sigma_fraction * max(h, w)
    if sigma <= 1e-15 or max(h, w) > BLUR_OPERATOR_MAX_SIDE:
        blurred = np.stack([gaussian_filter(m, sigma=sigma, mode=mode) for m in maps])
    else:
        rows, cols = blur_operator(h, sigma, mode), blur_operator(w, sigma, mode).T  # torch: its thread setting
        blurred = np.stack([(rows @ torch.from_numpy(m).double()).to(_TORCH[m.dtype]).double() @ cols
                            for m in maps]).astype(maps.dtype)
    return minmax(blurred, constant="keep")


BLUR_OPERATOR_MAX_SIDE = 2048
"""Up to this side the blur is two matrix products (an operator matrix of side^2 doubles: 32 MB at
2048); above it, scipy's filter itself."""


@functools.lru_cache(maxsize=8)
def blur_operator(n: int, sigma: float, mode: str) -> torch.Tensor:
    """scipy's 1-D Gaussian filter of length ``n`` as an (n, n) matrix: the filter applied to the
    identity, so ``M @ x`` is ``gaussian_filter1d(x)`` with scipy's own weights and border rule.
    :func:`blur` applies it per axis, rounding to the maps' dtype between the axes as scipy's
    ``gaussian_filter`` does, which gives its result (equal on the test's maps; the double sums'
    order may differ in the last bit of a rare value) at a fraction of the time: at
    a 1024 px working size, a sigma of 51 px is a 411-tap correlation per pixel (seconds per
    answer on the demo page), against one cached matrix product per axis."""
    return torch.from_numpy(gaussian_filter1d(np.eye(n), sigma, axis=0, mode=mode))


_TORCH = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


CRF_CLIP = 1e-5
"""Probabilities are clipped to this before -log, as pydensecrf's ``unary_from_softmax`` (the
reference's CRF) does. A softmax over fewer than ~10^5 channels of [0, 1] maps never reaches it."""


def softmax(maps: np.ndarray) -> np.ndarray:
    e = np.exp(maps - maps.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def dense_crf(maps: np.ndarray, image: np.ndarray, config: PipelineConfig) -> np.ndarray:
    """Step 7: unary -log p (p = softmax over channels, or the maps as probabilities), Gaussian +
    bilateral pairwise terms; argmax of Q."""
    import pydensecrf.densecrf as dcrf

    n, h, w = maps.shape
    if n == 1:
        return np.zeros((h, w), dtype=np.int64)
    probs = maps.astype(np.float64) if config.crf_unary == "probs" else softmax(maps.astype(np.float64))
    probs = probs.reshape(n, -1)
    unary = np.ascontiguousarray(-np.log(np.clip(probs, CRF_CLIP, 1.0)).astype(np.float32))
    g_sxy, b_sxy = crf_kernels(config, max(h, w))
    crf = dcrf.DenseCRF2D(w, h, n)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=g_sxy, compat=config.crf_gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=b_sxy,
        srgb=config.crf_bilateral_srgb,
        rgbim=np.array(image, dtype=np.uint8, order="C", copy=True),  # pydensecrf needs a writeable buffer
        compat=config.crf_bilateral_compat,
    )
    q = np.asarray(crf.inference(config.crf_iters))
    return q.argmax(axis=0).reshape(h, w)


def crf_kernels(config: PipelineConfig, side: int) -> tuple[float, float]:
    """(gaussian sxy, bilateral sxy) in pixels of an image of long side ``side``.

    With ``crf_reference_side`` R and ``side`` L > R both widths scale by L/R, so that a kernel
    covers the same part of the scene at any pixel size. The compatibilities stay: pydensecrf
    normalises its kernels (``NORMALIZE_SYMMETRIC``, its default), so a wider kernel over more
    pixels does not weigh more against the unary (checked in ``tests/test_postprocess.py``; scaling
    them by (R/L)^2 as well made the upscaled labels worse there). Otherwise the configured pixels."""
    ref = config.crf_reference_side
    s = max(1.0, side / ref) if ref else 1.0
    return config.crf_gaussian_sxy * s, config.crf_bilateral_sxy * s


def postprocess(grid_maps: np.ndarray, image: np.ndarray, config: PipelineConfig,
                working_image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(C, gh, gw) class maps + the (H, W, 3) image -> (labels (H, W), scores (K, h, w)).

    With ``config.background`` channel 0 is background and class c is label c + 1. An image whose
    long side exceeds ``config.postprocess_max_side`` is post-processed on a copy scaled down to
    that long side (the maps come from a 24x24 or smaller grid, so little detail is lost) and the
    labels are upsampled back (nearest) as ``uint8`` (``uint16`` above 256 labels), an eighth of
    the memory and time of int64 at photo sizes; ``scores`` then stay at that working size (h, w).
    Otherwise (h, w) = (H, W) and nothing differs from :func:`postprocess_full`.
    ``working_image``: :func:`working_copy` of ``image`` made earlier (the demo post-processes one
    upload again and again); used when it has the working size.
    """
    h, w = image.shape[:2]
    size = working_size((h, w), config.postprocess_max_side)
    if size == (h, w):
        return postprocess_full(grid_maps, image, config)
    ok = working_image is not None and working_image.shape[:2] == size
    small = working_image if ok else working_copy(image, config.postprocess_max_side)
    labels, scores = postprocess_full(grid_maps, small, config)
    compact = np.uint8 if labels.max(initial=0) < 256 else np.uint16  # 64 MP of int64 took ~1.2 s to write
    return resize_labels(labels.astype(compact), (h, w)), scores


def working_copy(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """``image`` scaled down (area resampling) to :func:`working_size`, or itself when small enough."""
    size = working_size(image.shape[:2], max_side)
    if size == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size[::-1], Image.Resampling.BOX))


def working_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(H, W) scaled so that its long side is at most ``max_side`` (aspect kept, sides >= 1)."""
    h, w = size
    if max_side is None or max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour (h, w) -> (H, W) by pixel centres, without an intermediate float copy."""
    (h, w), (H, W) = labels.shape, size
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def postprocess_full(grid_maps: np.ndarray, image: np.ndarray, config: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """Steps 4-7 at the resolution of ``image``: (labels (H, W), scores (K, H, W))."""
    h, w = image.shape[:2]
    thresholded = threshold_maps(grid_maps, config.threshold, config.threshold_mode)
    if config.upsample == "bicubic_constant":
        maps = upsample_bicubic_constant(thresholded, (h, w))
    else:
        maps = upsample(thresholded, (h, w), config.align_corners)
    if config.background_rule == "one_minus_sum_blurred":  # background from the blurred maps, itself unblurred
        maps = blur(maps, config.blur_sigma, config.blur_border) if config.blur else maps
        if config.background:
            maps = np.concatenate([background_channel(maps, "one_minus_sum")[None], maps])
    else:
        if config.background:
            maps = np.concatenate([background_channel(maps, config.background_rule)[None], maps])
        if config.blur:
            maps = blur(maps, config.blur_sigma, config.blur_border)
    labels = dense_crf(maps, image, config) if config.crf else maps.argmax(axis=0)
    return labels.astype(np.int64), maps.astype(np.float32)
