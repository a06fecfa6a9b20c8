import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Saved evaluation progress goes to a fresh directory per test, never the user's cache."""
    monkeypatch.setenv("PNPOVSS_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory):
    """A random tiny BLIP-ITM saved with save_pretrained (4x4 patch grid, 3 text layers, 2 heads)."""
    from tools.testing import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


@pytest.fixture(scope="session")
def segmenter(tiny_blip_dir):
    from pnpovss import Segmenter

    return Segmenter.from_pretrained(str(tiny_blip_dir), layer=2, head=1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def two_tone_image():
    """48x64 image: left dark blue, right light yellow."""
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[:, :32] = (20, 30, 120)
    img[:, 32:] = (230, 220, 90)
    return img


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A random tiny open_clip CLIP saved as an open_clip local directory (32 px, 1+1 layers)."""
    from tools.testing import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))
