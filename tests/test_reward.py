"""The CLIP masked-vs-blank reward: masks, CLIP loading, both variants, caches."""

import numpy as np
import pytest
import torch

from pnpovss.errors import PnpOvssError
from pnpovss.reward import ClipScorer, image_rewards, load_clip, reward_masks


@pytest.fixture(scope="module")
def scorer(tiny_clip_dir):
    return ClipScorer(load_clip(str(tiny_clip_dir)), template="a photo of a {}")


def test_masks_binarise_blur_and_rebinarise():
    grid = np.zeros((3, 4, 4), np.float32)
    grid[0, :, :2] = 1.0           # left half
    grid[1, 1, 1] = 1.0            # one patch
    grid[1, 2, 2] = 0.1            # below threshold 0.15 after min-max: dropped
    for rule in ("reference", "half"):
        masks = reward_masks(grid, 0.15, 32, rule=rule)  # class 2 is constant: nothing kept
        assert masks.shape == (3, 32, 32) and masks.dtype == bool
        assert masks[0][:, :14].all() and not masks[0][:, 22:].any()
        assert masks[1][10:14, 10:14].all() and not masks[1][22:, 22:].any()  # one patch survives the blur
        assert not masks[2].any()
        assert reward_masks(grid, 0.05, 32, rule=rule)[1][20, 20]  # at a lower threshold the weak patch is kept
    with pytest.raises(PnpOvssError, match="reward mask rule must be one of reference, half"):
        reward_masks(grid, 0.15, 32, rule="median")


def test_reference_mask_rule_matches_an_independent_computation():
    """The reference (Dataset.py): binarise at t, resize, blur (sigma 0.04 x size, scipy's default
    border), min-max, cut again at the same t. Here resized bilinearly with align_corners=True."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    grid = rng.random((2, 6, 6)).astype(np.float32)
    for t in (0.05, 0.3, 0.6):
        norm = (grid - grid.min((1, 2), keepdims=True)) / np.ptp(grid, axis=(1, 2), keepdims=True)
        up = torch.nn.functional.interpolate(torch.from_numpy((norm >= t).astype(np.float32))[None], size=(48, 48),
                                             mode="bilinear", align_corners=True)[0].numpy()
        blurred = np.stack([gaussian_filter(m, 0.04 * 48) for m in up])
        blurred = (blurred - blurred.min((1, 2), keepdims=True)) / np.ptp(blurred, axis=(1, 2), keepdims=True)
        np.testing.assert_array_equal(reward_masks(grid, t, 48), blurred > t)
        np.testing.assert_array_equal(reward_masks(grid, t, 48, rule="half"), blurred >= 0.5)


def test_reference_mask_grows_as_the_threshold_falls():
    """A one-patch region (24 x 24 grid at 336 px, BLIP-384's grid at CLIP-336's size): under the
    reference rule its mask grows as t falls; under ``half`` it does not depend on t."""
    grid = np.zeros((1, 24, 24), np.float32)
    grid[0, 10, 10] = 1.0
    patches = {rule: [reward_masks(grid, t, 336, rule=rule).sum() / 14 ** 2 for t in (0.05, 0.15, 0.45)]
               for rule in ("reference", "half")}
    ref, half = patches["reference"], patches["half"]
    assert ref[0] > ref[1] > ref[2] > half[0] and ref[0] > 3 * half[0]
    assert half[0] == half[1] == half[2]


def test_load_clip_errors(tmp_path):
    with pytest.raises(PnpOvssError, match="no open_clip_config.json"):
        load_clip(str(tmp_path))
    with pytest.raises(PnpOvssError, match="could not load CLIP 'ViT-B-32'") as err:
        load_clip("ViT-B-32", str(tmp_path / "missing.pt"))
    assert "\n" not in str(err.value)


def test_clip_input_and_text(scorer):
    assert scorer.clip.image_size == 32
    x = scorer.image_tensor(np.full((20, 50, 3), 128, np.uint8))
    assert x.shape == (3, 32, 32)
    one = scorer.text_embeddings([["cat"], ["dog"]])
    syn = scorer.text_embeddings([["cat", "kitten"]])
    assert one.shape == (2, 32) and torch.allclose(one.norm(dim=-1), torch.ones(2))
    a, b = scorer.text_embeddings([["cat"]])[0], scorer.text_embeddings([["kitten"]])[0]
    assert torch.allclose(syn[0], torch.nn.functional.normalize(a + b, dim=0), atol=1e-6)
    assert scorer.text_embeddings([["cat"], ["dog"]]) is one  # cached


def test_masked_embeddings_memo_and_mean_colour(scorer):
    img = scorer.image_tensor(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    masks = np.zeros((2, 32, 32), bool)
    masks[0, :16] = True
    first = scorer.masked_embeddings("k", img, masks)
    assert scorer.masked_embeddings("k", img, masks) is first
    direct = scorer.embed(img[None] * torch.from_numpy(masks[:, None].astype(np.float32)))
    assert torch.allclose(direct[1], scorer.blank_embedding(), atol=1e-6)  # empty mask = blank image ...
    assert torch.equal(first[1], scorer.blank_embedding())  # ... and scored as exactly the blank
    assert torch.equal(first[0], direct[0])


def test_empty_masks_never_win(scorer):
    """Regression: embedding the blank image inside a batch gave last-bit differences that the
    strict '>' of the binary reward counted as wins for classes with empty masks."""
    img = scorer.image_tensor(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    text = scorer.text_embeddings([["cat"], ["dog"], ["car"]])
    emb = scorer.masked_embeddings("empty", img, np.zeros((3, 32, 32), bool))
    assert image_rewards(scorer, emb, [0, 1, 2], text) == (0, 0.0)


def fixed_scorer(scorer, blank):
    s = ClipScorer(scorer.clip)
    s._blank = blank
    return s


def test_binary_counts_wins_and_single_label_scores_zero(scorer):
    text = torch.eye(3)                          # class c <-> axis c
    s = fixed_scorer(scorer, torch.nn.functional.normalize(torch.ones(3), dim=0))
    masked = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])  # class 0's mask looks like class 0; class 1's like class 2
    wins, cont = image_rewards(s, masked, [0, 1], text)
    assert wins == 1
    p = torch.softmax(100 * masked @ text.T, dim=-1)
    assert cont == pytest.approx(float(((p[0, 0] - 1 / 3) + (p[1, 1] - 1 / 3)) / 2), abs=1e-6)
    wins1, cont1 = image_rewards(s, masked[:1], [0], text)
    assert wins1 == 0 and cont1 > 0.5  # one label: the binary reward is blind, the continuous one is not


def test_template_must_have_placeholder(scorer):
    with pytest.raises(PnpOvssError, match="template"):
        ClipScorer(scorer.clip, template="a photo")


def test_toy_clip_directory_format(tiny_clip_dir, tmp_path):
    """The toy CLIP's own format (model_cfg + top-level image_size/mean/std) keeps its normalisation."""
    import json
    import shutil

    cfg = json.loads((tiny_clip_dir / "open_clip_config.json").read_text())
    toy = {"model_cfg": cfg["model_cfg"], "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(toy))
    shutil.copy(tiny_clip_dir / "open_clip_model.safetensors", tmp_path)
    clip = load_clip(str(tmp_path))
    assert clip.mean == (0.5, 0.5, 0.5) and clip.std == (0.25, 0.25, 0.25) and clip.image_size == 32
    ref = load_clip(str(tiny_clip_dir))
    tokens = clip.tokenizer(["a cat"])
    assert torch.equal(clip.model.encode_text(tokens), ref.model.encode_text(tokens))


def test_toy_alias_loads_the_shipped_clip_with_its_own_preprocessing():
    """``toy`` is an entry of the CLIP alias table: the shipped directory, read in the toy format
    (its own size, mean and std rather than OpenAI's)."""
    from pnpovss.reward import CLIP_ALIASES

    toy = load_clip("toy")
    same = load_clip(CLIP_ALIASES["toy"])
    assert (toy.image_size, toy.mean, toy.std) == (96, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert (same.image_size, same.mean, same.std) == (toy.image_size, toy.mean, toy.std)
    for a, b in zip(toy.model.state_dict().values(), same.model.state_dict().values()):
        assert torch.equal(a, b)
