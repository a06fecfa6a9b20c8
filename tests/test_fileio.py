"""Every kind of image a user may hand in (pnpovss.fileio): converted correctly or refused with one line."""

import numpy as np
import pytest
from PIL import Image

from pnpovss import ImageLoadError, load_image


def save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_rgb_roundtrip(tmp_path, rng):
    arr = (rng.random((10, 12, 3)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(load_image(save(Image.fromarray(arr), tmp_path / "a.png")), arr)
    np.testing.assert_array_equal(load_image(arr), arr)
    np.testing.assert_array_equal(load_image(Image.fromarray(arr)), arr)


def test_greyscale_palette_rgba_cmyk(tmp_path):
    grey = Image.fromarray(np.full((4, 5), 77, dtype=np.uint8), mode="L")
    assert (load_image(save(grey, tmp_path / "g.png")) == 77).all()
    pal = Image.fromarray(np.full((4, 5, 3), (10, 200, 30), dtype=np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    np.testing.assert_array_equal(load_image(save(pal, tmp_path / "p.png"))[0, 0], (10, 200, 30))
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :2, 3] = 255  # left opaque red, right fully transparent -> white
    out = load_image(save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "t.png"))
    np.testing.assert_array_equal(out[0, 0], (200, 0, 0))
    np.testing.assert_array_equal(out[0, 4], (255, 255, 255))
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    out = load_image(save(cmyk, tmp_path / "c.jpg", quality=100))
    assert out.shape == (4, 4, 3) and out[0, 0, 0] > 200 and out[0, 0, 1] < 60


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    out = load_image(save(img, tmp_path / "d.png"))
    assert out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])
    np.testing.assert_array_equal(load_image(arr)[0, :, 0], [0, 128, 255])


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[:, :10] = 255  # left half white, stored landscape
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = load_image(save(img, tmp_path / "r.jpg", exif=exif, quality=100))
    assert out.shape == (20, 10, 3)
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # the white half is now on top


def test_bad_files_give_one_line_errors(tmp_path):
    arr = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    good = save(Image.fromarray(arr), tmp_path / "x.png")
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "notes.png"
    text.write_text("hello, not an image")
    for path, message in [(truncated, "truncated"), (text, "not an image"), (tmp_path / "nope.png", "no such file"),
                          (tmp_path, "directory")]:
        with pytest.raises(ImageLoadError, match=message) as info:
            load_image(path)
        assert "\n" not in str(info.value)
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(np.full((4, 4, 3), np.nan))


def test_symbolic_link_loop_and_dangling_link_are_named(tmp_path):
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match=r"a\.png: a symbolic link loop \(the links lead back to themselves\)"):
        load_image(tmp_path / "a.png")
    with pytest.raises(ImageLoadError, match=r"gone\.png: a symbolic link to a missing file \(.*missing\.png\)$"):
        load_image(tmp_path / "gone.png")


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    """Results are written via a private temporary file but end up readable like any new file."""
    import os

    from pnpovss.fileio import atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left behind
