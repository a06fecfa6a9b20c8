"""Confusion-matrix mIoU equals mmsegmentation's IoUMetric on the same synthetic predictions."""

import numpy as np
import pytest
import torch

from pnpovss.metrics import ConfusionMatrix, iou_table


def mmseg_iou_metric(preds, labels, num_classes, ignore_index=255):
    """mmseg 1.x ``IoUMetric``, spelled out: per image ``intersect_and_union`` with ``torch.histc``
    over non-ignored pixels, areas summed over images, IoU = intersect / union, mIoU = nanmean."""
    totals = [torch.zeros(num_classes, dtype=torch.float64) for _ in range(4)]
    for pred, label in zip(preds, labels):
        pred, label = torch.from_numpy(pred), torch.from_numpy(label)
        mask = label != ignore_index
        pred, label = pred[mask], label[mask]
        intersect = pred[pred == label]
        hist = [torch.histc(x.float(), bins=num_classes, min=0, max=num_classes - 1).double()
                for x in (intersect, pred, label)]
        area = [hist[0], hist[1] + hist[2] - hist[0], hist[1], hist[2]]
        for total, a in zip(totals, area):
            total += a
    iou = (totals[0] / totals[1]).numpy()
    acc = (totals[0] / totals[3]).numpy()
    return iou, float(np.nanmean(iou) * 100), float(totals[0].sum() / totals[3].sum() * 100), acc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_mmseg_iou_metric(seed):
    rng = np.random.default_rng(seed)
    n = 7
    preds, labels = [], []
    for _ in range(5):
        h, w = rng.integers(5, 30, size=2)
        label = rng.integers(0, n - 2, size=(h, w))  # classes 5, 6 never in the labels
        label[rng.random((h, w)) < 0.2] = 255
        pred = np.where(rng.random((h, w)) < 0.6, label, rng.integers(0, n - 1, size=(h, w)))  # 6 never predicted
        pred[pred == 255] = 0
        preds.append(pred)
        labels.append(label)
    cm = ConfusionMatrix(n)
    for p, t in zip(preds, labels):
        cm.update(p, t)
    ref_iou, ref_miou, ref_aacc, _ = mmseg_iou_metric(preds, labels, n)
    iou = cm.iou()
    assert np.isnan(iou[6]) and np.isnan(ref_iou[6])  # in neither: left out of the mean
    assert iou[5] == 0 and ref_iou[5] == 0  # predicted but absent: counts as 0
    np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=1e-12)
    assert cm.miou() == pytest.approx(ref_miou, abs=1e-9)
    assert cm.pixel_accuracy() == pytest.approx(ref_aacc, abs=1e-9)
    summary = cm.summary([f"c{i}" for i in range(n)])
    assert summary["miou"] == pytest.approx(ref_miou, abs=1e-3)
    assert summary["per_class"]["c6"] is None


def test_ignored_pixels_are_not_background():
    cm = ConfusionMatrix(2)
    label = np.array([[0, 1], [255, 255]])
    cm.update(np.array([[0, 1], [0, 0]]), label)  # predictions on ignored pixels do not count
    assert cm.miou() == 100.0 and cm.matrix.sum() == 2


def test_matrices_add_like_one_pass():
    rng = np.random.default_rng(5)
    a, b, both = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    for cm in (a, b):
        p, t = rng.integers(0, 4, (6, 6)), rng.integers(0, 4, (6, 6))
        cm.update(p, t)
        both.update(p, t)
    a.merge(b)
    assert np.array_equal(a.matrix, both.matrix)


def test_table():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1]), np.array([0, 1, 2]))
    text = iou_table(cm.summary(["background", "cat", "dog"]))
    assert "cat" in text and "mIoU" in text.splitlines()[-1] and "50.00" in text.splitlines()[-1]
