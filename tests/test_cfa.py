"""Colour (Bayer) frames: patterns from headers, combine in CFA space, no silent mono stack,
flats normalised per colour channel."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from colour_demosaicing import masks_CFA_Bayer
from hypothesis import given, settings
from hypothesis import strategies as st

import skystack
from skystack.api_reproject import stack
from skystack.cli import main
from skystack.colour import PATTERNS, CfaPattern, cfa_pattern
from skystack.errors import SkystackError
from skystack.night.masters import normalise_flat


def _channel_map_reference(shape, layout):
    """0/1/2 (R/G/B) from colour-demosaicing's masks for a pattern seen from data[0, 0]."""
    r, g, b = masks_CFA_Bayer(shape, layout)
    return np.where(r, 0, np.where(g, 1, 2))


@pytest.mark.parametrize("header, layout", [
    ({"BAYERPAT": "RGGB"}, "RGGB"),
    ({"BAYERPAT": "rggb ", "ROWORDER": "TOP-DOWN"}, "RGGB"),
    ({"BAYERPAT": "RGGB", "XBAYROFF": 1}, "GRBG"),
    ({"BAYERPAT": "RGGB", "YBAYROFF": 1}, "GBRG"),
    ({"BAYERPAT": "RGGB", "XBAYROFF": 1, "YBAYROFF": 3}, "BGGR"),
    ({"BAYERPAT": "RGGB", "ROWORDER": "BOTTOM-UP"}, "GBRG"),  # 10 rows: parity flipped
    ({"BAYERPAT": "GRBG", "ROWORDER": "BOTTOM-UP", "YBAYROFF": 1}, "GRBG"),
    ({"COLORTYP": "BGGR"}, "BGGR"),
])
def test_layout_from_header(header, layout):
    pattern = cfa_pattern(fits.Header(header), "f.fits")
    assert pattern.layout((10, 12)) == layout
    np.testing.assert_array_equal(pattern.channel_map((10, 12)),
                                  _channel_map_reference((10, 12), layout))


def test_bottom_up_depends_on_height_parity():
    # 9 rows stored bottom-up: stored row 8 is the first read out, and it has the same parity
    # as stored row 0, so the pattern reads as declared from data[0, 0].
    assert CfaPattern("RGGB", row_order="BOTTOM-UP").layout((9, 12)) == "RGGB"


def test_monochrome_headers():
    assert cfa_pattern(fits.Header()) is None
    assert cfa_pattern(fits.Header({"COLORTYP": "MONO"})) is None


@pytest.mark.parametrize("header, match", [
    ({"BAYERPAT": "RGBG"}, "BAYERPAT = 'RGBG' is not a Bayer pattern"),
    ({"BAYERPAT": "RGGB", "ROWORDER": "SIDEWAYS"}, "ROWORDER"),
    ({"BAYERPAT": "RGGB", "XBAYROFF": "one"}, "XBAYROFF = 'one' is not a number"),
    ({"BAYERPAT": "RGGB", "YBAYROFF": 0.5}, "YBAYROFF = 0.5 is not a whole number"),
])
def test_bad_cfa_headers_are_one_line_errors(header, match):
    with pytest.raises(SkystackError, match=match) as err:
        cfa_pattern(fits.Header(header), "light_1.fits")
    assert str(err.value).startswith("light_1.fits: ") and "\n" not in str(err.value)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(PATTERNS), xoff=st.integers(0, 1), yoff=st.integers(0, 1),
       order=st.sampled_from(["TOP-DOWN", "BOTTOM-UP"]), rows=st.integers(4, 9),
       cols=st.integers(4, 9), r0=st.integers(0, 3), c0=st.integers(0, 3))
def test_cropping_keeps_every_photosite_colour(name, xoff, yoff, order, rows, cols, r0, c0):
    pattern = CfaPattern(name, xoff, yoff, order)
    shape = (rows + r0 + 1, cols + c0 + 2)
    crop = pattern.cropped(r0, c0, shape, (rows, cols))
    np.testing.assert_array_equal(crop.channel_map((rows, cols)),
                                  pattern.channel_map(shape)[r0:r0 + rows, c0:c0 + cols])


def _cfa_hdus(n=3, shape=(8, 10), **cards):
    rng = np.random.default_rng(1)
    header = {"BAYERPAT": "RGGB", "XBAYROFF": 0, "YBAYROFF": 1, "ROWORDER": "TOP-DOWN",
              "EXPTIME": 10.0, **cards}
    return [fits.PrimaryHDU(rng.uniform(100, 200, shape).astype(np.float32),
                            header=fits.Header(header)) for _ in range(n)]


def test_combine_keeps_the_cfa_layout_and_cards():
    hdus = _cfa_hdus()
    ccd = skystack.combine(hdus, method="mean", reject="none")
    np.testing.assert_allclose(ccd.data, np.mean([h.data for h in hdus], axis=0), rtol=1e-6)
    for key, value in [("BAYERPAT", "RGGB"), ("XBAYROFF", 0), ("YBAYROFF", 1),
                       ("ROWORDER", "TOP-DOWN")]:
        assert ccd.meta[key] == value
    assert cfa_pattern(ccd.meta).layout(ccd.shape) == "GBRG"


def test_combine_refuses_mixed_colour_and_mono():
    hdus = _cfa_hdus()
    mono = fits.PrimaryHDU(hdus[0].data, header=fits.Header({"EXPTIME": 10.0}))
    with pytest.raises(SkystackError, match="monochrome frame mixed with colour"):
        skystack.combine([*hdus, mono])
    other = _cfa_hdus(1, BAYERPAT="BGGR")
    with pytest.raises(SkystackError, match="Bayer layout"):
        skystack.combine([*hdus, *other])


def _wcs_cards():
    return dict(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.0, CRVAL2=2.0, CRPIX1=5.0,
                CRPIX2=4.0, CDELT1=-1e-4, CDELT2=1e-4)


def test_stack_refuses_cfa_unless_asked_for_mono(tmp_path):
    hdus = _cfa_hdus(**_wcs_cards())
    with pytest.raises(SkystackError, match="--cfa-as-mono"):
        stack(hdus, method="mean", reject="none")
    ccd = stack(hdus, method="mean", reject="none", cfa_as_mono=True)
    assert ccd.meta["CFAMONO"] is True and "BAYERPAT" not in ccd.meta
    paths = []
    for k, h in enumerate(hdus):
        paths.append(str(tmp_path / f"l{k}.fits"))
        h.writeto(paths[-1])
    # the command line debayers colour frames unless told to stack them as mono
    assert main(["stack", *paths, "-o", str(tmp_path / "s.fits"), "-q"]) == 0
    assert not (tmp_path / "s.fits").exists()
    assert [fits.getval(tmp_path / f"s_{ch}.fits", "CFACHAN") for ch in "RGB"] == list("RGB")
    assert main(["stack", *paths, "-o", str(tmp_path / "s.fits"), "-q", "--cfa-as-mono"]) == 0
    assert fits.getval(tmp_path / "s.fits", "CFAMONO") is True


@pytest.mark.parametrize("method", ["bilinear", "mhc", "menon"])
def test_stack_debayered_recovers_a_colour_field(tmp_path, method):
    """Dithered RGGB frames of a sky whose R, G, B are linear in position: the R, G and B
    stacks equal the truth (every demosaicing is exact for linear colour fields)."""
    from colour_demosaicing import mosaicing_CFA_Bayer

    from skystack.api_colour import plane_paths, stack_debayered

    shape, offsets = (24, 28), [(0, 0), (3, 2), (-2, 5)]

    def truth(rows, cols):  # on the sky grid of frame 0
        return np.stack([1000 + 3 * cols + 2 * rows, 2000 - cols + 4 * rows,
                         500 + 0.5 * cols - rows], axis=-1)

    paths = []
    for k, (dy, dx) in enumerate(offsets):
        rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
        cfa = mosaicing_CFA_Bayer(truth(rows + dy, cols + dx), "GBRG").astype(np.float32)
        header = fits.Header({**_wcs_cards(), "BAYERPAT": "GBRG", "EXPTIME": 10.0,
                              "CRPIX1": 5.0 - dx, "CRPIX2": 4.0 - dy})
        paths.append(str(tmp_path / f"c{k}.fits"))
        fits.PrimaryHDU(cfa, header=header).writeto(paths[-1])
    out = stack_debayered(paths, tmp_path / "rgb.fits", debayer_method=method, reference=paths[0],
                          reject="none")
    assert out == plane_paths(tmp_path / "rgb.fits")
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    want = truth(rows, cols)
    for k, path in enumerate(out):
        with fits.open(path) as hdul:
            image, count = hdul[0].data, hdul["COUNT"].data
            assert hdul[0].header["CFACHAN"] == "RGB"[k] and "BAYERPAT" not in hdul[0].header
        inner = (slice(8, -8), slice(8, -8))  # all three frames, away from every edge
        assert (count[inner] == 3).all()
        np.testing.assert_allclose(image[inner], want[..., k][inner], rtol=1e-4)


def test_cfa_flat_normalised_per_channel_preserves_light_colours(tmp_path):
    """A flat lit by a reddish lamp through a vignetted CFA: after normalisation each channel
    has median 1, and a light divided by it keeps its colour ratios (truth), which one global
    median would shift by the lamp's colour."""
    shape = (64, 80)
    pattern = CfaPattern("RGGB")
    channel = pattern.channel_map(shape)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    vignetting = 1 - 0.3 * (((y - 32) / 40) ** 2 + ((x - 40) / 50) ** 2)
    lamp = np.array([4000.0, 2500.0, 900.0])  # R, G, B levels of the flat
    flat = (lamp[channel] * vignetting).astype(np.float32)
    path = tmp_path / "flat.fits"
    fits.PrimaryHDU(flat, header=fits.Header(dict(pattern.cards()[i][:2] for i in range(4))))\
        .writeto(path)
    green = normalise_flat(str(path))
    with fits.open(path) as hdul:
        norm, header = hdul[0].data, hdul[0].header
    for c, ch in enumerate("RGB"):
        assert np.median(norm[channel == c]) == pytest.approx(1.0, rel=1e-6)
        assert header[f"FLATN{ch}"] == pytest.approx(np.median(flat[channel == c]), rel=1e-6)
    assert green == pytest.approx(header["FLATNG"])
    truth = np.array([300.0, 600.0, 150.0])  # the sky's colour as the sensor records it
    light = truth[channel] * vignetting / np.median(vignetting)
    calibrated = light / norm
    measured = np.array([np.median(calibrated[channel == c]) for c in range(3)])
    np.testing.assert_allclose(measured / measured[1], truth / truth[1], rtol=0.01)


def test_night_plans_three_plane_stacks_for_colour_lights():
    from skystack.night.colour import colour_stack_keys

    colour = [fits.Header({"BAYERPAT": "RGGB"})] * 2
    assert colour_stack_keys("none", colour, ["a", "b"]) == [("R", "R"), ("G", "G"), ("B", "B")]
    assert colour_stack_keys("L-eXtreme", colour, ["a", "b"])[0] == ("L-eXtreme_R", "R")
    assert colour_stack_keys("V", [fits.Header()] * 2, ["a", "b"]) == []
    with pytest.raises(SkystackError, match="b: monochrome light mixed with colour"):
        colour_stack_keys("none", [colour[0], fits.Header()], ["a", "b"])


def test_debayered_stack_masks_saturation_and_selects_on_the_raw_mosaic(tmp_path):
    """Saturation levels are raw ADU and --where reads the raw headers: both act on the colour
    frames before debayering. A frame saturated (raw 60000 >= SATURATE) in a 4x4 block leaves
    that block's colour planes to the other frames (COUNT 1 there, value of the unsaturated
    frame), and a frame failing --where is not stacked at all (recorded in the header)."""
    from skystack.api_colour import stack_debayered

    shape = (24, 28)
    paths = []
    for k, level in enumerate((1000.0, 3000.0, 5000.0)):
        cfa = np.full(shape, level, np.float32)
        if k == 1:
            cfa[10:14, 10:14] = 60000.0
        header = fits.Header({**_wcs_cards(), "BAYERPAT": "RGGB", "EXPTIME": 10.0,
                              "SATURATE": 50000.0, "CRPIX1": 5.0, "CRPIX2": 4.0,
                              "FILTER": "bad" if k == 2 else "L"})
        paths.append(str(tmp_path / f"s{k}.fits"))
        fits.PrimaryHDU(cfa, header=header).writeto(paths[-1])
    out = stack_debayered(paths, tmp_path / "rgb.fits", reference=paths[0], reject="none",
                          where="FILTER=L")
    for path in out:
        with fits.open(path) as hdul:
            image, count = hdul[0].data, hdul["COUNT"].data
            assert "s2.fits" not in repr(hdul[0].header)  # deselected: not a contributor
            assert hdul[0].header["SELWHERE"] == "FILTER=L"
        # Away from the saturated block (and its debayering reach), both selected frames count.
        assert count[2, 2] == 2 and image[2, 2] == pytest.approx(2000.0)
        assert count[11, 11] == 1 and image[11, 11] == pytest.approx(1000.0)
