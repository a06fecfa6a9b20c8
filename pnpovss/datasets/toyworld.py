"""The seeded toy worlds (``pnpovss.toyworld.world``: ``toyworld`` and ``toyworld-shapes``) seen as
segmentation datasets.

Label 0 is background and ``i + 1`` is ``SHAPES[i]``, exactly the world's masks. Sample ``i`` of a
seed never changes, so ``--dataset toyworld --seed S --images N`` always means the same N images.
Only evaluation seeds are accepted: training seeds would score the toy model on its training data.
"""

from __future__ import annotations

from ..errors import PnpOvssError
from .base import SegDataset, SegSample

DEFAULT_IMAGES = 100


class ToyWorld(SegDataset):
    """``n`` samples of world seed ``seed`` (``size`` px; default: the world's own default) of ``world``."""

    name = "toyworld"
    has_background = True
    clip_template = "a picture of a {}"

    def __init__(self, seed: int = 0, n: int = DEFAULT_IMAGES, size: int | None = None, world_name: str = "toyworld") -> None:
        from ..toyworld import world

        if world.is_train_seed(seed):
            raise PnpOvssError(
                f"toy-world seed {seed} is reserved for training the toy models; evaluate on seeds "
                f"0..{world.EVAL_SEED_MAX}"
            )
        if n < 1:
            raise PnpOvssError(f"the toy world needs --images >= 1, got {n}")
        self._world = world
        self.name = world_name
        self.seed, self.n, self.size = int(seed), int(n), size
        self.synonyms = [["background"]] + [[s] for s in world.SHAPES]

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> SegSample:
        kwargs = {} if self.size is None else {"size": self.size}
        s = self._world.make_sample(self.seed, index, world=self.name, **kwargs)
        return SegSample(f"{self.seed}-{index}", s.image, s.mask.astype("int64"))

    def describe(self) -> dict:
        return {**super().describe(), "seed": self.seed}
