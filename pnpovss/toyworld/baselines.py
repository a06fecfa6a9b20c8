"""No-VLM baseline for the toy world: shows whether the world is hard enough.

Foreground = pixels whose colour is far from the estimated background colour (median of
the image border); every foreground pixel gets one label. With saturated textured
backgrounds this heuristic should be clearly worse than a model that localises words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .world import SHAPES


def no_vlm_predict(image: np.ndarray, classes: Sequence[str], threshold: float = 60.0) -> np.ndarray:
    """Label map (0 = background, i + 1 = SHAPES[i]) from colour distance to the border colour.

    ``classes`` are the present class names; all foreground gets ``classes[0]``, so pass them
    largest first to obtain the "largest present class" baseline.
    """
    img = image.astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]], 0)
    bg = np.median(border, axis=0)
    dist = np.sqrt(((img - bg) ** 2).sum(-1))
    out = np.zeros(img.shape[:2], np.uint8)
    if classes:
        out[dist > threshold] = SHAPES.index(classes[0]) + 1
    return out


def miou(preds: Sequence[np.ndarray], masks: Sequence[np.ndarray], n_classes: int = len(SHAPES) + 1) -> float:
    """Dataset-level mean IoU over classes (background included) that occur in GT or prediction."""
    inter = np.zeros(n_classes)
    union = np.zeros(n_classes)
    for p, m in zip(preds, masks):
        for c in range(n_classes):
            pc, mc = p == c, m == c
            inter[c] += np.logical_and(pc, mc).sum()
            union[c] += np.logical_or(pc, mc).sum()
    valid = union > 0
    return float((inter[valid] / union[valid]).mean())


def evaluate_no_vlm(seed: int = 0, n: int = 200, size: int = 96) -> float:
    """mIoU of the baseline on evaluation seed ``seed`` (classes ordered by true area)."""
    from .world import make_sample

    preds, masks = [], []
    for i in range(n):
        s = make_sample(seed, i, size)
        areas = {c: int((s.mask == SHAPES.index(c) + 1).sum()) for c in s.labels}
        classes = sorted(s.labels, key=lambda c: -areas[c])
        preds.append(no_vlm_predict(s.image, classes))
        masks.append(s.mask)
    return miou(preds, masks)


if __name__ == "__main__":
    print(f"no-VLM baseline mIoU (seed 0, 200 images): {evaluate_no_vlm():.4f}")
