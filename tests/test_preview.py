"""skystack.night.preview: PNG size, orientation, scaling (auto-STF and the percentile
stretches), NaN, atomic writes, RGB, filters."""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from skystack.errors import SkystackError
from skystack.night import preview
from skystack.night.preview import (
    auto_stf,
    filter_order_for_rgb,
    mtf,
    to_uint8,
    write_preview,
    write_rgb,
)


def _read(path) -> tuple[np.ndarray, str]:
    with Image.open(path) as img:
        return np.asarray(img).copy(), img.mode


def _noise(shape=(20, 30), seed=0):
    return np.random.default_rng(seed).normal(100.0, 5.0, shape)


def test_size_mode_and_orientation(tmp_path):
    image = _noise()
    image[0, 3] = 1e4  # bright pixel on row 0: the bottom of an astronomer's display
    out = write_preview(image, tmp_path / "p.png")
    assert out == str(tmp_path / "p.png")
    png, mode = _read(out)
    assert mode == "L" and png.dtype == np.uint8 and png.shape == (20, 30)
    assert png[-1, 3] == 255  # bottom row of the PNG
    assert png[0, 3] < 255 and png.max() == 255
    # matplotlib reads the same orientation (floats in [0, 1]).
    import matplotlib.image as mpimg

    back = mpimg.imread(out)
    assert back.shape[:2] == (20, 30) and back[-1, 3] == pytest.approx(1.0)


def test_linear_stretch_matches_formula(tmp_path):
    image = np.linspace(-3.0, 7.0, 12 * 16).reshape(12, 16)
    png, _ = _read(write_preview(image, tmp_path / "lin.png", stretch="linear",
                                 percentiles=(0, 100)))
    expected = np.rint(255 * (image - image.min()) / (image.max() - image.min()))
    np.testing.assert_array_equal(png[::-1], expected.astype(np.uint8))


def test_asinh_stretch_matches_formula(tmp_path):
    image = np.linspace(0.0, 1.0, 10 * 10).reshape(10, 10)
    png, _ = _read(write_preview(image, tmp_path / "asinh.png", stretch="asinh",
                                 percentiles=(0, 100)))
    a = 0.1  # astropy's AsinhStretch default
    expected = np.rint(255 * np.arcsinh(image / a) / np.arcsinh(1 / a))
    np.testing.assert_allclose(png[::-1].astype(float), expected, atol=1)
    # asinh lifts the faint end: the middle of the ramp is well above mid-grey.
    assert png[::-1][5, 0] > 180


def test_percentile_clipping(tmp_path):
    image = np.arange(1000, dtype=float).reshape(20, 50)
    png, _ = _read(write_preview(image, tmp_path / "c.png", stretch="linear",
                                 percentiles=(10, 90)))
    flat = png[::-1].ravel()
    assert (flat[:100] == 0).all() and (flat[-99:] == 255).all()
    assert np.all(np.diff(flat.astype(int)) >= 0)


def test_nan_is_black_and_ignored_by_limits(tmp_path):
    image = _noise()
    image[5:8, 10:20] = np.nan
    image[0, 0] = np.inf
    png, _ = _read(write_preview(image, tmp_path / "n.png"))
    assert (png[::-1][5:8, 10:20] == 0).all()
    assert png[::-1][0, 0] == 0
    assert png.max() == 255  # the limits came from the finite pixels
    masked = np.ma.masked_array(_noise(), mask=np.zeros((20, 30), bool))
    masked.mask[2, 2] = True
    png, _ = _read(write_preview(masked, tmp_path / "m.png"))
    assert png[::-1][2, 2] == 0


@pytest.mark.parametrize("image", [np.full((6, 7), np.nan), np.full((6, 7), 3.0)])
def test_degenerate_images_are_black(tmp_path, image):
    png, _ = _read(write_preview(image, tmp_path / "d.png"))
    assert png.shape == (6, 7) and not png.any()


def test_big_endian_and_integer_input(tmp_path):
    image = (_noise() * 10).astype(">i4")
    png, _ = _read(write_preview(image, tmp_path / "be.png"))
    assert png.shape == (20, 30) and png.max() == 255


def test_errors(tmp_path):
    with pytest.raises(SkystackError, match="2-D"):
        write_preview(np.zeros((2, 3, 4)), tmp_path / "x.png")
    with pytest.raises(SkystackError, match="stretch"):
        write_preview(_noise(), tmp_path / "x.png", stretch="fancy")
    with pytest.raises(SkystackError, match="percentiles"):
        write_preview(_noise(), tmp_path / "x.png", percentiles=(90, 10))
    with pytest.raises(SkystackError, match="cannot write"):
        write_preview(_noise(), tmp_path / "no" / "such" / "dir.png")
    assert os.listdir(tmp_path) == []


def test_temp_file_then_rename(tmp_path, monkeypatch):
    target = tmp_path / "p.png"
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((src, dst, os.path.exists(dst)))
        assert os.path.dirname(src) == str(tmp_path) and src != str(dst)
        with Image.open(src) as img:  # complete before it gets the final name
            img.load()
        real_replace(src, dst)

    monkeypatch.setattr(preview.os, "replace", spy)
    write_preview(_noise(), target)
    assert len(seen) == 1 and seen[0][1] == str(target) and not seen[0][2]
    assert os.listdir(tmp_path) == ["p.png"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "p.png"
    write_preview(_noise(), target)
    before = target.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(SkystackError, match="p.png: cannot write"):
        write_preview(_noise(seed=1), target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["p.png"]


def _field(shape, seed):
    """Sky noise plus the same white stars in every channel (they set the display range)."""
    image = _noise(shape, seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for y, x in ((20, 8), (30, 40), (50, 25), (12, 50)):
        image += 3000.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    return image


def test_rgb_channels_and_orientation(tmp_path):
    shape = (64, 60)
    red, green, blue = (_field(shape, seed) for seed in (1, 2, 3))
    red[0, 5] += 5000.0  # a red star on row 0
    blue[40, 10] += 5000.0  # a blue one
    green += 1000.0  # a sky offset: the channel's own background goes to the same grey
    out = write_rgb(red, green, blue, tmp_path / "rgb.png")
    png, mode = _read(out)
    assert mode == "RGB" and png.shape == (64, 60, 3) and png.dtype == np.uint8
    view = png[::-1].astype(int)
    sky = [np.median(view[..., c]) for c in range(3)]
    assert view[0, 5, 0] == 255 and view[0, 5, 1] < sky[1] + 40 and view[0, 5, 2] < sky[2] + 40
    assert view[40, 10, 2] == 255 and view[40, 10, 0] < sky[0] + 40
    assert view[40, 10, 1] < sky[1] + 40
    assert (view[30, 40] >= 250).all()  # white star
    # The background is the same grey in every channel, the green sky offset included.
    assert max(sky) - min(sky) <= 3 and 40 <= min(sky) <= 90


def test_rgb_nan_is_black(tmp_path):
    channels = [_noise((16, 16), s) for s in range(3)]
    channels[1][3, 4] = np.nan
    png, _ = _read(write_rgb(*channels, tmp_path / "rgb.png"))
    assert png[::-1][3, 4, 1] == 0


def test_rgb_shape_mismatch(tmp_path):
    with pytest.raises(SkystackError, match="shape"):
        write_rgb(np.zeros((4, 5)), np.zeros((4, 5)), np.zeros((5, 4)), tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("filters,expected", [
    (["B", "V", "R"], ("R", "V", "B")),
    (["R", "B", "V"], ("R", "V", "B")),
    (["U", "B", "V", "R", "I"], ("R", "V", "B")),
    (["L", "R", "G", "B"], ("R", "G", "B")),
    (["Lum", "Red", "Green", "Blue"], ("Red", "Green", "Blue")),
    (["g'", "r'", "i'", "z'"], ("i'", "r'", "g'")),
    (["g", "r", "i"], ("i", "r", "g")),
    (["Ha", "OIII", "SII"], ("SII", "Ha", "OIII")),
    (["H-alpha", "O3", "S2"], ("S2", "H-alpha", "O3")),
    (["B", "V", "R", "Ha"], ("R", "V", "B")),
    (["B", "V", "Ha"], ("Ha", "V", "B")),
    (["v", "b", "r"], ("r", "v", "b")),
    (["L", "R", "G"], None),
    (["B", "V"], None),
    (["Clear", "Filter7", "X", "Y"], None),
    ([], None),
])
def test_filter_order_for_rgb(filters, expected):
    assert filter_order_for_rgb(filters) == expected


# -- the automatic screen stretch (STF) ------------------------------------------------------


def _mtf_closed_form(m: Fraction, x: Fraction) -> Fraction:
    """PixInsight's midtones transfer function, in exact rational arithmetic."""
    return (m - 1) * x / ((2 * m - 1) * x - m)


@pytest.mark.parametrize("m", ["1/1000", "1/20", "1/4", "1/2", "3/4", "999/1000"])
def test_mtf_matches_closed_form(m):
    m = Fraction(m)
    xs = [Fraction(k, 64) for k in range(65)]
    expected = np.array([float(_mtf_closed_form(m, x)) for x in xs])
    got = mtf(float(m), np.array([float(x) for x in xs]))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    # Its defining points, monotonicity and the inverse in m used by the auto-stretch.
    assert mtf(float(m), 0.0) == 0.0 and mtf(float(m), 1.0) == pytest.approx(1.0, abs=1e-15)
    assert mtf(float(m), float(m)) == pytest.approx(0.5, abs=1e-12)
    assert np.all(np.diff(got) > 0)
    for x in (0.01, 0.3, 0.9):
        for y in (0.1, 0.25, 0.7):
            assert mtf(float(mtf(y, x)), x) == pytest.approx(y, rel=1e-12)
    assert float(m) == 0.5 or not np.allclose(got, np.linspace(0, 1, 65))
    with pytest.raises(ValueError):
        mtf(0.0, 0.5)


def _sky(shape=(256, 256), *, level=1000.0, noise=10.0, seed=0, faint=3.0, bright=50_000.0):
    """Gaussian sky noise, a grid of faint stars (``faint`` noise sigmas at the peak) and a few
    bright ones; returns the image and the faint stars' centres."""
    rng = np.random.default_rng(seed)
    image = rng.normal(level, noise, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    faint_at = [(y, x) for y in range(20, shape[0] - 10, 40) for x in range(20, shape[1] - 10, 40)]
    for y, x in faint_at:
        image += faint * noise * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.0**2))
    for (y, x), peak in (((35, 200), 1.0), ((180, 60), 0.3), ((120, 130), 0.05)):
        image += bright * peak * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.8**2))
    return image, faint_at


def test_auto_stf_parameters_match_definition():
    from astropy.stats import mad_std

    image, _ = _sky()
    c0, c1, m = auto_stf(image)
    median = np.median(image)
    assert c0 == pytest.approx(median - 2.8 * mad_std(image), rel=1e-6)
    assert c1 == image.max()
    assert mtf(m, (median - c0) / (c1 - c0)) == pytest.approx(0.25, rel=1e-9)
    assert auto_stf(np.full((4, 4), np.nan)) is None and auto_stf(np.ones((4, 4))) is None
    # No MAD (more than half the pixels equal): shadows at the minimum, still a finite stretch.
    flat = np.zeros((10, 10))
    flat[0, :3] = (1.0, 2.0, 10.0)
    c0, c1, m = auto_stf(flat)
    assert (c0, c1) == (0.0, 10.0) and 0 < m < 1


def test_mono_preview_shows_sky_noise_and_faint_stars(tmp_path):
    image, faint_at = _sky()
    png, _ = _read(write_preview(image, tmp_path / "sky.png"))
    view = png[::-1].astype(float)
    star_free = np.ones(image.shape, bool)
    for y, x in faint_at + [(35, 200), (180, 60), (120, 130)]:
        star_free[max(0, y - 10): y + 11, max(0, x - 10): x + 11] = False
    sky = view[star_free]
    assert 40 <= np.median(sky) <= 90  # a visible grey, not ~1/255
    assert np.std(sky) >= 4  # the noise is visible
    assert np.mean(view == 0) < 0.01  # the shadows clip only the low noise tail
    # Faint stars (3 sigma at the peak) stand out of the sky.
    peaks = np.array([view[y, x] for y, x in faint_at])
    assert np.median(peaks) > np.median(sky) + 2 * np.std(sky)
    # Bright stars: the brightest is white, their profiles are not flattened into discs.
    assert view[35, 200] == 255 and np.mean(view == 255) < 0.001
    assert view[180, 60] > view[180, 63] > view[180, 66] > np.median(sky)


def test_mono_preview_nan_regions_do_not_move_the_stretch(tmp_path):
    image, _ = _sky(shape=(128, 128))
    image[:, :40] = np.nan
    view = to_uint8(image)
    assert (view[:, :40] == 0).all()
    assert 40 <= np.median(view[:, 40:]) <= 90


def test_rgb_background_neutral_and_stars_not_clipped(tmp_path):
    # Channels with very different sky levels, noise and gains, as raw R, G, B stacks have.
    red, faint_at = _sky(level=300.0, noise=4.0, bright=20_000.0, seed=1)
    green, _ = _sky(level=2500.0, noise=25.0, bright=60_000.0, seed=2)
    blue, _ = _sky(level=800.0, noise=9.0, bright=9_000.0, seed=3)
    png, _ = _read(write_rgb(red, green, blue, tmp_path / "rgb.png"))
    view = png[::-1].astype(int)
    sky = [np.median(view[..., c]) for c in range(3)]
    assert max(sky) - min(sky) <= 3  # neutral: the channels' backgrounds are equal
    assert 40 <= min(sky) and max(sky) <= 90  # a dark grey, not black
    assert np.mean((view == 0).all(axis=-1)) < 0.01  # < 1 % pure black
    for c in range(3):
        assert np.mean(view[..., c] == 0) < 0.01
        assert np.std(view[..., c]) >= 4
        # The brightest star is white, the others keep their profiles.
        assert view[35, 200, c] == 255 and np.mean(view[..., c] == 255) < 0.001
        assert view[180, 60, c] > view[180, 63, c] > view[180, 66, c] > sky[c]
