"""The command line: version, info, combine, demo, exit codes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData

from skystack import __version__
from skystack.cli import main


def _write(tmp_path, n=4, **header):
    paths = []
    for k in range(n):
        h = fits.Header(header)
        h["EXPTIME"] = 10.0
        p = tmp_path / f"f{k}.fits"
        fits.PrimaryHDU((np.arange(12, dtype=np.uint16).reshape(3, 4) + 1000 * k)
                        .astype(np.uint16), header=h).writeto(p)
        paths.append(str(p))
    return paths


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"skystack {__version__}"


def test_console_script_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "skystack", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_info_table(tmp_path, capsys):
    paths = _write(tmp_path, IMAGETYP="Light Frame", FILTER="R", **{"DATE-OBS": "2026-01-01"})
    assert main(["info", *paths]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["file", "shape", "dtype", "IMAGETYP", "FILTER", "EXPTIME",
                              "DATE-OBS"]
    assert len(out) == 2 + len(paths)
    assert "3x4" in out[2] and "uint16" in out[2] and "Light Frame" in out[2]
    assert "R" in out[2].split() and "2026-01-01" in out[2]


def test_info_reports_bad_files_and_continues(tmp_path, capsys):
    paths = _write(tmp_path, n=1)
    bad = tmp_path / "bad.fits"
    bad.write_text("nope" * 1000)
    assert main(["info", paths[0], str(bad)]) == 2
    captured = capsys.readouterr()
    assert "f0.fits" in captured.out
    assert captured.err.strip() == f"skystack: error: {bad}: not a FITS file"


def test_combine_writes_ccddata(tmp_path, capsys):
    paths = _write(tmp_path)
    out = tmp_path / "o.fits"
    assert main(["combine", *paths, "-o", str(out), "--method", "median", "--reject",
                 "sigclip", "--sigma", "3", "--backend", "cpu"]) == 0
    assert "wrote" in capsys.readouterr().out
    ccd = CCDData.read(out)
    np.testing.assert_allclose(ccd.data, np.arange(12).reshape(3, 4) + 1500.0)
    assert fits.getheader(out)["EXPTIME"] == 10.0


def test_quiet_prints_nothing(tmp_path, capsys):
    paths = _write(tmp_path)
    assert main(["combine", *paths, "-o", str(tmp_path / "o.fits"), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_no_command_is_usage_error(capsys):
    assert main([]) == 2


def test_demo_end_to_end(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "night"), "--backend", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "M67_V.fits" in out and "light" in out
    stack = tmp_path / "night" / "stacks" / "M67_V.fits"
    ccd = CCDData.read(stack)
    assert ccd.header["NCOMBINE"] == 9 and np.isfinite(ccd.data).any()
    bias = CCDData.read(tmp_path / "night" / "masters" / "bias.fits")
    assert abs(np.median(bias.data) - 1000) < 20
    assert (tmp_path / "night" / "previews" / "M67_rgb.png").is_file()
    # A second run finds the raw night and reuses every product; nothing is rewritten.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "night").rglob("*.fits")}
    assert main(["demo", str(tmp_path / "night"), "--backend", "cpu"]) == 0
    assert "reused" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "night").rglob("*.fits")}


def test_info_on_a_directory_classifies_the_frames(tmp_path, capsys):
    from skystack.demo_data import write_sample_night

    write_sample_night(tmp_path / "raw", shape=(32, 32), n_bias=2, n_dark=1, n_flat=1,
                       n_light=2)
    (tmp_path / "raw" / "junk.fits").write_text("junk")
    assert main(["info", str(tmp_path / "raw")]) == 0
    out = capsys.readouterr().out
    assert "light" in out and "M67 V" in out and "junk.fits" in out
