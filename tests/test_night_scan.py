"""skystack.night.scan: frame roles, groups and skipped files, against what was written."""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
from astropy.io import fits

from skystack.demo_data import write_sample_night
from skystack.night.scan import (
    FrameInfo,
    GroupKey,
    SkippedFile,
    classify_imagetyp,
    format_scan_table,
    group_names,
    scan,
)


def _write(path, *, shape=(8, 10), **cards):
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    fits.PrimaryHDU(np.zeros(shape, np.int16), header=header).writeto(path)
    return str(path)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return write_sample_night(tmp_path_factory.mktemp("night"), filters=("B", "V", "R"),
                              n_bias=3, n_dark=2, n_flat=2, n_light=2, shape=(64, 64))


def test_sample_night_every_file_classified(night):
    result = scan(night.directory)
    assert result.skipped == []
    expected = {str(p): ("bias", "", "") for p in night.bias}
    expected.update({str(p): ("dark", "", "") for p in night.dark})
    for f, paths in night.flat.items():
        expected.update({str(p): ("flat", f, "") for p in paths})
    for f, paths in night.light.items():
        expected.update({str(p): ("light", f, "M67") for p in paths})
    assert sorted(f.path for f in result.frames) == sorted(expected)
    for info in result.frames:
        role, filt, obj = expected[info.path]
        assert (info.role, info.object) == (role, obj)
        if role in ("flat", "light"):
            assert info.filter == filt
        assert info.binning == (1, 1) and info.shape == (64, 64)
        assert info.exptime == {"bias": 0.0, "dark": 60.0, "flat": 2.0, "light": 60.0}[role]
        assert info.date_obs.startswith("2026-03-14T")
        assert info.header["IMAGETYP"] in ("Bias Frame", "Dark Frame", "Flat Field",
                                           "Light Frame")
        assert info.notes == ()
    # Directory listing is sorted by name.
    names = [os.path.basename(f.path) for f in result.frames]
    assert names == sorted(names)


def test_sample_night_groups(night):
    result = scan(night.directory)
    cam = dict(binning=(1, 1), shape=(64, 64))
    assert {k: sorted(f.path for f in v) for k, v in result.bias_groups().items()} == {
        GroupKey("bias", **cam): sorted(map(str, night.bias))}
    assert {k: len(v) for k, v in result.dark_groups().items()} == {
        GroupKey("dark", exptime=60.0, **cam): 2}
    flats = result.flat_groups()
    assert set(flats) == {GroupKey("flat", filter=f, **cam) for f in "BVR"}
    for key, frames in flats.items():
        assert sorted(f.path for f in frames) == sorted(map(str, night.flat[key.filter]))
    lights = result.light_groups()
    assert set(lights) == {GroupKey("light", object="M67", filter=f, **cam) for f in "BVR"}
    for key, frames in lights.items():
        assert [f.path for f in frames] == [str(p) for p in night.light[key.filter]]
    assert sorted(group_names(lights).values()) == ["M67_B", "M67_R", "M67_V"]
    assert list(group_names(result.dark_groups()).values()) == ["dark_60s"]
    assert len(result.by_role("light")) == 6
    # Custom grouping: lights by filter only.
    assert {k.filter: len(v) for k, v in result.groups("light", ["filter"]).items()} == {
        "B": 2, "R": 2, "V": 2}


SPELLINGS = [
    ("BIAS", "bias"), ("bias", "bias"), ("Bias Frame", "bias"), ("ZERO", "bias"),
    ("  zero  ", "bias"), ("BIAS_FRAME", "bias"),
    ("DARK", "dark"), ("Dark Frame", "dark"), ("dark", "dark"),
    ("FLAT", "flat"), ("Flat Field", "flat"), ("Flat Frame", "flat"), ("SKYFLAT", "flat"),
    ("DOMEFLAT", "flat"), ("TWIFLAT", "flat"), ("flat-field", "flat"), ("Sky Flat", "flat"),
    ("LIGHT", "light"), ("OBJECT", "light"), ("SCIENCE", "light"), ("Light Frame", "light"),
    ("light", "light"), ("object", "light"),
]


@pytest.mark.parametrize("value,role", SPELLINGS)
def test_imagetyp_spellings(value, role):
    assert classify_imagetyp(value) == role


def test_spelling_variants_in_files(tmp_path):
    for i, (value, _) in enumerate(SPELLINGS):
        _write(tmp_path / f"f{i:02d}.fits", IMAGETYP=value, EXPTIME=1.0)
    result = scan(tmp_path)
    assert result.skipped == []
    assert [f.role for f in result.frames] == [role for _, role in SPELLINGS]


@pytest.mark.parametrize("key", ["IMAGETYPE", "OBSTYPE", "FRAME"])
def test_fallback_type_keywords(tmp_path, key):
    path = _write(tmp_path / "a.fits", **{key: "Dark Frame"}, EXPTIME=30.0)
    (info,) = scan(path).frames
    assert info.role == "dark" and info.exptime == 30.0


def test_imagetyp_preferred_and_blank_falls_back(tmp_path):
    a = _write(tmp_path / "a.fits", IMAGETYP="FLAT", OBSTYPE="BIAS", FILTER=" Ha ")
    b = _write(tmp_path / "b.fits", IMAGETYP="  ", OBSTYPE="BIAS")
    frames = {f.path: f for f in scan([a, b]).frames}
    assert frames[a].role == "flat" and frames[a].filter == "Ha"
    assert frames[b].role == "bias"


def test_bad_files_are_skipped_with_reasons(tmp_path):
    good = _write(tmp_path / "good.fits", IMAGETYP="LIGHT", EXPTIME=5.0, OBJECT="M1")
    (tmp_path / "garbage.fits").write_bytes(b"this is not a FITS file at all\n" * 200)
    (tmp_path / "empty.fit").write_bytes(b"")
    fits.PrimaryHDU(np.zeros((3, 8, 8), np.float32)).writeto(tmp_path / "cube.fits")
    _write(tmp_path / "odd.fits", IMAGETYP="Calibration")
    _write(tmp_path / "none.fits", OBJECT="M1")
    _write(tmp_path / "master.fits", IMAGETYP="Master Bias")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("a", "E", array=np.ones(3))])]).writeto(tmp_path / "table.fits")
    (tmp_path / "notes.txt").write_text("not scanned")  # not a FITS name: ignored
    (tmp_path / ".hidden.fits").write_bytes(b"junk")  # hidden: ignored
    os.mkdir(tmp_path / "sub.fits")  # a directory with a FITS-like name: ignored

    result = scan(tmp_path)  # must not raise
    assert [f.path for f in result.frames] == [good]
    skipped = {os.path.basename(s.path): s for s in result.skipped}
    assert set(skipped) == {"garbage.fits", "empty.fit", "cube.fits", "odd.fits", "none.fits",
                            "master.fits", "table.fits"}
    for name, s in skipped.items():
        assert isinstance(s, SkippedFile) and s.reason
        assert name in str(s) and "\n" not in s.reason
    assert "not a FITS file" in skipped["garbage.fits"].reason
    assert "not a FITS file" in skipped["empty.fit"].reason
    assert "2-D" in skipped["cube.fits"].reason
    assert "2-D" in skipped["table.fits"].reason
    assert "unknown IMAGETYP" in skipped["odd.fits"].reason
    assert "'Calibration'" in skipped["odd.fits"].reason
    assert "IMAGETYP" in skipped["none.fits"].reason
    assert "master" in skipped["master.fits"].reason
    table = format_scan_table(result)
    for name in skipped:
        assert name in table
    assert "unknown IMAGETYP = 'Calibration'" in table


def test_missing_inputs_are_skipped(tmp_path):
    good = _write(tmp_path / "a.fits", IMAGETYP="BIAS")
    result = scan([good, tmp_path / "missing.fits", str(tmp_path / "nothing*.fits")])
    assert [f.path for f in result.frames] == [good]
    reasons = {os.path.basename(s.path): s.reason for s in result.skipped}
    assert reasons == {"missing.fits": "no such file or directory",
                       "nothing*.fits": "pattern matched no files"}


def test_light_without_exptime_is_kept_with_a_note(tmp_path):
    path = _write(tmp_path / "l.fits", IMAGETYP="LIGHT", OBJECT="NGC 1", FILTER="V")
    (info,) = scan(path).frames
    assert info.role == "light" and math.isnan(info.exptime)
    assert any("EXPTIME" in n for n in info.notes)
    assert "EXPTIME" in format_scan_table(scan(path))
    (key,) = scan(path).light_groups()
    assert key.object == "NGC 1" and key.filter == "V"
    # Darks without EXPTIME group together under exptime None (NaN would never match itself).
    d = [_write(tmp_path / f"d{i}.fits", IMAGETYP="DARK") for i in range(2)]
    assert [len(v) for v in scan(d).dark_groups().values()] == [2]
    assert list(scan(d).dark_groups())[0].exptime is None


@pytest.mark.parametrize("cards,binning", [
    ({"XBINNING": 2, "YBINNING": 2}, (2, 2)),
    ({"XBINNING": 1, "YBINNING": 2}, (1, 2)),
    ({"CCDSUM": "2 2"}, (2, 2)),
    ({"CCDSUM": "3 1"}, (3, 1)),
    ({"BINNING": "2x2"}, (2, 2)),
    ({"BINNING": 4}, (4, 4)),
    ({}, (1, 1)),
])
def test_binning_forms(tmp_path, cards, binning):
    (info,) = scan(_write(tmp_path / "a.fits", IMAGETYP="BIAS", **cards)).frames
    assert info.binning == binning


def test_bad_binning_is_a_note(tmp_path):
    (info,) = scan(_write(tmp_path / "a.fits", IMAGETYP="BIAS", CCDSUM="two")).frames
    assert info.binning == (1, 1) and info.notes


def test_lights_of_different_binning_or_shape_are_split(tmp_path):
    paths = [
        _write(tmp_path / "a1.fits", IMAGETYP="LIGHT", OBJECT="M1", FILTER="R", EXPTIME=10.0),
        _write(tmp_path / "a2.fits", IMAGETYP="LIGHT", OBJECT="M1", FILTER="R", EXPTIME=20.0),
        _write(tmp_path / "b1.fits", IMAGETYP="LIGHT", OBJECT="M1", FILTER="R", EXPTIME=10.0,
               XBINNING=2, YBINNING=2, shape=(4, 5)),
        _write(tmp_path / "c1.fits", IMAGETYP="LIGHT", OBJECT="M1", FILTER="R", EXPTIME=10.0,
               shape=(6, 10)),
        _write(tmp_path / "d1.fits", IMAGETYP="LIGHT", OBJECT="M1", FILTER="V", EXPTIME=10.0),
    ]
    groups = scan(paths).light_groups()
    got = {(k.filter, k.binning, k.shape): sorted(os.path.basename(f.path) for f in v)
           for k, v in groups.items()}
    assert got == {("R", (1, 1), (8, 10)): ["a1.fits", "a2.fits"],  # exptimes not split
                   ("R", (2, 2), (4, 5)): ["b1.fits"],
                   ("R", (1, 1), (6, 10)): ["c1.fits"],
                   ("V", (1, 1), (8, 10)): ["d1.fits"]}
    names = group_names(groups)
    assert len(set(names.values())) == 4
    by_shape = {k.shape if k.filter == "R" else "V": n for k, n in names.items()}
    assert by_shape == {(8, 10): "M1_R_bin1x1_8x10", (4, 5): "M1_R_bin2x2",
                        (6, 10): "M1_R_bin1x1_6x10", "V": "M1_V"}


def test_group_names_of_values_that_read_alike_stay_distinct():
    """FILTER ``V/1`` and ``V_1`` (and ``v_1``: names are compared case-insensitively) would
    all be ``flat_V_1``: each gets its own hash suffix, so inspect's plots never overwrite
    each other; a name nothing else shares stays plain."""
    keys = [GroupKey("flat", filter=f, binning=(1, 1), shape=(8, 10))
            for f in ("V/1", "V_1", "v_1", "R")]
    names = group_names(keys)
    assert len({n.casefold() for n in names.values()}) == 4
    assert names[keys[3]] == "flat_R"
    for k in keys[:3]:
        assert re.fullmatch(r"flat_[Vv]_1~[0-9a-f]{8}", names[k]), names[k]


def test_inputs_forms(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    a = _write(tmp_path / "B.FIT", IMAGETYP="BIAS")
    b = _write(tmp_path / "a.fits", IMAGETYP="BIAS")
    c = str(tmp_path / "c.fits.gz")
    fits.PrimaryHDU(np.ones((8, 10), np.float32), header=fits.Header(
        [("IMAGETYP", "DARK"), ("EXPTIME", 5.0)])).writeto(c)
    d = str(tmp_path / "d.fits.fz")
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(
        np.ones((8, 10), np.float32), header=fits.Header([("IMAGETYP", "FLAT"),
                                                          ("FILTER", "R")]))]).writeto(d)
    _write(sub / "deep.fits", IMAGETYP="BIAS")  # not recursive

    result = scan(tmp_path)
    assert [f.path for f in result.frames] == [a, b, c, d]  # sorted by name
    assert [f.role for f in result.frames] == ["bias", "bias", "dark", "flat"]
    assert result.frames[3].filter == "R" and result.frames[3].shape == (8, 10)
    # A glob, a list with a duplicate and an @list give the same frames.
    assert [f.path for f in scan(str(tmp_path / "*.fits")).frames] == [b]
    assert [f.path for f in scan([b, a, b]).frames] == [b, a]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# biases\n{a}\n\n{b}\n")
    assert [f.path for f in scan(f"@{listing}").frames] == [a, b]
    assert [f.path for f in scan([sub, b]).frames] == [str(sub / "deep.fits"), b]


def test_format_scan_table_counts(night):
    table = format_scan_table(scan(night.directory))
    lines = table.splitlines()
    assert lines[0] == "17 frames classified, 0 skipped"
    rows = {tuple(line.split()[:2]): line for line in lines[3:]}
    assert ("bias", "bin") in rows and rows[("bias", "bin")].split()[-2:] == ["3", "0"]
    assert rows[("dark", "60")].split()[-2:] == ["2", "60"]
    for f in "BVR":
        assert rows[("flat", f)].split()[-2:] == ["2", "2"]
        assert rows[("light", "M67")]  # one line per filter, checked below
    light_rows = [line.split() for line in lines if line.startswith("light")]
    assert sorted(r[2] for r in light_rows) == ["B", "R", "V"]
    assert all(r[-2:] == ["2", "60"] for r in light_rows)


def test_frameinfo_fields_are_typed(night):
    info = scan(night.light["V"][0]).frames[0]
    assert isinstance(info, FrameInfo)
    assert isinstance(info.header, fits.Header)
    assert isinstance(info.exptime, float) and isinstance(info.shape, tuple)
