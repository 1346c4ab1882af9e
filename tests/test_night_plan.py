"""Planning a night reads headers only: a night of header-only files (no pixel data at all, so
any pixel read would fail) is scanned and planned into typed jobs, checked field by field."""

from __future__ import annotations

import os

import pytest
from astropy.io import fits

from skystack.night.plan import (
    BadpixJob,
    Camera,
    MasterJob,
    StackJob,
    calibration_choice,
    plan_night,
)
from skystack.night.scan import scan


def _header_only(folder, name: str, shape=(64, 80), **cards) -> str:
    """A FITS file holding only its header (NAXIS says ``shape``, the data is missing)."""
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2),
                          ("NAXIS1", shape[1]), ("NAXIS2", shape[0])])
    for key, value in cards.items():
        header[key.replace("_", "-")] = value
    path = os.path.join(folder, name)
    header.tofile(path)
    return path


@pytest.fixture
def night(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(2):
        _header_only(raw, f"bias{k}.fits", IMAGETYP="BIAS")
        _header_only(raw, f"dark60_{k}.fits", IMAGETYP="DARK", EXPTIME=60.0)
        _header_only(raw, f"flatV{k}.fits", IMAGETYP="FLAT", FILTER="V", EXPTIME=2.0)
    _header_only(raw, "dark_notime.fits", IMAGETYP="DARK")
    # Lights of M1 in V and R, out of time order; two of NGC 1 binned 2x2 (another camera).
    _header_only(raw, "m1_v_late.fits", IMAGETYP="LIGHT", OBJECT="M1", FILTER="V",
                 EXPTIME=30.0, DATE_OBS="2026-03-14T22:00:00")
    _header_only(raw, "m1_v_early.fits", IMAGETYP="LIGHT", OBJECT="M1", FILTER="V",
                 EXPTIME=30.0, DATE_OBS="2026-03-14T21:00:00")
    _header_only(raw, "m1_r.fits", IMAGETYP="LIGHT", OBJECT="M1", FILTER="R", EXPTIME=60.0,
                 DATE_OBS="2026-03-14T20:30:00")
    for k in range(2):
        _header_only(raw, f"ngc_{k}.fits", shape=(32, 40), IMAGETYP="LIGHT", OBJECT="NGC 1",
                     FILTER="V", EXPTIME=60.0, XBINNING=2, YBINNING=2,
                     DATE_OBS=f"2026-03-14T23:0{k}:00")

    def no_pixels(*args, **kwargs):
        raise AssertionError("planning read pixels")

    monkeypatch.setattr("skystack.io.inputs.load_frames", no_pixels)
    monkeypatch.setattr(fits, "getdata", no_pixels)
    return raw, plan_night(scan(raw), str(tmp_path / "out"))


def test_jobs_of_a_scanned_night_without_pixels(night):
    raw, plan = night
    one, two = Camera((1, 1), (64, 80)), Camera((2, 2), (32, 40))
    kinds = [(job.kind, os.path.basename(job.path), job.camera) for job in plan.jobs]
    assert kinds == [("bias", "bias_1x1_64x80.fits", one),
                     ("dark", "dark_60s_1x1_64x80.fits", one),
                     ("flat", "flat_V_1x1_64x80.fits", one),
                     ("badpix", "badpix_1x1_64x80.fits", one),
                     ("stack", "M1_R_1x1_64x80.fits", one),
                     ("stack", "M1_V_1x1_64x80.fits", one),
                     ("stack", "NGC_1_V_2x2_32x40.fits", two)]
    bias, dark, flat, badpix, m1_r, m1_v, ngc = plan.jobs
    assert isinstance(bias, MasterJob) and isinstance(badpix, BadpixJob)
    assert all(isinstance(j, StackJob) for j in (m1_r, m1_v, ngc))
    assert [os.path.basename(f.path) for f in dark.frames] == ["dark60_0.fits", "dark60_1.fits"]
    assert dark.group == "1x1 64x80 60s" and dark.product_key() == {"exptime": 60.0}
    assert flat.product_key() == {"filter": "V"} and badpix.frames == ()
    # Stack frames by DATE-OBS; the object's lights of every filter are aligned together.
    assert [os.path.basename(f.path) for f in m1_v.frames] == ["m1_v_early.fits",
                                                               "m1_v_late.fits"]
    assert (m1_v.object, m1_v.filter, m1_v.group) == ("M1", "V", "M1 V 1x1 64x80")
    assert m1_v.product_key() == {"object": "M1", "filter": "V",
                                  "camera": [[1, 1], [64, 80]]}
    assert [os.path.basename(f.path) for f in plan.object_lights[("M1", one)]] == [
        "m1_r.fits", "m1_v_early.fits", "m1_v_late.fits"]
    assert os.path.basename(plan.grid_refs[("M1", one)].path) == "m1_r.fits"
    assert plan.records[str(raw / "dark_notime.fits")].reason == \
        "dark without a positive EXPTIME"
    masters = plan.masters[one]
    assert (masters.bias, masters.darks, masters.flats, masters.badpix) == (
        bias.path, {60.0: dark.path}, {"V": flat.path}, badpix.path)
    assert plan.masters[two].bias is None and not plan.masters[two].flats


def test_calibration_choice_of_each_role(night):
    _, plan = night
    one = Camera((1, 1), (64, 80))
    m1_r, m1_v = plan.jobs[4], plan.jobs[5]
    light_v = calibration_choice(plan.masters[one], m1_v.frames[0], "light")
    assert light_v.paths == (plan.masters[one].bias, plan.masters[one].darks[60.0],
                             plan.masters[one].flats["V"], plan.masters[one].badpix)
    assert light_v.dark_scale == 0.5 and light_v.used["dark_note"] == "dark 60s scaled by 0.5"
    light_r = calibration_choice(plan.masters[one], m1_r.frames[0], "light")
    assert light_r.flat is None and light_r.used["flat_note"] == "no flat for filter R"
    assert light_r.dark_scale == 1.0 and "dark_note" not in light_r.used
    dark = calibration_choice(plan.masters[one], plan.jobs[1].frames[0], "dark")
    assert dark.paths == (plan.masters[one].bias, None, None, None)
    ngc = plan.jobs[6]
    assert calibration_choice(plan.masters[ngc.camera], ngc.frames[0], "light").paths == (
        None, None, None, None)
