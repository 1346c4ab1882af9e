"""``skystack night`` against an independent astropy + ccdproc + reproject reduction of the same
night (tests/reference_night.py, itself checked against the truth in test_reference_night.py).

Both reduce identical raw files with the same recipe (sigma-clipped masters, darks scaled by
exposure time, median-1 flats, bilinear reprojection onto the object's first light, 3-sigma
median/MAD clipping of the stack); their products must agree to the noise of the masters.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from skystack.demo_data import write_sample_night
from skystack.night.run import run_night
from tests.reference_night import reduce_night

pytest.importorskip("ccdproc")
pytest.importorskip("reproject")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("vsref")
    write_sample_night(root / "raw", shape=(128, 160), n_bias=7, n_dark=3,
                       dark_exptimes=(30.0, 60.0), n_flat=5, filters=("V", "R"), n_light=5,
                       light_exptime=90.0, dither_px=6.0, rotation_deg=1.5, seed=4)
    run_night(root / "raw", root / "sky", backend="cpu", previews=False, reject="sigclip",
              center="median", spread="mad", sigma=3.0, maxiters=5)
    reduce_night(root / "raw", root / "ref", grid="object")
    return root / "sky", root / "ref"


def _pair(both, name):
    sky, ref = both
    return fits.getdata(sky / name).astype(np.float64), fits.getdata(ref / name).astype(
        np.float64)


def test_master_bias_and_darks_agree_to_their_noise(both):
    for name, noise in (("masters/bias.fits", 5.0 / np.sqrt(7)),
                        ("masters/dark_60s.fits", 5.0 * np.sqrt(2 / 3))):
        a, b = _pair(both, name)
        d = a - b
        assert abs(float(np.mean(d))) < 0.05 * noise, name
        assert float(np.std(d)) < 0.6 * noise, name  # same frames: far below either's noise


@pytest.mark.parametrize("filt", ["V", "R"])
def test_master_flats_agree(both, filt):
    a, b = _pair(both, f"masters/flat_{filt}.fits")
    ratio = a / b
    assert float(np.median(ratio)) == pytest.approx(1.0, abs=2e-4)
    assert float(np.std(ratio)) < 2e-3  # per-pixel noise of 5 flats is ~3e-3


@pytest.mark.parametrize("filt", ["V", "R"])
def test_stacks_agree(both, filt):
    a, b = _pair(both, f"stacks/M67_{filt}.fits")
    both_finite = np.isfinite(a) & np.isfinite(b)
    assert both_finite.mean() > 0.95
    ratio = np.median(a[both_finite]) / np.median(b[both_finite])
    assert ratio == pytest.approx(1.0, abs=1e-3)
    d = (a - b)[both_finite] / np.median(b[both_finite])
    assert float(1.4826 * np.median(np.abs(d - np.median(d)))) < 0.01
