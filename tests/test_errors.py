"""Bad input: one line naming the file and the problem, exit code 2, no output left behind."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits

from skystack.cli import main


@pytest.fixture
def good(tmp_path):
    paths = []
    for k in range(3):
        p = tmp_path / f"good{k}.fits"
        fits.PrimaryHDU(np.full((10, 12), k, np.float32)).writeto(p)
        paths.append(str(p))
    return paths


def _run(capsys, args, out):
    before = set(os.listdir(os.path.dirname(out)))
    code = main(["combine", *args, "-o", out, "--backend", "cpu", "-q"])
    err = capsys.readouterr().err
    after = set(os.listdir(os.path.dirname(out)))
    return code, err, after - before


def _expect_error(capsys, args, out, *words):
    code, err, new_files = _run(capsys, args, out)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("skystack: error: ")
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not new_files, f"left behind: {new_files}"
    return lines[0]


def test_missing_file(capsys, good, tmp_path):
    missing = str(tmp_path / "nope.fits")
    _expect_error(capsys, good + [missing], str(tmp_path / "o.fits"), missing, "no such file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(capsys, good, tmp_path):
    os.chmod(good[1], 0)
    _expect_error(capsys, good, str(tmp_path / "o.fits"), good[1], "permission")


def test_not_fits(capsys, good, tmp_path):
    bad = tmp_path / "notes.fits"
    bad.write_text("this is not a FITS file at all\n" * 200)
    _expect_error(capsys, good + [str(bad)], str(tmp_path / "o.fits"), str(bad), "not a FITS")


def test_truncated_data(capsys, good, tmp_path):
    bad = tmp_path / "short.fits"
    with open(good[0], "rb") as f:
        raw = f.read()
    bad.write_bytes(raw[: 2880 + 100])
    _expect_error(capsys, good + [str(bad)], str(tmp_path / "o.fits"), str(bad), "truncated")


def test_shape_mismatch(capsys, good, tmp_path):
    odd = tmp_path / "odd.fits"
    fits.PrimaryHDU(np.zeros((10, 13), np.float32)).writeto(odd)
    _expect_error(capsys, good + [str(odd)], str(tmp_path / "o.fits"), "odd.fits", "10x13",
                  "10x12")


def test_no_image_in_hdu(capsys, tmp_path):
    table_only = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="E", array=np.arange(3.0))])]).writeto(table_only)
    _expect_error(capsys, [str(table_only)], str(tmp_path / "o.fits"), str(table_only),
                  "no 2-D image")
    _expect_error(capsys, [str(table_only), "--hdu", "0"], str(tmp_path / "o.fits"),
                  "no image data")


def test_cube_is_refused(capsys, tmp_path):
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((3, 4, 5), np.float32)).writeto(cube)
    _expect_error(capsys, [str(cube), "--hdu", "0"], str(tmp_path / "o.fits"), "3-D")


def test_empty_file_list(capsys, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    _expect_error(capsys, [f"@{empty}"], str(tmp_path / "o.fits"), "no input files")
    _expect_error(capsys, [str(tmp_path / "*.fits")], str(tmp_path / "o.fits"),
                  "matched no files")


def test_existing_output_needs_overwrite(capsys, good, tmp_path):
    out = tmp_path / "exists.fits"
    out.write_bytes(b"precious")
    _expect_error(capsys, good, str(out), str(out), "--overwrite")
    assert out.read_bytes() == b"precious"
    assert main(["combine", *good, "-o", str(out), "--overwrite", "-q"]) == 0
    assert fits.getheader(out)["NCOMBINE"] == 3


def test_output_may_not_replace_an_input(capsys, good, tmp_path):
    _expect_error(capsys, good + ["--overwrite"], good[0], "replace an input")
    assert fits.getdata(good[0])[0, 0] == 0


@pytest.mark.parametrize("args,words", [
    (["--sigma-low", "-1"], ["--sigma-low"]),
    (["--maxiters", "-2"], ["--maxiters"]),
    (["--mem-limit", "lots"], ["memory size"]),
    (["--mem-limit", "1KB"], ["too small"]),
    (["--weights", "bogus"], ["--weights"]),
    (["--weights", "1,2"], ["3 frames"]),
    (["--weights", "exptime", "--method", "mean"], ["EXPTIME"]),
    (["--reject", "range"], ["--low"]),
    (["--plow", "150", "--reject", "percentile"], ["--plow"]),
    (["--method", "mode"], ["invalid choice"]),
    (["--hdu", "7"], ["no HDU 7"]),
])
def test_invalid_option_values(capsys, good, tmp_path, args, words):
    if words == ["invalid choice"]:
        with pytest.raises(SystemExit) as exc:
            main(["combine", *good, "-o", str(tmp_path / "o.fits"), *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "invalid choice" in err
        return
    _expect_error(capsys, good + args, str(tmp_path / "o.fits"), *words)


def test_gpu_without_gpu_is_exit_2(capsys, good, tmp_path):
    from skystack.backends.gpu import probe

    if probe()[0]:
        pytest.skip("a usable GPU is present")
    code = main(["combine", *good, "-o", str(tmp_path / "o.fits"), "--backend", "gpu", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--backend gpu" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.fits").exists()


def test_failure_mid_run_leaves_no_partial_output(good, tmp_path, monkeypatch):
    """An error while combining removes the temporary file; the final name never appears."""
    import skystack.pipeline as pipeline

    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline.ArraySink, "write_tile", explode)
    monkeypatch.setattr("skystack.io.writer.FitsTileWriter.write_tile", explode)
    code = main(["combine", *good, "-o", str(tmp_path / "o.fits"), "-q"])
    assert code == 1
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in good)
