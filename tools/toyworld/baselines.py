"""No-VLM baseline for the toy world: shows whether the world is hard enough.

Foreground = pixels whose colour is far from the estimated background colour (median of
the image border); every foreground pixel gets one label. With saturated textured
backgrounds this heuristic should be clearly worse than a model that localises words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pnpovss.toyworld.world import SHAPES


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


def evaluate_no_vlm(seed: int = 0, n: int = 200, size: int = 96) -> float:
    """mIoU (0-1) of the baseline on evaluation seed ``seed`` (classes ordered by true area), from
    the same confusion-matrix metric as every other toy-world row."""
    from pnpovss.metrics import ConfusionMatrix
    from pnpovss.toyworld.world import make_sample

    cm = ConfusionMatrix(len(SHAPES) + 1)
    for i in range(n):
        s = make_sample(seed, i, size)
        areas = {c: int((s.mask == SHAPES.index(c) + 1).sum()) for c in s.labels}
        cm.update(no_vlm_predict(s.image, sorted(s.labels, key=lambda c: -areas[c])), s.mask)
    return cm.miou() / 100


if __name__ == "__main__":
    print(f"no-VLM baseline mIoU (seed 0, 200 images): {evaluate_no_vlm():.4f}")
