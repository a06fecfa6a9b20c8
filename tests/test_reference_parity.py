"""Parity with the reference's CVPR-era evaluation chain (commit 687a4e5).

``reference_chain`` is written from the reference scripts' own formulas, not from this package:
the search scripts' per-pass min-max (``save_img_union_attention``), the evaluation scripts'
zeroing of the dropped patches (``drop_image_patch_with_highest_att``), their pass sum with its
in-place aliasing (VOC's zero maps appended inside the loop), the absolute threshold,
``Attmap_resize`` (skimage), the blur and its min-max, the background rule (none for COCO-Stuff,
``cocoall``), ``densecrf`` (pydensecrf's ``unary_from_softmax``) and the final one-hot/argmax. Our
pipeline under each ``reference-cvpr-*`` preset must give the same label map from the same
synthetic per-pass maps and dropped-patch sets.
"""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter  # the reference calls it as scipy.ndimage.filters.gaussian_filter

from pnpovss import PipelineConfig, load_preset
from pnpovss.dropout import combine_pass_maps
from pnpovss.postprocess import postprocess

skimage_transform = pytest.importorskip("skimage.transform")
dcrf = pytest.importorskip("pydensecrf.densecrf")
dcrf_utils = pytest.importorskip("pydensecrf.utils")

DATASETS = {  # preset -> (dataset has a background class, script is VOC's, script's data_type is cocoall)
    "voc": (True, True, False),
    "context": (False, False, False),
    "ade20k": (False, False, False),
    "coco-object": (True, False, False),
    "coco-stuff": (False, False, True),
}


def reference_chain(passes, dropped_after, image, *, threshold, bilateral_sxy, voc, cocoall):
    """passes: (T, C, gh, gw) float32 class maps (the mean over each class's pieces) of each pass;
    dropped_after[t]: the patch indices dropped after pass t. Returns the label map, 0 = background
    (if any), k = the k-th class."""
    t_passes, _, gh, gw = passes.shape
    saved = []
    for t in range(t_passes):  # search script: relu, then min-max per class, saved per pass
        m = passes[t].copy()
        m[m < 0] = 0
        for c in range(m.shape[0]):
            m[c] = (m[c] - m[c].min()) / (m[c].max() - m[c].min())
        saved.append(m)
    att_by_dropiter_list = []
    for drop_iter in range(t_passes):  # evaluation script
        att = saved[drop_iter]
        if drop_iter > 0:
            for drop in range(drop_iter):
                for max_patch in dropped_after[drop]:
                    att[:, max_patch // gw, max_patch % gw] = 0
        att_by_dropiter_list.append(att)
        if voc:  # New_eval_cam_VOC.py appends zero maps inside this loop
            for _ in range(t_passes):
                att_by_dropiter_list.append(np.zeros((gh, gw)))
    weighted = att_by_dropiter_list[0]
    for it in range(t_passes):
        weighted += att_by_dropiter_list[it]  # in place: pass 0 is added to itself
    weighted[weighted < threshold] = 0
    weighted[weighted >= threshold] = 1
    h, w = image.shape[:2]
    resized = []
    for i in range(weighted.shape[0]):
        a = weighted[i]
        a -= a.min()
        if a.max() > 0:
            a /= a.max()
        a = skimage_transform.resize(a, (h, w), order=3, mode="constant")
        a = gaussian_filter(a, 0.05 * max(h, w))
        a -= a.min()
        a /= a.max()
        resized.append(a)
    weighted = np.stack(resized, axis=0)
    if not cocoall:
        background = 1 - weighted.sum(axis=0)
        background[background < 0] = 0
        weighted = np.concatenate((np.expand_dims(background, axis=0), weighted), axis=0)
    probs = torch.nn.functional.interpolate(torch.from_numpy(weighted).unsqueeze(0), size=(h, w),
                                            mode="bilinear").squeeze(0).numpy()
    c = probs.shape[0]
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(dcrf_utils.unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=3, compat=7)
    d.addPairwiseBilateral(sxy=bilateral_sxy, srgb=5, rgbim=np.ascontiguousarray(image.copy()), compat=10)
    map_b = np.argmax(np.array(d.inference(20)).reshape((c, h, w)), axis=0)
    onehot = np.stack([(map_b == i).astype(int) for i in range(c) if cocoall or i > 0])
    bg_score = np.power(1 - np.max(onehot, axis=0, keepdims=True), 1)  # cam_eval_thres = 1
    label = np.argmax(np.concatenate((bg_score, onehot), axis=0), axis=0)  # index into [pad] + keys
    return label - 1 if cocoall else label


def synthetic(seed, classes, grid, size, passes=5):
    """Per-pass maps with a few blobs per class, halving drops as the reference's search makes them,
    and a textured image."""
    rng = np.random.default_rng(seed)
    gh, gw = grid
    yy, xx = np.mgrid[:gh, :gw]
    maps = np.zeros((passes, classes, gh, gw), np.float32)
    for t in range(passes):
        for c in range(classes):
            for _ in range(2):
                cy, cx, s = rng.uniform(0, gh), rng.uniform(0, gw), rng.uniform(0.8, 2.5)
                maps[t, c] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)).astype(np.float32)
            maps[t, c] += rng.uniform(0, 0.15, (gh, gw)).astype(np.float32)
    maps = np.maximum(maps - 0.4, 0)  # sparse and >= 0, as GradCAM's class maps are
    dropped, gone = [], set()
    for t in range(passes - 1):
        score = maps[t].sum(axis=0).ravel().copy()
        score[list(gone)] = 0
        picked = [int(p) for p in np.argsort(score)[-int(gh * gw / 2 ** (t + 1)):]]
        gone |= set(picked)
        dropped.append(picked)
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    for c in range(classes):  # coloured regions near the blobs, plus noise
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        image[y0:y0 + h // 2, x0:x0 + w // 2] = rng.integers(0, 255, 3)
    image = np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)
    return maps, dropped, image


def ours(maps, dropped, image, config):
    raw = [torch.from_numpy(m.reshape(m.shape[0], -1)) for m in maps]
    p = raw[0].shape[1]
    keep, gone = [], torch.zeros(p, dtype=torch.bool)
    for t in range(len(raw)):
        keep.append(~gone)
        if t < len(dropped):
            gone = gone.clone()
            gone[dropped[t]] = True
    grid = combine_pass_maps(raw, keep, config).view(-1, *maps.shape[2:]).numpy()
    return postprocess(grid, image, config)[0]


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("seed, classes, grid, size", [(0, 3, (12, 12), (180, 240)), (1, 2, (16, 16), (150, 200)),
                                                       (2, 4, (24, 24), (240, 320)), (3, 3, (10, 10), (120, 90))])
def test_presets_reproduce_the_reference_chain(dataset, seed, classes, grid, size):
    has_background, voc, cocoall = DATASETS[dataset]
    preset = load_preset(f"reference-cvpr-{dataset}")
    config = PipelineConfig().replace(**preset, background=has_background).for_caption(classes)
    maps, dropped, image = synthetic(seed, classes, grid, size)
    expected = reference_chain(maps.copy(), dropped, image, threshold=preset["threshold"],
                               bilateral_sxy=preset["crf_bilateral_sxy"], voc=voc, cocoall=cocoall)
    got = ours(maps, dropped, image, config)
    assert config.background == (not cocoall)
    assert len(np.unique(expected)) > 1  # a label map worth comparing
    assert np.array_equal(got, expected), f"{(got != expected).mean():.2%} of pixels differ"


@pytest.mark.parametrize("dataset, change", [
    ("voc", {"combine_passes": "all"}), ("context", {"upsample": "bilinear"}),
    ("ade20k", {"zero_dropped": "before_minmax"}), ("coco-object", {"crf_bilateral_sxy": 50.0}),
    ("coco-stuff", {"background_mode": "always"}), ("voc", {"crf_unary": "softmax"})])
def test_each_reproduced_point_matters(dataset, change):
    """The parity test can fail: undoing any one of the points the presets reproduce changes the
    label map (so each is exercised by the synthetic data)."""
    has_background, voc, cocoall = DATASETS[dataset]
    preset = load_preset(f"reference-cvpr-{dataset}")
    maps, dropped, image = synthetic(2, 4, (24, 24), (240, 320))
    expected = reference_chain(maps.copy(), dropped, image, threshold=preset["threshold"],
                               bilateral_sxy=preset["crf_bilateral_sxy"], voc=voc, cocoall=cocoall)
    config = PipelineConfig().replace(**{**preset, **change}, background=has_background).for_caption(4)
    assert (ours(maps, dropped, image, config) != expected).mean() > 0.001
