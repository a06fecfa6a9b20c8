"""The ``contrast`` (region vs complement) and ``boundary`` (just inside vs just outside the edge)
rewards, both on the trial's own segmentation, on synthetic masks, judged by a CLIP stand-in that
recognises colours, so what it 'sees' is known exactly."""

import numpy as np
import pytest
import torch

from pnpovss.reward import ClipModel, ClipScorer, image_rewards
from pnpovss.reward_region import (band_masks, boundary_reward, contrast_reward, image_boundary, image_contrast,
                                   segment_masks)

NAMES = ["red", "blue", "green"]
PALETTE = np.array([[220, 30, 30], [30, 30, 220], [30, 220, 30]], np.float32)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class ColourClip(torch.nn.Module):
    """Image feature k = share of pixels of palette colour k, plus a constant 'nothing' axis; text
    feature of a colour name = its axis. CLIP's softmax over names then reads off which colours the
    masked image shows, and a blank image shows none (uniform)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # ClipModel.device reads a parameter
        self.palette = (torch.from_numpy(PALETTE) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        px = x.permute(0, 2, 3, 1)[..., None, :]  # (B, S, S, 1, 3)
        near = ((px - self.palette).abs().amax(dim=-1) < 0.2).float().mean(dim=(1, 2))  # (B, K)
        return torch.cat([near, torch.full((len(x), 1), 0.02)], dim=1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(tokens, len(NAMES) + 1).float()


def tokenizer(texts):
    return torch.tensor([NAMES.index(t) for t in texts])


@pytest.fixture(scope="module")
def scene():
    """32 x 32 grey image with a red square and a blue square."""
    img = np.full((32, 32, 3), 128, np.uint8)
    img[4:12, 4:12] = PALETTE[0]
    img[18:28, 18:28] = PALETTE[1]
    labels = np.zeros((32, 32), np.int64)  # 0 background, 1 red, 2 blue (caption rows 0, 1)
    labels[4:12, 4:12] = 1
    labels[18:28, 18:28] = 2
    scorer = ClipScorer(ClipModel(ColourClip(), tokenizer, 32, MEAN, STD, "colour"))
    return scorer, scorer.image_tensor(img), labels, scorer.text_embeddings([[n] for n in NAMES])


def reward(scene, key, masks):
    scorer, image, _, text = scene
    return image_contrast(scorer, key, image, masks, [0, 1], text)


def test_segment_masks_follow_the_label_map(scene):
    _, _, labels, _ = scene
    masks = segment_masks(labels, [0, 1], background=True, size=32)
    assert masks.shape == (2, 32, 32) and masks[0].sum() == 64 and masks[1].sum() == 100
    assert segment_masks(labels - 1, [1], background=False, size=64)[0].sum() == 400  # no background channel
    assert segment_masks(labels, [0], background=True, size=16)[0].sum() == 16  # resized like the CLIP input


def test_correct_masks_beat_shifted_ones(scene):
    correct = segment_masks(scene[2], [0, 1], True, 32)
    shifted = np.roll(correct, 5, axis=(1, 2))  # still on each object in part: only the complement tells
    assert reward(scene, "correct", correct) > reward(scene, "shifted", shifted) + 1.0


def test_a_mask_covering_everything_does_not_win(scene):
    scorer, image, labels, text = scene
    correct = segment_masks(labels, [0, 1], True, 32)
    full = np.ones_like(correct)
    assert reward(scene, "correct", correct) > reward(scene, "full", full) + 1.0
    # ... whereas the paper's continuous test (masked vs blank) rates the full masks positively too
    _, gain_full = image_rewards(scorer, scorer.masked_embeddings("full", image, full), [0, 1], text)
    assert gain_full > 0.1


def test_empty_masks_never_gain(scene):
    """Regression: red is the less dominant colour of the whole image, so log p(red | image) lies far
    below log p(red | blank); uncapped, dropping red's segment scored +28."""
    correct = segment_masks(scene[2], [0, 1], True, 32)
    empty = np.zeros_like(correct)
    assert reward(scene, "empty", empty) <= 0 < reward(scene, "correct", correct)
    red_only_empty = correct.copy()
    red_only_empty[0] = False
    assert reward(scene, "red dropped", red_only_empty) < reward(scene, "correct", correct)


def test_contrast_is_the_mean_log_probability_gap():
    scorer = ClipScorer(ClipModel(ColourClip(), tokenizer, 32, MEAN, STD, "colour"), logit_scale=10.0)
    text = torch.eye(3)
    inside = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    outside = torch.tensor([[0, 1.0, 0], [0, 1.0, 0]])  # class 1 is also recognised outside its segment
    scorer._blank = torch.tensor([0, 0, 1.0])
    got = contrast_reward(scorer, inside, outside, [0, 1], text)
    log_in = torch.log_softmax(10 * inside, -1)
    log_out = torch.log_softmax(10 * outside, -1)
    want = ((log_in[0, 0] - log_out[0, 0]) + (log_in[1, 1] - log_out[1, 1])) / 2
    assert got == pytest.approx(float(want), abs=1e-6)


def edge(scene, key, masks):
    scorer, image, _, text = scene
    return image_boundary(scorer, key, image, masks, [0, 1], text)


def test_band_masks():
    m = np.zeros((1, 12, 12), bool)
    m[0, 3:9, 3:9] = True
    inner, outer = band_masks(m, 2)
    assert inner.sum() == 36 - 4 and outer.sum() == 100 - 36  # a 6x6 square's 2-px rim; 10x10 minus it
    assert not (inner & ~m).any() and not (outer & m).any()
    full_inner, full_outer = band_masks(np.ones((1, 12, 12), bool), 2)
    assert full_inner.sum() == 144 - 64 and not full_outer.any()  # the image edge counts as outside
    none_inner, none_outer = band_masks(np.zeros((1, 12, 12), bool), 2)
    assert not none_inner.any() and not none_outer.any()


def test_boundary_prefers_the_correct_mask_to_a_shifted_or_full_one(scene):
    correct = segment_masks(scene[2], [0, 1], True, 32)
    shifted = np.roll(correct, 5, axis=(1, 2))
    full = np.ones_like(correct)
    assert edge(scene, "correct", correct) > edge(scene, "shifted", shifted) + 1.0
    assert edge(scene, "correct", correct) > edge(scene, "full", full) + 1.0


def test_boundary_asks_for_tight_masks_where_contrast_cannot(scene):
    """A segment spread over plain background around its object (not over the other object) is
    recognised inside and leaves nothing outside: ``contrast`` rates it like the exact one, while at
    its edge both bands are background."""
    correct = segment_masks(scene[2], [0, 1], True, 32)
    loose = correct.copy()
    loose[0, 1:15, 1:15] = True  # red's segment 3 px too wide on every side, blue's still exact
    assert reward(scene, "loose", loose) == pytest.approx(reward(scene, "correct", correct), abs=0.05)
    # red's term falls from log 3 (its rim vs plain grey: certain vs uniform over 3 names) to 0
    assert edge(scene, "loose", loose) == pytest.approx(edge(scene, "correct", correct) - np.log(3) / 2, abs=0.01)


def test_boundary_scores_an_empty_segment_zero(scene):
    correct = segment_masks(scene[2], [0, 1], True, 32)
    assert edge(scene, "empty", np.zeros_like(correct)) == 0.0
    red_dropped = correct.copy()
    red_dropped[0] = False
    assert edge(scene, "red dropped", red_dropped) == pytest.approx(edge(scene, "correct", correct) / 2, rel=1e-6)


def test_boundary_is_the_mean_log_probability_gap_of_the_bands():
    scorer = ClipScorer(ClipModel(ColourClip(), tokenizer, 32, MEAN, STD, "colour"), logit_scale=10.0)
    text = torch.eye(3)
    inner = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    outer = torch.tensor([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]])
    got = boundary_reward(scorer, inner, outer, [0, 1, 2], text, np.array([False, False, True]))
    log_in, log_out = torch.log_softmax(10 * inner, -1), torch.log_softmax(10 * outer, -1)
    want = ((log_in[0, 0] - log_out[0, 0]) + (log_in[1, 1] - log_out[1, 1]) + 0) / 3  # the third is empty
    assert got == pytest.approx(float(want), abs=1e-6)
