"""End to end: ``skystack night`` on the generated one-shot-colour night gives R, G, B stacks
whose star colours match the truth (calibration in CFA space, per-channel flat, debayering,
one alignment for the three planes)."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from skystack.cli import main
from skystack.demo import run_osc_demo
from skystack.osc_data import FLAT_LEVELS, write_osc_night


def _aperture_counts(image, x, y, radius=8.0):
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    r = np.hypot(xx - x, yy - y)
    background = np.nanmedian(image[(r > 12) & (r < 18)])
    return float(np.nansum(image[r < radius] - background))


def test_osc_night_star_colours_match_truth(tmp_path):
    # `skystack demo --osc`: the night written to out/raw (seeded: the same as `night`'s) and
    # reduced by `skystack night`
    out = tmp_path / "out"
    products = run_osc_demo(out, quiet=True)
    night = write_osc_night(tmp_path / "truth")  # 256 x 256, 5 lights, RGGB
    assert sorted(p.name for p in products if p.parent.name == "stacks") == \
        [f"{night.object}_{c}.fits" for c in "BGR"]

    # masters stay in CFA space; the flat is normalised per colour channel
    assert fits.getval(out / "masters" / "bias.fits", "BAYERPAT") == "RGGB"
    flat = fits.getheader(out / "masters" / "flat_none.fits")
    levels = np.array([flat["FLATNR"], flat["FLATNG"], flat["FLATNB"]])
    np.testing.assert_allclose(levels / levels[1], np.array(FLAT_LEVELS) / FLAT_LEVELS[1],
                               rtol=0.02)

    planes = []
    for channel in "RGB":
        with fits.open(out / "stacks" / f"{night.object}_{channel}.fits") as hdul:
            header = hdul[0].header
            assert header["CFACHAN"] == channel and "BAYERPAT" not in header
            assert header["NCOMBINE"] == len(night.light)
            planes.append(hdul[0].data.astype(float))
    assert (out / "previews" / f"{night.object}_rgb.png").is_file()

    ratios, scales = [], []
    for x, y, *truth in night.stars:
        measured = np.array([_aperture_counts(p, x, y) for p in planes])
        truth = np.array(truth)
        ratios.append((measured / measured[1]) / (truth / truth[1]))
        scales.append(measured / truth)
    ratios, scales = np.array(ratios), np.array(scales)
    # Colour (R/G and B/G against the truth's): each star within 5 %, the median within 1.5 %.
    # A flat normalised by one median would put R/G off by x1.5 and B/G by x0.45 (the lamp).
    assert np.all(np.abs(ratios - 1) < 0.05), ratios
    assert np.all(np.abs(np.median(ratios, axis=0) - 1) < 0.015)
    # Fluxes: the 8 px aperture misses ~3 % of a Moffat star's light, in every colour alike.
    assert np.all(np.abs(np.median(scales, axis=0) - 0.97) < 0.03), np.median(scales, axis=0)


def test_demo_osc_and_survey_are_exclusive(tmp_path):
    assert main(["demo", "--osc", "--survey", str(tmp_path / "e"), "-q"]) == 2
    assert not (tmp_path / "e").exists()
