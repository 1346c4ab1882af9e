"""The output file: CCDData round trip, extensions, provenance header."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.wcs import WCS

import skystack
from tests.reference import make_stack


@pytest.fixture
def files(tmp_path):
    cube = make_stack(n=5, shape=(20, 24), seed=9)
    paths = []
    for k, frame in enumerate(cube):
        h = fits.Header()
        h["DATE-OBS"] = f"2026-03-14T20:0{k}:00"
        h["EXPTIME"] = 30.0 + 10 * k
        h["OBJECT"] = "M67"
        h["FILTER"] = "V"
        h["IMAGETYP"] = "Light Frame"
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [132.8, 11.8]
        w.wcs.crpix = [12.0 + k, 10.0]
        w.wcs.cdelt = [-0.0003, 0.0003]
        h.update(w.to_header())
        p = tmp_path / f"in{k}.fits"
        fits.PrimaryHDU(frame, header=h).writeto(p)
        paths.append(str(p))
    return paths, cube


def test_ccddata_round_trip(files, tmp_path):
    paths, cube = files
    out = tmp_path / "stack.fits"
    result = skystack.combine(paths, out, method="median", reject="sigclip", backend="cpu")
    ccd = CCDData.read(out)
    np.testing.assert_array_equal(ccd.data, result.data)
    assert isinstance(ccd.uncertainty, StdDevUncertainty)
    np.testing.assert_array_equal(ccd.uncertainty.array, result.uncertainty.array)
    np.testing.assert_array_equal(ccd.mask, result.mask)
    assert ccd.mask[0, 0] and not ccd.mask[5, 5]
    count = fits.getdata(out, extname="COUNT")
    np.testing.assert_array_equal(count, result.count)
    assert ccd.data.dtype.kind == "f" and ccd.data.dtype.itemsize == 4
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "UNCERT", "MASK", "COUNT"]
        hdul.verify("exception")


def test_provenance(files, tmp_path):
    paths, _ = files
    out = tmp_path / "stack.fits"
    skystack.combine(paths, out, method="mean", reject="sigclip", sigma_low=4, sigma_high=2.5,
                     backend="cpu")
    h = fits.getheader(out)
    assert h["NCOMBINE"] == 5
    assert h["COMBMETH"] == "mean" and h["REJECT"] == "sigclip"
    assert h["SIGLOW"] == 4 and h["SIGHIGH"] == 2.5 and h["SIGCEN"] == "median"
    assert h["EXPTIME"] == pytest.approx(50.0)  # mean of 30..70
    assert h["DATE-OBS"].startswith("2026-03-14T20:00:00")
    assert h["DATE-END"].startswith("2026-03-14T20:05:10")  # 20:04 + 70 s
    # exposure-weighted mean of mid-times
    mids = np.array([k * 60 + (30 + 10 * k) / 2 for k in range(5)])
    avg = np.average(mids, weights=[30 + 10 * k for k in range(5)])
    from astropy.time import Time

    t_avg = Time(h["DATE-AVG"], scale="utc")
    t0 = Time("2026-03-14T20:00:00", scale="utc")
    assert (t_avg - t0).sec == pytest.approx(avg, abs=1e-3)
    assert h["MJD-AVG"] == pytest.approx(t_avg.mjd)
    assert h["IMCMB001"] == "in0.fits" and h["IMCMB005"] == "in4.fits"
    assert h["SKYSVER"] == skystack.__version__ and h["SKYSBKND"].startswith("cpu")
    assert h["OBJECT"] == "M67" and h["FILTER"] == "V"
    w = WCS(h)
    assert w.wcs.crpix[0] == pytest.approx(12.0)  # the first frame's WCS
    assert h["BUNIT"] == "adu"


def test_sum_exptime_is_total(files, tmp_path):
    paths, _ = files
    r = skystack.combine(paths, method="sum", backend="cpu")
    assert r.meta["EXPTIME"] == pytest.approx(250.0)
    assert "sum" in r.meta.comments["EXPTIME"]


def test_inputs_unchanged(files, tmp_path):
    paths, _ = files
    before = [open(p, "rb").read() for p in paths]
    skystack.combine(paths, tmp_path / "o.fits", method="median", backend="cpu")
    assert [open(p, "rb").read() for p in paths] == before



def test_output_file_is_streamed_not_held(files, tmp_path):
    paths, _ = files
    out = skystack.combine_to_file(paths, tmp_path / "s.fits", method="mean", backend="cpu",
                                   max_tile_rows=3)
    ref = skystack.combine(paths, method="mean", backend="cpu")
    np.testing.assert_array_equal(fits.getdata(out), ref.data)
