"""What the product's header claims: observation times, units, file labels (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.time import Time
from astropy.wcs import WCS

import skystack
from skystack.api_reproject import stack_to_file
from skystack.cli import main
from skystack.errors import SkystackError


def _wcs(shape, ra=150.0, dec=30.0) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cd = [[-1 / 3600, 0], [0, 1 / 3600]]
    return w


def _dated_frames(tmp_path, dates, exptime=60.0, shape=(40, 50), unit=None):
    rng = np.random.default_rng(3)
    paths = []
    for k, date in enumerate(dates):
        hdr = _wcs(shape, 150.0 + k / 3600).to_header()
        hdr["DATE-OBS"] = date
        hdr["EXPTIME"] = exptime
        if unit is not None:
            hdr["BUNIT"] = unit
        p = tmp_path / f"light_{k}.fits"
        fits.PrimaryHDU(rng.normal(100, 1, shape).astype(np.float32), header=hdr).writeto(p)
        paths.append(str(p))
    return paths


def _reference_from_another_night(tmp_path, shape=(40, 50)):
    """A reference frame (e.g. another filter, another night) whose WCS header carries its own
    date, and a time reference (MJDREF/DATEREF) as a WCS-aware writer may add."""
    w = _wcs(shape)
    w.wcs.dateobs = "2019-05-05T01:02:03"
    w.wcs.mjdobs = Time("2019-05-05T01:02:03").mjd
    hdr = w.to_header(relax=True)
    hdr["DATE-OBS"] = "2019-05-05T01:02:03"
    hdr["MJDREF"] = 58000.0
    hdr["DATEREF"] = "2017-09-04"
    hdr["DATE-AVG"] = "2019-05-05T01:03:00"
    hdr["MJD-AVG"] = Time("2019-05-05T01:03:00").mjd
    p = tmp_path / "ref_B.fits"
    fits.PrimaryHDU(np.zeros(shape, np.float32), header=hdr).writeto(p)
    return str(p)


DATES = ["2024-03-01T22:00:00", "2024-03-01T21:00:00", "2024-03-01T23:00:00"]


def _check_times(header, exptime=60.0):
    starts = Time(DATES, scale="utc")
    assert header["DATE-OBS"] == starts.min().isot
    assert header["MJD-OBS"] == pytest.approx(starts.min().mjd, abs=1e-9)
    assert header["DATE-END"] == (starts.max() + exptime * u.s).isot
    mid = Time(np.mean((starts + exptime / 2 * u.s).mjd), format="mjd", scale="utc")
    assert header["MJD-AVG"] == pytest.approx(mid.mjd, abs=1e-9)
    assert header["DATE-AVG"] == mid.isot
    # Nothing may date the product from the reference frame (2017, 2019).
    for key in ("MJDREF", "MJDREFI", "MJDREFF", "DATEREF", "DATE-BEG", "MJD-BEG", "JEPOCH",
                "BEPOCH"):
        assert key not in header, key
    text = header.tostring()
    assert "2019-05-05" not in text and "2017-09-04" not in text


def test_stack_on_reference_from_another_date_keeps_the_frames_times(tmp_path):
    paths = _dated_frames(tmp_path, DATES)
    ref = _reference_from_another_night(tmp_path)
    result = skystack.stack(paths, reference=ref, backend="cpu")
    _check_times(result.meta)
    out = tmp_path / "stack.fits"
    stack_to_file(paths, out, reference=ref, backend="cpu")
    _check_times(fits.getheader(out))


def test_cli_stack_reference_times(tmp_path):
    paths = _dated_frames(tmp_path, DATES)
    ref = _reference_from_another_night(tmp_path)
    out = tmp_path / "s.fits"
    assert main(["stack", *paths, "-o", str(out), "--reference", ref, "-q",
                 "--backend", "cpu"]) == 0
    _check_times(fits.getheader(out))


def test_combine_first_frame_wcs_time_references_do_not_leak(tmp_path):
    paths = _dated_frames(tmp_path, DATES)
    with fits.open(paths[0], mode="update") as hl:
        hl[0].header["MJDREF"] = 58000.0
        hl[0].header["DATE-BEG"] = "2019-05-05T01:02:03"
    result = skystack.combine(paths, backend="cpu")
    assert "DATE-BEG" not in result.meta and "MJDREF" not in result.meta
    assert result.meta["DATE-OBS"] == Time(DATES).min().isot


# -- units ------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["electron", "electron / s", "adu"])
def test_ccddata_unit_is_kept(tmp_path, unit):
    frames = [CCDData(np.full((8, 9), 10.0 + k), unit=unit) for k in range(3)]
    out = tmp_path / "c.fits"
    result = skystack.combine(frames, out, backend="cpu")
    assert result.unit == u.Unit(unit)
    assert u.Unit(fits.getheader(out)["BUNIT"]) == u.Unit(unit)
    assert u.Unit(fits.getheader(out, "UNCERT")["BUNIT"]) == u.Unit(unit)


def test_hdu_and_file_bunit_kept(tmp_path):
    hdus = [fits.ImageHDU(np.full((8, 9), 5.0), header=fits.Header({"BUNIT": "electron"}))
            for _ in range(3)]
    assert skystack.combine(hdus, backend="cpu").unit == u.electron
    paths = _dated_frames(tmp_path, DATES, unit="electron/s")
    assert skystack.combine(paths, backend="cpu").unit == u.electron / u.s
    assert skystack.stack(paths, backend="cpu").unit == u.electron / u.s


def test_no_unit_is_adu_assumed():
    result = skystack.combine([np.ones((4, 5)), np.ones((4, 5))], backend="cpu")
    assert result.unit == u.adu and "assumed" in result.meta.comments["BUNIT"]


def test_mixed_units_refused_naming_a_frame_of_each():
    frames = [CCDData(np.ones((4, 5)), unit="electron"), CCDData(np.ones((4, 5)), unit="adu"),
              CCDData(np.ones((4, 5)), unit="electron")]
    with pytest.raises(SkystackError) as err:
        skystack.combine(frames, backend="cpu")
    msg = str(err.value)
    assert "\n" not in msg and "ccddata[0]" in msg and "ccddata[1]" in msg
    assert "electron" in msg and "adu" in msg


def test_mixed_units_files_refused_by_cli(tmp_path, capsys):
    a = _dated_frames(tmp_path, DATES[:2], unit="electron")
    b = tmp_path / "other.fits"
    fits.PrimaryHDU(np.ones((40, 50), np.float32)).writeto(b)  # no BUNIT: adu assumed
    assert main(["combine", *a, str(b), "-o", str(tmp_path / "o.fits"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "light_0.fits" in err and "other.fits" in err


def test_unit_spellings_of_one_unit_are_not_mixed():
    frames = [CCDData(np.ones((4, 5)), unit="adu"),
              CCDData(np.ones((4, 5)), unit="adu", meta={"BUNIT": "ADU"})]
    assert skystack.combine(frames, backend="cpu").unit == u.adu


# -- non-ASCII file names ---------------------------------------------------------------------
def test_non_ascii_file_names_cli_combine(tmp_path):
    names = ["ñ_light.fits", "星.fits", "n_light.fits", "星星.fits"]
    paths = []
    for k, name in enumerate(names):
        p = tmp_path / name
        fits.PrimaryHDU(np.full((6, 7), float(k), np.float32)).writeto(p)
        paths.append(str(p))
    out = tmp_path / "out.fits"
    assert main(["combine", *paths, "-o", str(out), "-q"]) == 0
    header = fits.getheader(out)
    labels = [header[f"IMCMB{i:03d}"] for i in range(1, 5)]
    assert all(lab.isascii() and lab.isprintable() for lab in labels)
    assert len(set(labels)) == 4
    assert labels[2] == "n_light.fits"  # ASCII names unchanged
    assert labels[0].endswith("_light.fits") and labels[0] != labels[2]
    # Recognisable: the escape decodes back to the file's name.
    assert [lab.encode("ascii").decode("unicode_escape") for lab in labels] == names


def test_night_v_stack_dated_by_its_own_frames_and_non_ascii_names(tmp_path):
    """The night stacks every filter of an object on one grid (the object's first light, here a
    B frame): the V stack must still be dated by the V frames. Light files with non-ASCII names
    go through the whole night (IMCMB, GRIDREF)."""
    from skystack.demo_data import write_sample_night

    raw = tmp_path / "raw"
    write_sample_night(raw, shape=(64, 72), n_bias=3, n_dark=0, n_flat=2, filters=("B", "V"),
                       n_light=3, light_exptime=20.0, seed=5)
    for p in sorted(raw.glob("light_*")):
        p.rename(p.with_name("ñ星_" + p.name))
    out = tmp_path / "out"
    assert main(["night", str(raw), "-o", str(out), "-q", "--backend", "cpu",
                 "--no-previews", "--align", "wcs"]) == 0
    [v_stack] = [p for p in (out / "stacks").glob("*.fits") if "_V" in p.name]
    header = fits.getheader(v_stack)
    v_starts = Time([fits.getheader(p)["DATE-OBS"] for p in raw.glob("*light*_V_*")])
    assert header["DATE-OBS"] == v_starts.min().isot
    assert header["MJD-OBS"] == pytest.approx(v_starts.min().mjd, abs=1e-8)
    assert header["GRIDREF"].startswith("\\xf1\\u661f_") and "_B_" in header["GRIDREF"]
    assert header["IMCMB001"].startswith("\\xf1\\u661f_")


def test_ccddata_wcs_is_used_by_stack():
    """A CCDData carries its WCS apart from meta: the stack must see it."""
    w = _wcs((20, 30))
    frames = [CCDData(np.full((20, 30), 3.0), unit="electron", wcs=w) for _ in range(2)]
    result = skystack.stack(frames, backend="cpu")
    assert result.unit == u.electron
    np.testing.assert_allclose(result.data[2:-2, 2:-2], 3.0)
