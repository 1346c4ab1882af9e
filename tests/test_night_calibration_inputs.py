"""``skystack night`` with calibration inputs that used to give a wrong product or a traceback:
unusable EXPTIME values, darks without a bias, and flat groups that cannot be normalised."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from astropy.io import fits

from skystack.demo_data import write_sample_night
from skystack.night.run import format_night_table, run_night

SHAPE = (96, 112)
LIGHT_T = 90.0  # no dark of this exposure: the 60 s dark is scaled (or, without bias, not)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample_night(tmp_path_factory.mktemp("calin") / "raw", shape=SHAPE, n_bias=3,
                              n_dark=3, dark_exptime=60.0, n_flat=3, filters=("B", "V", "R"),
                              n_light=4, light_exptime=LIGHT_T, dither_px=3.0, seed=5)


def _copy(sample, dest, roles=("bias", "dark", "flat", "light")):
    dest.mkdir()
    for path in sample.directory.glob("*.fits"):
        if path.name.split("_")[0] in roles:
            shutil.copy(path, dest / path.name)
    return dest


def _set(path, **cards):
    with fits.open(path, mode="update") as hdul:
        for key, value in cards.items():
            hdul[0].header[key] = value


def _frames(out):
    summary = json.loads((out / "summary.json").read_text())
    return {f["file"].rsplit("/", 1)[-1]: f for f in summary["frames"]}, summary


def test_unusable_exptime_frames_are_skipped_with_the_reason(sample, tmp_path):
    raw = _copy(sample, tmp_path / "raw")
    bad = {"light_M67_B_001.fits": -LIGHT_T,  # would have the dark *added*
           "light_M67_B_002.fits": "NaN", "light_M67_B_003.fits": 1e308,
           "light_M67_V_001.fits": "ninety", "dark_060s_001.fits": 1e308,
           "flat_R_001.fits": -2.0}
    for name, value in bad.items():
        _set(raw / name, EXPTIME=value)
    out = tmp_path / "out"
    result = run_night(raw, out, backend="cpu", previews=False)
    frames, _ = _frames(out)
    for name in bad:
        assert not frames[name]["used"], name
        assert frames[name]["reason"].startswith("EXPTIME = "), frames[name]["reason"]
        assert "skipped" in frames[name]["reason"]
    assert "not positive" in frames["light_M67_B_001.fits"]["reason"]
    assert "1e+06 s" in frames["light_M67_B_003.fits"]["reason"]
    assert "not a number" in frames["light_M67_V_001.fits"]["reason"]
    assert "not finite" in frames["light_M67_B_002.fits"]["reason"]
    # Everything else is used, and no master is made for the corrupt exposure time.
    others = [f for n, f in frames.items() if n not in bad and n.split("_")[0] != "bias"]
    assert all(f["used"] for f in others)
    assert sorted(p.name for p in (out / "masters").glob("dark*")) == ["dark_60s.fits"]
    assert fits.getheader(out / "stacks" / "M67_B.fits")["NCOMBINE"] == 1
    assert fits.getheader(out / "stacks" / "M67_V.fits")["NCOMBINE"] == 3
    assert "EXPTIME = -90 s is not positive" in format_night_table(result)


def test_dark_without_bias_is_not_scaled(sample, tmp_path):
    """Without biases the master dark holds the bias level (1000 ADU): scaled by 90/60 it would
    take 500 ADU too much from every light. The closest dark is subtracted as it is instead,
    leaving the 30 s of dark current it lacks (2 ADU)."""
    raw = _copy(sample, tmp_path / "raw", roles=("dark", "flat", "light"))
    out = tmp_path / "out"
    result = run_night(raw, out, backend="cpu", previews=False)
    frames, _ = _frames(out)
    light = frames["light_M67_V_001.fits"]["masters"]
    assert light["dark"] == "dark_60s.fits" and light["dark_scale"] == 1.0
    assert "no bias" in light["dark_note"] and "unscaled" in light["dark_note"]
    assert "no bias: dark 60s subtracted unscaled" in format_night_table(result)
    t = sample.truth
    stack = fits.getdata(out / "stacks" / "M67_V.fits")
    inner = stack[10:-10, 10:-10]
    # Sky of the lights plus the uncorrected 30 s of dark current, divided by the flat (median
    # 1); faint stars raise the median by a fraction of an ADU.
    expected = (t["sky"]["V"] * LIGHT_T * np.mean(t["sky_scale"]["V"])
                + np.median(t["dark_current"]) * (LIGHT_T - 60.0) / t["gain"])
    assert float(np.nanmedian(inner)) == pytest.approx(expected, abs=2.0)


def test_flat_group_that_cannot_be_normalised_is_skipped(sample, tmp_path):
    """B flats with no light (below the bias: negative median after calibration) and V flats
    with no data (all NaN) fail alone; their lights are stacked without a flat, with a note;
    the R flat and stack are made as usual; no message names a temporary file."""
    raw = _copy(sample, tmp_path / "raw")
    bias = fits.getdata(sample.bias[0]).astype(np.float32)
    for path in raw.glob("flat_B_*.fits"):
        with fits.open(path, mode="update") as hdul:
            hdul[0].data = (bias - 50).astype(np.uint16)
    for path in raw.glob("flat_V_*.fits"):
        header = fits.getheader(path)
        for key in ("BZERO", "BSCALE"):
            header.remove(key, ignore_missing=True)
        fits.PrimaryHDU(np.full(SHAPE, np.nan, np.float32), header).writeto(path,
                                                                          overwrite=True)
    out = tmp_path / "out"
    lines: list[str] = []
    result = run_night(raw, out, backend="cpu", previews=False, log=lines.append)
    by_name = {p.path.rsplit("/", 1)[-1]: p for p in result.products}
    for filt in "BV":
        flat = by_name[f"flat_{filt}.fits"]
        assert flat.status == "failed" and not (out / "masters" / f"flat_{filt}.fits").exists()
        assert f"lights in {filt} are not flat-fielded" in flat.notes[-1]
        assert by_name[f"M67_{filt}.fits"].status == "built"
    assert "not positive" in by_name["flat_B.fits"].notes[-1]
    assert by_name["flat_R.fits"].status == "built"
    frames, summary = _frames(out)
    for name, rec in frames.items():
        if name.startswith(("flat_B", "flat_V")):
            assert not rec["used"] and rec["reason"].startswith("flat group skipped: ")
        if name.startswith(("light_M67_B", "light_M67_V")):
            assert rec["used"] and "flat" not in rec["masters"]
            assert "not flat-fielded" in rec["masters"]["flat_note"]
        if name.startswith("light_M67_R"):
            assert rec["used"] and rec["masters"]["flat"] == "flat_R.fits"
    text = json.dumps(summary) + "\n".join(lines) + format_night_table(result)
    assert ".partial" not in text and ".inprogress" not in text
    assert any("flat    failed" in line and "flat_B.fits" in line for line in lines)
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
