"""Trial statistics: a configuration's total reward over the images, and the paired z-score of its
per-image rewards against the base configuration (trial 0), which selection with ``min_z > 0``
uses as a guard against reward noise."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from typing import TYPE_CHECKING

from ..reward import REWARDS

if TYPE_CHECKING:
    from .trace import Trial


def totals(per_image: np.ndarray, names: Sequence[str] = REWARDS) -> dict[str, float]:
    return {name: float(np.sum(per_image[:, k])) for k, name in enumerate(names)}


Z_CAP = 1e6


def paired_z(per_image: np.ndarray, base: np.ndarray, names: Sequence[str] = REWARDS) -> dict[str, float]:
    """Paired z-score of each variant's per-image gain over the base configuration: mean gain over
    its standard error (capped at +-1e6 when every image gains the same; 0 when nothing changes)."""
    out = {}
    for k, name in enumerate(names):
        gain = per_image[:, k] - base[:, k]
        mean = float(gain.mean())
        se = float(gain.std(ddof=1)) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
        z = 0.0 if mean == 0 else (mean / se if se > 0 else np.sign(mean) * Z_CAP)
        out[name] = float(np.clip(z, -Z_CAP, Z_CAP))
    return out


def per_image_array(trial: "Trial", names: Sequence[str]) -> np.ndarray:
    """(n_images, len(names)) per-image rewards of a recorded trial (the inverse of its ``images``)."""
    return np.stack([np.asarray(trial.images[name], dtype=np.float64) for name in names], axis=1)
