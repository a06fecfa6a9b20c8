import numpy as np
import pytest

from pnpovss import PipelineConfig
from pnpovss.postprocess import (background_channel, blur, crf_kernels, dense_crf, minmax, postprocess, threshold_maps,
                                 upsample)


def test_threshold_after_minmax():
    grid = np.array([[[0.0, 1.0], [2.0, 10.0]]], dtype=np.float32)
    out = threshold_maps(grid, 0.15)
    np.testing.assert_allclose(out[0], [[0.0, 0.0], [0.2, 1.0]])
    assert not threshold_maps(np.zeros((1, 2, 2)), 0.15).any()  # a flat map has no salient part
    np.testing.assert_allclose(threshold_maps(grid, 0.15, "binary")[0], [[0.0, 0.0], [1.0, 1.0]])


def test_background_rules():
    maps = np.array([[[0.0, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.7, 0.0]]], dtype=np.float32)
    np.testing.assert_array_equal(background_channel(maps, "zero"), [[1, 0], [0, 1]])
    np.testing.assert_allclose(background_channel(maps, "one_minus_sum"), [[1, 0.5], [0.3, 1]], rtol=1e-6)


@pytest.mark.parametrize("shape", [(101, 101), (61, 121)])
def test_blur_sigma_is_a_fraction_of_the_long_side(shape):
    impulse = np.zeros((1, *shape), dtype=np.float32)
    impulse[0, shape[0] // 2, shape[1] // 2] = 1.0
    out = blur(impulse, 0.05)[0]
    assert out.max() == pytest.approx(1.0) and out.min() == pytest.approx(0.0)
    col = out[shape[0] // 2]
    x = np.arange(shape[1]) - shape[1] // 2
    sigma = np.sqrt((col * x**2).sum() / col.sum())
    assert sigma == pytest.approx(0.05 * max(shape), rel=0.03)


def test_upsample_aligns_corners_like_the_reference():
    """align_corners=True (reference): the corner patches' values land exactly on the corner pixels
    and the map is linear in between (a 0..3 ramp over 3 patches becomes 0..3 over 7 pixels)."""
    ramp = np.array([[[0.0, 1.5, 3.0]] * 2], dtype=np.float32)
    np.testing.assert_allclose(upsample(ramp, (2, 7))[0, 0], np.linspace(0, 3, 7), atol=1e-6)
    half_pixel = upsample(ramp, (2, 7), align_corners=False)[0, 0]  # src x = (x + 0.5) * 3 / 7 - 0.5, clamped
    np.testing.assert_allclose(half_pixel, 1.5 * np.clip((np.arange(7) + 0.5) * 3 / 7 - 0.5, 0, 2), atol=1e-6)


def test_blur_border_reflects_like_scipy_default():
    """Border mode "reflect" (the reference's scipy default) mirrors about the edge *including* the
    edge pixel: a step at the border then blurs differently from "nearest" only near the edge."""
    from scipy.ndimage import gaussian_filter

    edge = np.zeros((1, 40, 40), dtype=np.float32)
    edge[0, :, :3] = 1.0
    ref = gaussian_filter(edge[0], 0.05 * 40)
    np.testing.assert_allclose(blur(edge, 0.05)[0], (ref - ref.min()) / np.ptp(ref), atol=1e-6)
    nearest = blur(edge, 0.05, mode="nearest")[0]
    assert not np.allclose(nearest, blur(edge, 0.05)[0], atol=1e-4)
    cfg = PipelineConfig()
    assert cfg.align_corners and cfg.blur_border == "reflect"
    with pytest.raises(Exception, match="blur_border=.edge.: expected one of .reflect."):
        PipelineConfig(blur_border="edge")


def test_crf_moves_a_noisy_map_to_the_image_edge(two_tone_image, rng):
    h, w = two_tone_image.shape[:2]
    truth = np.zeros((h, w), dtype=int)
    truth[:, 32:] = 1
    right = np.zeros((h, w), dtype=np.float32)
    right[:, 26:] = 1.0  # boundary 6 px off the real edge
    right = np.clip(right + rng.normal(0, 0.35, (h, w)), 0, 1)
    maps = np.stack([1 - right, right])
    noisy = maps.argmax(0)
    refined = dense_crf(maps, two_tone_image, PipelineConfig())
    err_before, err_after = (noisy != truth).mean(), (refined != truth).mean()
    assert err_before > 0.1 and err_after < 0.02, (err_before, err_after)


@pytest.mark.parametrize("mode", ["reflect", "constant", "nearest", "mirror", "wrap"])
def test_blur_operator_gives_scipys_gaussian_filter(rng, mode, monkeypatch):
    """The blur as two cached matrix products equals scipy's gaussian_filter (axis by axis, rounded
    to float32 between the axes as scipy does): bit for bit on these maps under the default border,
    within one unit in the last place under any; scipy's own filter above the operator's size."""
    from scipy.ndimage import gaussian_filter

    from pnpovss import postprocess as pp

    maps = rng.random((3, 150, 230)).astype(np.float32)
    maps[:, :50] = 0.0  # thresholded maps are zero over much of the image
    ref = minmax(np.stack([gaussian_filter(m, sigma=0.05 * 230, mode=mode) for m in maps]), constant="keep")
    got = blur(maps, 0.05, mode)
    assert got.dtype == np.float32
    if mode == "reflect":
        assert np.array_equal(got, ref)
    np.testing.assert_array_max_ulp(got, ref, maxulp=1)
    monkeypatch.setattr(pp, "BLUR_OPERATOR_MAX_SIDE", 100)  # the scipy path
    assert np.array_equal(blur(maps, 0.05, mode), ref)


def test_crf_kernels_relative_to_a_reference_side():
    assert PipelineConfig().crf_reference_side == 512  # the default: the reference's widths up to 512 px
    assert crf_kernels(PipelineConfig(crf_reference_side=None), 4000) == (3.0, 50.0)
    rel = PipelineConfig(crf_reference_side=500)
    assert crf_kernels(rel, 500) == crf_kernels(rel, 96) == (3.0, 50.0)  # up to R: as the reference
    assert crf_kernels(rel, 1000) == (6.0, 100.0)


@pytest.mark.parametrize("bilateral_sxy", [5.0, 10.0, 20.0])
def test_relative_crf_kernels_label_an_upscaled_scene_as_at_reference_size(rng, bilateral_sxy):
    """A 48 px scene (an off-centre box, a noisy map 4 px off its edge) and the same scene
    upscaled 4x (nearest: the same picture at 192 px): with kernels relative to 48 px the
    upscaled labels agree with the 48 px labels nearly everywhere; in absolute pixels they do not
    (the compatibilities stay: pydensecrf's kernels are normalised)."""
    n, k = 48, 4
    img = np.full((n, n, 3), (30, 40, 120), np.uint8)
    img[10:34, 14:40] = (220, 210, 80)
    fg = np.zeros((n, n), np.float32)
    fg[14:38, 18:44] = 1.0
    fg = np.clip(fg + rng.normal(0, 0.3, fg.shape), 0, 1).astype(np.float32)
    maps = np.stack([1 - fg, fg])
    up = lambda a: a.repeat(k, axis=-2).repeat(k, axis=-1)  # noqa: E731
    big_img = up(img.transpose(2, 0, 1)).transpose(1, 2, 0).copy()
    agreement = {}
    for ref in (None, n):
        cfg = PipelineConfig(crf_reference_side=ref, crf_bilateral_sxy=bilateral_sxy)
        agreement[ref] = (dense_crf(up(maps), big_img, cfg) == up(dense_crf(maps, img, cfg))).mean()
    assert agreement[n] > 0.99 and agreement[None] < 0.95, agreement


def test_postprocess_shapes_and_labels(two_tone_image):
    grid = np.zeros((2, 4, 4), dtype=np.float32)
    grid[0, :, :2] = 1.0  # class A on the left
    grid[1, :, 2:] = 1.0  # class B on the right
    labels, scores = postprocess(grid, two_tone_image, PipelineConfig())
    assert labels.shape == (48, 64) and scores.shape == (3, 48, 64)
    assert (labels[:, :28] == 1).mean() > 0.9 and (labels[:, 36:] == 2).mean() > 0.9
    labels_nb, scores_nb = postprocess(grid, two_tone_image, PipelineConfig(background=False, crf=False))
    assert scores_nb.shape == (2, 48, 64) and set(np.unique(labels_nb)) == {0, 1}


def test_minmax_constant_channels():
    maps = np.stack([np.full((2, 2), 3.0), np.full((2, 2), 0.4)])
    np.testing.assert_array_equal(minmax(maps)[0], 0)
    np.testing.assert_allclose(minmax(maps, constant="keep")[1], 0.4)


def test_crf_unary_probs_trusts_confident_maps_more(rng):
    """Maps in [0, 1] through a softmax give weak unaries (at most e:1), so the smoothness terms win
    and a small region disappears; taken as probabilities (-log p) the same maps keep it."""
    image = (rng.random((40, 40, 3)) * 255).astype(np.uint8)  # no colour edges to follow
    maps = np.zeros((2, 40, 40), dtype=np.float32)
    maps[0] = 1.0
    maps[0, 15:21, 15:21], maps[1, 15:21, 15:21] = 0.0, 1.0  # a 6x6 class region on background
    soft = dense_crf(maps, image, PipelineConfig())
    probs = dense_crf(maps, image, PipelineConfig(crf_unary="probs"))
    assert (probs[15:21, 15:21] == 1).mean() > 0.9
    assert (soft == 1).sum() < (probs == 1).sum()


def test_cvpr_eval_scripts_threshold_and_background():
    """CVPR-era evaluation: binary cut at an absolute threshold of the combined map; background =
    clamp(1 - sum of the blurred class maps), the background itself not blurred."""
    grid = np.array([[[0.1, 0.2], [0.14, 3.0]], [[0.0, 0.16], [0.0, 0.0]]], dtype=np.float32)
    np.testing.assert_array_equal(threshold_maps(grid, 0.15, "absolute"), [[[0, 1], [0, 1]], [[0, 1], [0, 0]]])
    image = np.zeros((20, 20, 3), np.uint8)
    cfg = PipelineConfig(threshold=0.15, threshold_mode="absolute", background_rule="one_minus_sum_blurred", crf=False)
    _, scores = postprocess(grid, image, cfg)
    classes = blur(upsample(threshold_maps(grid, 0.15, "absolute"), (20, 20)), cfg.blur_sigma)
    np.testing.assert_allclose(scores[1:], classes, atol=1e-6)
    np.testing.assert_allclose(scores[0], np.clip(1 - classes.sum(0), 0, 1), atol=1e-6)


def test_labels_of_a_large_image_come_back_compact(two_tone_image):
    """Above postprocess_max_side the full-size labels are uint8 (int64 at 64 megapixels took ~1 s
    and 512 MB), with the same values as the working-size labels upsampled."""
    from pnpovss.postprocess import resize_labels

    big = two_tone_image.repeat(4, axis=0).repeat(4, axis=1)
    grid = np.zeros((2, 4, 4), np.float32)
    grid[0, :, :2], grid[1, :, 2:] = 1.0, 1.0
    cfg = PipelineConfig(postprocess_max_side=64)
    labels, _ = postprocess(grid, big, cfg)
    working, _ = postprocess(grid, big[::4, ::4], cfg.replace(postprocess_max_side=None))
    assert labels.dtype == np.uint8 and labels.shape == big.shape[:2]
    assert postprocess(grid, two_tone_image, cfg)[0].dtype == np.int64  # small images: as before
    np.testing.assert_array_equal(labels, resize_labels(working, big.shape[:2]))
