"""Frame selection: --exclude lists, the --where language, ImageFileCollection inputs."""

from __future__ import annotations

import logging
import operator
import os

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

import skystack
from skystack.cli import main
from skystack.errors import SkystackError
from skystack.io.selection import parse_where, selection_from
from skystack.night.scan import scan

SHAPE = (16, 20)


def _write_set(folder):
    """Six frames: darks of 60 s and 30 s, flats; values differ per frame (known means)."""
    rng = np.random.default_rng(3)
    specs = [("DARK", 60.0, "V"), ("DARK", 60.0, "V"), ("dark ", 60, "R"), ("DARK", 30.0, "V"),
             ("FLAT", 60.0, "V"), ("Dark", 60.0, "V")]
    data = {}
    for i, (typ, exp, filt) in enumerate(specs):
        arr = rng.normal(100 + 10 * i, 1, SHAPE).astype(np.float32)
        header = fits.Header({"IMAGETYP": typ, "EXPTIME": exp, "FILTER": filt})
        path = folder / f"f{i}.fits"
        fits.PrimaryHDU(arr, header).writeto(path)
        data[str(path)] = (arr, header)
    return data


def _mean_of(data, keep):
    return np.mean([data[p][0] for p in keep], axis=0)


def test_where_selects_by_header_like_a_python_filter(tmp_path):
    data = _write_set(tmp_path)
    ccd = skystack.combine(str(tmp_path / "*.fits"), where="IMAGETYP=DARK and EXPTIME=60",
                           backend="cpu")
    keep = [p for p, (_, h) in data.items()
            if h["IMAGETYP"].strip().upper() == "DARK" and float(h["EXPTIME"]) == 60]
    assert len(keep) == 4
    np.testing.assert_allclose(ccd.data, _mean_of(data, keep), rtol=1e-6)
    assert ccd.meta["NCOMBINE"] == 4
    assert ccd.meta["SELWHERE"] == "IMAGETYP=DARK and EXPTIME=60"
    assert ccd.meta["NWHEREX"] == 2
    assert any("--where" in str(h) for h in ccd.meta["HISTORY"])


def test_exclude_file_by_name_and_path_and_warns_on_unknown(tmp_path, caplog):
    data = _write_set(tmp_path)
    excl = tmp_path / "bad.txt"
    excl.write_text("# satellites\nf1.fits\n\n./f3.fits  # clouds\nnot_there.fits\n")
    with caplog.at_level(logging.WARNING, logger="skystack"):
        ccd = skystack.combine(str(tmp_path / "*.fits"), exclude=str(excl), backend="cpu")
    keep = [p for p in data if not p.endswith(("f1.fits", "f3.fits"))]
    np.testing.assert_allclose(ccd.data, _mean_of(data, keep), rtol=1e-6)
    assert ccd.meta["NEXCLUDE"] == 2
    assert "not_there.fits" in caplog.text and "matches no input" in caplog.text
    assert "f1.fits" not in caplog.text


def test_excluded_file_is_never_opened(tmp_path):
    _write_set(tmp_path)
    (tmp_path / "broken.fits").write_bytes(b"not fits at all")
    excl = tmp_path / "x.txt"
    excl.write_text("broken.fits\n")
    ccd = skystack.combine(str(tmp_path / "*.fits"), exclude=str(excl), backend="cpu")
    assert ccd.meta["NCOMBINE"] == 6


def test_selection_leaving_nothing_is_one_line_error(tmp_path):
    _write_set(tmp_path)
    with pytest.raises(SkystackError, match=r"--where 'IMAGETYP=BIAS' leaves no frames"):
        skystack.combine(str(tmp_path / "*.fits"), where="IMAGETYP=BIAS", backend="cpu")


def test_cli_where_syntax_error_is_one_line(tmp_path, capsys):
    _write_set(tmp_path)
    rc = main(["combine", str(tmp_path / "*.fits"), "-o", str(tmp_path / "o.fits"),
               "--where", "EXPTIME>=", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "expected a value after EXPTIME>=" in err[0]
    assert not (tmp_path / "o.fits").exists()


def test_cli_combine_where_records_selection(tmp_path):
    data = _write_set(tmp_path)
    out = tmp_path / "o.fits"
    rc = main(["combine", str(tmp_path / "*.fits"), "-o", str(out), "-q", "--backend", "cpu",
               "--where", "(FILTER=r or EXPTIME<40) and IMAGETYP!=flat"])
    assert rc == 0
    keep = [p for p in data if p.endswith(("f2.fits", "f3.fits"))]
    with fits.open(out) as hdul:
        np.testing.assert_allclose(hdul[0].data, _mean_of(data, keep), rtol=1e-6)
        assert hdul[0].header["NWHEREX"] == 4


def test_image_file_collection_filtered_by_imagetyp(tmp_path):
    from ccdproc import ImageFileCollection

    data = _write_set(tmp_path)
    ifc = ImageFileCollection(str(tmp_path), glob_include="*.fits")
    darks = ifc.filter(imagetyp="flat")
    keep = [p for p, (_, h) in data.items() if h["IMAGETYP"] == "FLAT"]
    ccd = skystack.combine(darks, backend="cpu")
    np.testing.assert_allclose(ccd.data, _mean_of(data, keep), rtol=1e-6)
    paths = ifc.files_filtered(imagetyp="flat", include_path=True)
    ccd2 = skystack.combine(paths, backend="cpu")
    np.testing.assert_array_equal(ccd.data, ccd2.data)


def test_night_scan_applies_selection(tmp_path):
    _write_set(tmp_path)
    excl = tmp_path / "x.txt"
    excl.write_text("f0.fits\n")
    result = scan(tmp_path, selection_from("EXPTIME=60", excl))
    names = sorted(f.path.rsplit("/", 1)[1] for f in result.frames)
    assert names == ["f1.fits", "f2.fits", "f4.fits", "f5.fits"]
    cards = {k: v for k, v, _ in result.selection}
    assert cards["NEXCLUDE"] == 1 and cards["NWHEREX"] == 1


_KEYS = st.sampled_from(["A", "B", "C"])
_VALUES = st.integers(-3, 3)


@st.composite
def _exprs(draw, depth=0):
    """(text, python predicate) pairs of random --where expressions."""
    if depth > 2 or draw(st.booleans()):
        key, op, value = draw(_KEYS), draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="])), \
            draw(_VALUES)
        fn = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
              ">": operator.gt, ">=": operator.ge}[op]
        return f"{key}{op}{value}", (lambda h, k=key, f=fn, v=value: k in h and f(h[k], v))
    left, right = draw(_exprs(depth + 1)), draw(_exprs(depth + 1))
    join = draw(st.sampled_from(["and", "or"]))
    if join == "and":
        return f"({left[0]}) and ({right[0]})", lambda h: left[1](h) and right[1](h)
    return f"({left[0]}) or ({right[0]})", lambda h: left[1](h) or right[1](h)


@settings(max_examples=150, deadline=None)
@given(_exprs(), st.dictionaries(_KEYS, _VALUES))
def test_where_matches_python_semantics(expr, header):
    text, predicate = expr
    assert parse_where(text).matches(header) == predicate(header)


def test_stack_where_and_night_selection_in_summary(tmp_path):
    import json

    from skystack.night.run import run_night
    from tests.tiny_night import write_flat, write_lights

    raw = tmp_path / "raw"
    raw.mkdir()
    write_flat(raw, "flat", "V")
    lights = write_lights(raw, "a", "M1", "V") + write_lights(raw, "b", "M2", "V", seed=4)
    ccd = skystack.stack(lights, where="OBJECT=m2", backend="cpu")
    assert ccd.meta["NCOMBINE"] == 3 and ccd.meta["SELWHERE"] == "OBJECT=m2"
    excl = tmp_path / "skip.txt"
    excl.write_text("a_0.fits\n")
    result = run_night(raw, tmp_path / "out", backend="cpu", previews=False,
                       where="OBJECT!=M2", exclude=excl)
    stacks = [p for p in result.products if p.kind == "stack"]
    assert [os.path.basename(p.path) for p in stacks] == ["M1_V.fits"]
    assert stacks[0].inputs == [str(raw / "a_1.fits"), str(raw / "a_2.fits")]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["selection"]["SELWHERE"] == "OBJECT!=M2"
    # the flats have no OBJECT: a missing keyword fails the comparison, so they are out too
    assert summary["selection"]["NWHEREX"] == 3 + 3 and summary["selection"]["NEXCLUDE"] == 1


def test_mef_hdu_all_selection_by_primary_header(tmp_path):
    from tests.test_mef import CCDS, write_mefs

    paths, cubes = write_mefs(tmp_path, n=4)
    excl = tmp_path / "x.txt"
    excl.write_text(os.path.basename(paths[3]) + "\n")
    out = tmp_path / "m.fits"
    assert main(["combine", *paths, "-o", str(out), "--hdu", "all", "-q", "--backend", "cpu",
                 "--exclude", str(excl), "--where", "DATE-OBS<2024-03-03"]) == 0
    with fits.open(out) as hdul:  # exposures 0 and 1 (dates 03-01, 03-02); 3 excluded
        for k, name in enumerate(CCDS):
            np.testing.assert_allclose(hdul[name].data, np.mean(cubes[k][:2], axis=0),
                                       rtol=1e-6)
        assert hdul[0].header["NEXCLUDE"] == 1 and hdul[0].header["NWHEREX"] == 1


def test_cli_inspect_where_keeps_only_the_selected_frames(tmp_path, capsys):
    _write_set(tmp_path)
    assert main(["inspect", str(tmp_path)]) == 0
    every = capsys.readouterr().out
    assert "flat" in every.lower()
    assert main(["inspect", str(tmp_path), "--where", "IMAGETYP=DARK"]) == 0
    darks = capsys.readouterr().out
    assert "dark" in darks.lower() and "flat" not in darks.lower()
    assert main(["inspect", str(tmp_path), "--where", "EXPTIME=999"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
