"""One Segmenter shared by threads gives the single-thread results (docs/how-to/folders.md, "Threads and processes")."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pnpovss import Segmenter


def test_three_threads_sharing_one_segmenter_match_single_thread(tiny_blip_dir):
    seg = Segmenter.from_pretrained(str(tiny_blip_dir), layer=2, head=1, drop_iters=2, presence_threshold=0.0)
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8) for i in range(4)]
    # every kind of call that swaps module state: image encoding (fused attention), presence
    # (shared-image attention), GradCAM (hooks), bf16 (prepacked linears), and a cache hit
    calls = [(i % 4, ["circle", "star"] if i % 2 else ["square"], {"keep_all": i % 3 == 0,
                                                                   "dtype": "bf16" if i % 5 == 0 else "fp32"})
             for i in range(12)]
    expected = [seg.segment(images[i], names, **kw).labels for i, names, kw in calls]

    def work(job: int) -> list[np.ndarray]:
        order = calls[job::3] * 3  # each thread cycles its share three times
        return [seg.segment(images[i], names, **kw).labels for i, names, kw in order]

    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(work, range(3)))
    for job, labels in enumerate(got):
        for k, lab in enumerate(labels):
            np.testing.assert_array_equal(lab, expected[job + 3 * (k % len(calls[job::3]))])


def test_one_lock_per_model(tiny_blip_dir):
    """Two Segmenters on one backbone share its lock (their passes swap the same modules)."""
    a = Segmenter.from_pretrained(str(tiny_blip_dir), layer=2, head=1)
    b = Segmenter(a.backbone, a.config)
    assert a.lock is b.lock
    assert Segmenter.from_pretrained(str(tiny_blip_dir), layer=2, head=1).lock is not a.lock
