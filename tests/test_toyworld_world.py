"""Toy world: determinism, mask/label/caption consistency, difficulty, trainer smoke tests."""

from __future__ import annotations

import numpy as np
import pytest

from pnpovss.toyworld.world import (
    SHAPES,
    TRAIN_SEED_BASE,
    is_train_seed,
    make_sample,
    make_split,
    vocabulary,
)


def test_same_seed_index_gives_identical_sample():
    a, b = make_sample(3, 17), make_sample(3, 17)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert a.caption == b.caption and a.labels == b.labels and a.objects == b.objects


def test_sample_independent_of_split_size():
    split = make_split(5, 4)
    assert np.array_equal(split[3].image, make_sample(5, 3).image)


def test_different_seed_gives_different_sample():
    assert not np.array_equal(make_sample(0, 0).image, make_sample(1, 0).image)
    assert not np.array_equal(make_sample(0, 0).image, make_sample(0, 1).image)


def test_shapes_and_dtypes():
    s = make_sample(0, 0, size=64)
    assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (64, 64) and s.mask.dtype == np.uint8
    assert len(SHAPES) >= 5


def test_mask_labels_caption_consistent():
    for s in make_split(0, 100):
        present = sorted(set(np.unique(s.mask).tolist()) - {0})
        assert [SHAPES[i - 1] for i in present] == s.labels
        for c in s.labels:
            assert (s.mask == SHAPES.index(c) + 1).sum() >= 20
            assert c in s.caption.split() or c + "," in s.caption.split()
        assert {shape for shape, _ in s.objects} == set(s.labels)
        assert s.caption.startswith("a picture of ")


def test_at_least_half_have_two_classes():
    split = make_split(0, 200)
    assert np.mean([len(s.labels) >= 2 for s in split]) >= 0.5


def test_seed_rule():
    assert is_train_seed(TRAIN_SEED_BASE) and not is_train_seed(999)


def test_caption_words_in_vocabulary():
    vocab = set(vocabulary())
    for s in make_split(1, 30):
        for w in s.caption.replace(",", " ,").split():
            assert w in vocab


def test_no_vlm_baseline_is_far_from_perfect():
    from tools.toyworld.baselines import evaluate_no_vlm

    assert evaluate_no_vlm(n=40) < 0.5


def test_train_blip_smoke(tmp_path):
    pytest.importorskip("transformers")
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    from tools.toyworld.train_blip import main

    out = tmp_path / "blip"
    # step 1 warms up the vision side, steps 2-3 run ITM, ITC and the auxiliary head; the probe runs at step 2
    main(["--out", str(out), "--steps", "3", "--batch", "4", "--pool", "12", "--probe-every", "2",
          "--probe-n", "4", "--warmup", "1", "--curriculum-steps", "1", "--vision-warmup-steps", "1"])
    model = BlipForImageTextRetrieval.from_pretrained(str(out))
    proc = AutoProcessor.from_pretrained(str(out))
    assert model.config.text_config.is_decoder
    assert model.config.vision_config.image_size // model.config.vision_config.patch_size >= 12
    assert proc.tokenizer.convert_tokens_to_ids("[ENC]") != proc.tokenizer.unk_token_id
    ids = proc.tokenizer("a picture of circle star")["input_ids"]
    assert proc.tokenizer.unk_token_id not in ids
    assert (out / "training.json").exists()


def test_train_clip_smoke(tmp_path):
    pytest.importorskip("open_clip")
    import torch

    from pnpovss.toyworld.clip_model import load_toy_clip
    from tools.toyworld.train_clip import main

    out = tmp_path / "clip"
    main(["--out", str(out), "--steps", "2", "--batch", "4", "--pool", "6"])
    model, preprocess, tok = load_toy_clip(str(out))
    x = preprocess(make_sample(0, 0).image)[None]
    with torch.no_grad():
        f = model.encode_image(x)
        t = model.encode_text(tok(["circle", "star"]))
    assert f.shape[0] == 1 and t.shape[0] == 2


def test_training_probe_gradcam_matches_own_hooks_and_releases_them():
    """The training probe's GradCAM (pnpovss.gradcam.head_cams on hooks in a context manager) equals
    an independent computation with hooks that keep the probabilities' gradients and a backward pass;
    afterwards no hook is left on the model."""
    import torch
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    from pnpovss.backbones import resolve_source
    from tools.toyworld.train_itm import encode, gradcam_maps, prompt_text, to_pixels

    path = resolve_source("toy")
    model = BlipForImageTextRetrieval.from_pretrained(path)
    tok = BlipProcessor.from_pretrained(path).tokenizer
    samples = [make_sample(0, i) for i in range(3)]
    images = np.stack([s.image for s in samples])
    classes = [list(s.labels) for s in samples]
    cams, ids = gradcam_maps(model, tok, images, classes)
    layers = [layer.crossattention.self for layer in model.text_encoder.encoder.layer]
    assert len(cams) == len(layers) and all(not m._forward_hooks for m in layers)

    store = {}

    def keep(L):
        def hook(_m, _i, out):
            out[1].retain_grad()
            store[L] = out[1]
        return hook

    handles = [m.register_forward_hook(keep(L)) for L, m in enumerate(layers)]
    try:
        ids2, att = encode(tok, [prompt_text(c) for c in classes])
        out = model(input_ids=ids2, pixel_values=to_pixels(images), attention_mask=att, use_itm_head=True)
        out.itm_score[:, 1].sum().backward()
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(ids, ids2)
    for L, cam in enumerate(cams):
        a = store[L]
        assert cam.shape == (3, a.shape[1], a.shape[2], a.shape[3] - 1)
        torch.testing.assert_close(cam, (a * a.grad.clamp(min=0))[..., 1:].detach())


# ------------------------------------------------------------------ toyworld-shapes


SHAPES_WORLD = "toyworld-shapes"


def test_shapes_world_is_deterministic_and_its_own_stream():
    a, b = make_sample(4, 9, world=SHAPES_WORLD), make_sample(4, 9, world=SHAPES_WORLD)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.caption == b.caption and a.objects == b.objects and a.meta == b.meta
    assert np.array_equal(make_split(4, 10, world=SHAPES_WORLD)[9].image, a.image)
    assert not np.array_equal(a.image, make_sample(4, 9).image)
    assert not np.array_equal(a.image, make_sample(5, 9, world=SHAPES_WORLD).image)


def test_shapes_world_masks_are_exact():
    """The mask is exactly the union of the drawn outlines: redrawing each visible object's region
    from the mask alone reproduces the labels, and every labelled pixel changed the background."""
    for s in make_split(2, 60, world=SHAPES_WORLD):
        present = sorted(set(np.unique(s.mask).tolist()) - {0})
        assert [SHAPES[i - 1] for i in present] == s.labels
        assert {shape for shape, _ in s.objects} == set(s.labels)
        assert len(s.meta["fills"]) == len(s.objects)
        for c in s.labels:
            assert (s.mask == SHAPES.index(c) + 1).sum() >= 20
        assert s.caption.startswith("a picture of ")


def test_shapes_world_masks_match_the_geometry():
    """Redrawing the recorded outlines (``meta["poses"]``, bottom to top) gives exactly the mask."""
    from pnpovss.toyworld.shapes import outline

    for s in make_split(6, 40, world=SHAPES_WORLD):
        expected = np.zeros_like(s.mask)
        for (shape, _), pose in zip(s.objects, s.meta["poses"]):
            expected[outline(shape, 96, pose)] = SHAPES.index(shape) + 1
        assert np.array_equal(expected, s.mask)


def test_shapes_world_fills_do_not_depend_on_the_class():
    """Per class, the share of each fill kind and the mean object colour are the same within
    sampling error (3 standard errors), and the background draws from the same fill pool."""
    from pnpovss.toyworld.shapes import FILLS

    split = make_split(0, 900, world=SHAPES_WORLD)
    kinds: dict[str, list[str]] = {c: [] for c in SHAPES}
    colour: dict[str, list[np.ndarray]] = {c: [] for c in SHAPES}
    for s in split:
        for (shape, _), kind in zip(s.objects, s.meta["fills"]):
            kinds[shape].append(kind)
        for c in s.labels:
            colour[c].append(s.image[s.mask == SHAPES.index(c) + 1].mean(0))
    everything = [k for c in SHAPES for k in kinds[c]]
    for kind in FILLS:
        p = np.mean([k == kind for k in everything])
        for c in SHAPES:
            n = len(kinds[c])
            share = np.mean([k == kind for k in kinds[c]])
            assert abs(share - p) <= 3 * np.sqrt(p * (1 - p) / n) + 1e-9, (kind, c, share, p, n)
    means = {c: np.stack(colour[c]) for c in SHAPES}
    pooled = np.concatenate(list(means.values()))
    for c in SHAPES:
        se = pooled.std(0) / np.sqrt(len(means[c]))
        assert np.all(np.abs(means[c].mean(0) - pooled.mean(0)) <= 3.5 * se), c
    assert {s.meta["background"] for s in split} == set(FILLS)


def test_shapes_world_outlines_vary_within_a_class():
    """Scale, rotation and aspect vary: the same class's masks differ in area and in orientation."""
    areas = [int((s.mask > 0).sum()) for s in make_split(8, 200, world=SHAPES_WORLD)
             if len(s.objects) == 1 and s.labels == ["square"]]
    assert len(areas) >= 3 and max(areas) > 1.6 * min(areas)


def test_default_world_is_unchanged():
    """The default world's samples do not move when the shapes world is added (hash recorded before)."""
    import hashlib

    h = hashlib.sha256()
    for s in make_split(3, 60) + make_split(1000005, 20):
        h.update(s.image.tobytes())
        h.update(s.mask.tobytes())
        h.update(s.caption.encode())
    assert h.hexdigest() == "5cc80aecdda56807dab628a2ca90dda43c35ea4905b87bc754fbda29286a5681"


def test_shapes_world_is_a_dataset_and_a_vocabulary():
    from pnpovss.datasets import dataset_names, load_dataset, load_vocabulary

    assert SHAPES_WORLD in dataset_names()
    ds = load_dataset(SHAPES_WORLD, seed=3, images=2)
    assert ds.name == SHAPES_WORLD
    got = ds.load(1)
    s = make_sample(3, 1, world=SHAPES_WORLD)
    assert np.array_equal(got.image, s.image) and np.array_equal(got.label, s.mask.astype("int64"))
    assert load_vocabulary(SHAPES_WORLD) == list(SHAPES)
