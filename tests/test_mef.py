"""Multi-extension (mosaic) inputs: ``combine --hdu all`` CCD by CCD against numpy/astropy,
the MEF product's layout and keywords, mismatched extensions, ``.fits.fz``, the file pool and
the memory budget (issue 17)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clip

from skystack.api import combine_mef_to_file, combine_to_file
from skystack.cli import main
from skystack.errors import SkystackError

CCDS = ("N1", "N2", "S1", "S2")
SHAPE = (48, 40)


def _ccd_header(k: int, name: str | None, temp: float) -> fits.Header:
    h = fits.Header()
    if name is not None:
        h["EXTNAME"] = name
    h["CCDNAME"] = (f"ccd{k + 1}", "detector")
    h["DETSEC"] = f"[{k * 40 + 1}:{k * 40 + 40},1:48]"
    h["DATASEC"] = "[5:40,1:48]"
    h["BIASSEC"] = "[1:4,1:48]"
    h["GAIN"] = 1.2 + 0.3 * k
    h["RDNOISE"] = 4.0 + k
    h["CCDTEMP"] = temp  # differs between exposures: not kept
    h.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
              "CRPIX1": 20.0 - 45.0 * k, "CRPIX2": 24.0, "CD1_1": -7e-5, "CD1_2": 0.0,
              "CD2_1": 0.0, "CD2_2": 7e-5})
    return h


def write_mefs(folder, n=5, *, compressed=False, names=CCDS, shapes=None, seed=3,
               prefix="raw", dtype=np.uint16):
    """``n`` exposures of ``len(names)`` CCDs (each its own bias level, noise and keywords);
    returns their paths and the (n, ccd) pixel cubes as float64 as the files hold them."""
    rng = np.random.default_rng(seed)
    paths, cubes = [], {k: [] for k in range(len(names))}
    for i in range(n):
        primary = fits.PrimaryHDU(header=fits.Header([
            ("IMAGETYP", "ZERO"), ("EXPTIME", 0.0), ("OBSTYPE", "zero"), ("INSTRUME", "MOSCAM"),
            ("DATE-OBS", f"2024-03-0{1 + i % 9}T01:00:00")]))
        hdus = [primary]
        for k, name in enumerate(names):
            shape = SHAPE if shapes is None else shapes[k]
            data = 900.0 + 150 * k + rng.normal(0, 4 + k, shape)
            data[rng.random(shape) < 0.01] += 3000  # hot outliers for the clipping
            data = data.astype(dtype)
            cubes[k].append(data.astype(np.float64))
            header = _ccd_header(k, name, 20.0 + i)
            hdus.append(fits.CompImageHDU(data, header) if compressed
                        else fits.ImageHDU(data, header))
        path = os.path.join(folder, f"{prefix}{i}.fits" + (".fz" if compressed else ""))
        fits.HDUList(hdus).writeto(path)
        paths.append(path)
    return paths, [np.array(cubes[k]) for k in range(len(names))]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "fz"])
def test_hdu_all_median_equals_numpy_per_ccd(tmp_path, compressed):
    paths, cubes = write_mefs(tmp_path, compressed=compressed)
    out = tmp_path / "master.fits"
    assert main(["combine", *paths, "-o", str(out), "--hdu", "all", "--method", "median",
                 "-q"]) == 0
    with fits.open(out) as hdul:
        assert [h.name for h in hdul[1:5]] == list(CCDS)
        for k, name in enumerate(CCDS):
            np.testing.assert_allclose(hdul[name].data, np.median(cubes[k], axis=0),
                                       rtol=1e-6)
            assert (hdul[f"{name}_COUNT"].data == len(paths)).all()
            assert not hdul[f"{name}_MASK"].data.any()
            assert hdul[f"{name}_UNCERT"].data.shape == SHAPE


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "fz"])
def test_hdu_all_sigclip_equals_astropy_per_ccd(tmp_path, compressed):
    paths, cubes = write_mefs(tmp_path, n=7, compressed=compressed)
    out = combine_to_file(paths, tmp_path / "m.fits", hdu="all", method="mean",
                          reject="sigclip", sigma=2.5, maxiters=0, spread="std",
                          max_tile_rows=7)
    with fits.open(out) as hdul:
        for k, name in enumerate(CCDS):
            ref = sigma_clip(cubes[k], sigma=2.5, maxiters=None, cenfunc="median",
                             stdfunc="std", axis=0)
            np.testing.assert_allclose(hdul[name].data, ref.mean(axis=0).filled(np.nan),
                                       rtol=1e-5)
            np.testing.assert_array_equal(hdul[f"{name}_COUNT"].data,
                                          (~np.ma.getmaskarray(ref)).sum(axis=0))


def test_product_keeps_extnames_and_ccd_keywords(tmp_path):
    from astropy.nddata import CCDData
    from astropy.wcs import WCS

    paths, cubes = write_mefs(tmp_path, n=3)
    out = combine_mef_to_file(paths, tmp_path / "m.fits", method="mean")
    with fits.open(out) as hdul:
        primary = hdul[0].header
        assert hdul[0].data is None and primary["NCOMBINE"] == 3 and primary["SKYSMEF"]
        assert primary["IMCMB003"] == "raw2.fits" and primary["COMBMETH"] == "mean"
        assert primary["INSTRUME"] == "MOSCAM" and primary["IMAGETYP"] == "ZERO"
        for key in ("CCDNAME", "DETSEC", "GAIN", "CTYPE1", "CCDTEMP"):
            assert key not in primary
        for k, name in enumerate(CCDS):
            h = hdul[name].header
            assert h["CCDNAME"] == f"ccd{k + 1}"
            assert h["DETSEC"] == f"[{k * 40 + 1}:{k * 40 + 40},1:48]"
            assert h["DATASEC"] == "[5:40,1:48]" and h["BIASSEC"] == "[1:4,1:48]"
            assert "CCDTEMP" not in h  # the inputs disagree on it
            assert h["NCOMBINE"] == 3
            # The effective gain of a mean of 3 (skystack.uncertainty), not the inputs' GAIN.
            assert h["GAIN"] == pytest.approx(3 * (1.2 + 0.3 * k))
            with fits.open(paths[0]) as raw:
                want = WCS(raw[name].header)
            got = WCS(h)
            np.testing.assert_allclose(got.wcs.crpix, want.wcs.crpix)
            np.testing.assert_allclose(got.pixel_scale_matrix, want.pixel_scale_matrix)
    ccd = CCDData.read(out, hdu="N2", hdu_uncertainty="N2_UNCERT", hdu_mask="N2_MASK")
    np.testing.assert_allclose(ccd.data, cubes[1].mean(axis=0), rtol=1e-6)
    assert ccd.uncertainty.array.shape == SHAPE and not ccd.mask.any()


def test_extensions_matched_by_name_in_any_order(tmp_path):
    a, cubes_a = write_mefs(tmp_path, n=2, prefix="a")
    b, cubes_b = write_mefs(tmp_path, n=2, prefix="b", names=CCDS[::-1], seed=9)
    out = combine_mef_to_file([*a, *b], tmp_path / "m.fits", method="sum")
    with fits.open(out) as hdul:
        for k, name in enumerate(CCDS):
            want = cubes_a[k].sum(axis=0) + cubes_b[len(CCDS) - 1 - k].sum(axis=0)
            np.testing.assert_allclose(hdul[name].data, want, rtol=1e-6)


def test_extensions_without_names_matched_by_position(tmp_path):
    paths, cubes = write_mefs(tmp_path, n=3, names=(None, None, None))
    out = combine_mef_to_file(paths, tmp_path / "m.fits", method="median")
    with fits.open(out) as hdul:
        assert [h.name for h in hdul[1:4]] == ["HDU1", "HDU2", "HDU3"]
        np.testing.assert_allclose(hdul["HDU3"].data, np.median(cubes[2], axis=0), rtol=1e-6)


def test_hdus_subset_in_given_order(tmp_path):
    paths, cubes = write_mefs(tmp_path, n=3)
    out = combine_mef_to_file(paths, tmp_path / "m.fits", hdus=["S2", 2], method="median")
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "S2", "N2", "S2_UNCERT", "S2_MASK",
                                          "S2_COUNT", "N2_UNCERT", "N2_MASK", "N2_COUNT"]
        np.testing.assert_allclose(hdul["N2"].data, np.median(cubes[1], axis=0), rtol=1e-6)


@pytest.mark.parametrize("case", ["missing", "extra", "shape", "plain"])
def test_mismatched_extensions_are_one_line_errors(tmp_path, capsys, case):
    paths, _ = write_mefs(tmp_path, n=3)
    if case == "missing":
        bad, _ = write_mefs(tmp_path, n=1, names=CCDS[:3], prefix="bad")
        expect = "no extension S2"
    elif case == "extra":
        bad, _ = write_mefs(tmp_path, n=1, names=(*CCDS, "X9"), prefix="bad")
        expect = "has extension X9"
    elif case == "shape":
        bad, _ = write_mefs(tmp_path, n=1, shapes=[SHAPE, SHAPE, (48, 41), SHAPE],
                            prefix="bad")
        expect = "extension S1 is 48x41"
    else:
        bad = [str(tmp_path / "plain.fits")]
        fits.PrimaryHDU(np.zeros(SHAPE, np.float32)).writeto(bad[0])
        expect = "not a multi-extension file"
    out = tmp_path / "m.fits"
    assert main(["combine", *paths, *bad, "-o", str(out), "--hdu", "all", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and bad[0] in err and expect in err
    assert not out.exists() and not list(tmp_path.glob("m.fits*"))


def test_existing_output_refused_and_inputs_untouched(tmp_path):
    paths, _ = write_mefs(tmp_path, n=2)
    out = tmp_path / "m.fits"
    out.write_bytes(b"keep")
    before = [os.path.getmtime(p) for p in paths]
    with pytest.raises(SkystackError, match="output exists"):
        combine_mef_to_file(paths, out)
    assert out.read_bytes() == b"keep"
    combine_mef_to_file(paths, out, overwrite=True)
    assert fits.getheader(out)["NCOMBINE"] == 2
    assert [os.path.getmtime(p) for p in paths] == before
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(p) for p in paths]
                                                  + ["m.fits"])


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "fz"])
def test_few_file_handles_for_many_ccds_and_files(tmp_path, compressed):
    """Six files × four CCDs through a pool of 2 open files: every CCD still right."""
    paths, cubes = write_mefs(tmp_path, n=6, compressed=compressed)
    out = combine_mef_to_file(paths, tmp_path / "m.fits", method="median", handle_limit=2,
                              max_tile_rows=5)
    with fits.open(out) as hdul:
        for k, name in enumerate(CCDS):
            np.testing.assert_allclose(hdul[name].data, np.median(cubes[k], axis=0), rtol=1e-6)


def test_memory_budget_bounds_each_ccd(tmp_path, monkeypatch):
    """With --mem-limit 16MiB each CCD's input blocks stay within the budget (the tiles are
    smaller than the image), CCD after CCD."""
    from skystack.core import combine_loop

    biggest = []
    read = combine_loop.TileReader.read

    def spy(self, tile, block):
        biggest.append(block.nbytes)
        return read(self, tile, block)

    monkeypatch.setattr(combine_loop.TileReader, "read", spy)
    shape = (2048, 2048)  # 3 frames: 16 MiB holds ~466k pixels of the loop's buffers
    paths, _ = write_mefs(tmp_path, n=3, names=("A", "B"), shapes=[shape, shape],
                          dtype=np.uint8)
    out = tmp_path / "m.fits"
    calls = []
    combine_mef_to_file(paths, out, method="mean", mem_limit="16MiB",
                        progress=lambda d, t: calls.append((d, t)))
    limit = 16 * 2**20
    assert len(biggest) > 2 * 8 and 2 * max(biggest) <= limit  # two input blocks in flight
    assert calls[-1][0] == calls[-1][1]
    with fits.open(out) as hdul:
        assert hdul["B"].data.shape == shape


def test_single_hdu_selection_still_works(tmp_path):
    paths, cubes = write_mefs(tmp_path, n=3)
    for hdu in ("N2", 2):
        out = tmp_path / f"one_{hdu}.fits"
        assert main(["combine", *paths, "-o", str(out), "--hdu", str(hdu), "--method",
                     "median", "-q"]) == 0
        np.testing.assert_allclose(fits.getdata(out), np.median(cubes[1], axis=0), rtol=1e-6)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "fz"])
def test_info_lists_one_row_per_ccd(tmp_path, capsys, compressed):
    paths, _ = write_mefs(tmp_path, n=1, compressed=compressed)
    with fits.open(paths[0], mode="update") as hdul:  # one CCD with its own EXPTIME
        hdul[3].header["EXPTIME"] = 5.0
    assert main(["info", paths[0]]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [ln.split() for ln in lines if ln.startswith(paths[0])]
    assert [r[0] for r in rows] == [f"{paths[0]}[{name}]" for name in CCDS]
    assert all(r[1] == "48x40" and r[2] == "uint16" and r[3] == "ZERO" for r in rows)
    assert [r[4] for r in rows] == ["0.0", "0.0", "5.0", "0.0"]
    assert main(["info", paths[0], "--hdu", "N2"]) == 0  # one HDU asked for: one row
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(paths[0])]
    assert len(rows) == 1 and "[" not in rows[0].split()[0]


def test_inspect_reports_each_ccd(tmp_path, capsys):
    """Bias level and read noise per CCD (each CCD its own level and noise) against numpy."""
    from astropy.stats import sigma_clipped_stats

    from skystack.night.inspect import inspect_frames

    paths, cubes = write_mefs(tmp_path, n=4)
    report = inspect_frames(paths)
    assert [b.ccd for b in report.biases] == list(CCDS)
    for k, stats in enumerate(report.biases):
        assert stats.level == pytest.approx(np.median(np.median(cubes[k], axis=0)), abs=0.5)
        noise = [sigma_clipped_stats(cubes[k][i] - cubes[k][i + 1], sigma=5)[2] / np.sqrt(2)
                 for i in (0, 2)]
        assert stats.read_noise_adu == pytest.approx(np.median(noise), rel=0.05)
        assert stats.read_noise_adu == pytest.approx(4 + k, rel=0.15)  # the truth
    assert main(["inspect", *paths]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} " in out for name in CCDS)


def ref_shape(fits_section: str) -> tuple[int, int]:
    (x1, x2), (y1, y2) = (map(int, p.split(":")) for p in fits_section.strip("[]").split(","))
    return (y2 - y1 + 1, x2 - x1 + 1)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "fz"])
def test_each_extension_uses_its_own_overscan_and_trim(tmp_path, compressed):
    """The primary's BIASSEC/TRIMSEC (wrong for every CCD) never replace a CCD's own: each
    CCD's calibrated pixels equal ccdproc's overscan subtraction and trim with its sections."""
    import ccdproc
    from astropy.nddata import CCDData

    from skystack.core.tiles import Tile
    from skystack.io.inputs import load_frames
    from skystack.night.calibrate import Calibration, calibrated_frame, parse_section
    from skystack.night.mef_frames import split_by_ccd
    from skystack.night.scan import scan

    rng = np.random.default_rng(5)
    primary = fits.PrimaryHDU(header=fits.Header([("IMAGETYP", "OBJECT"), ("EXPTIME", 30.0),
                                                  ("BIASSEC", "[1:2,1:48]"),
                                                  ("TRIMSEC", "[1:40,1:48]")]))
    sections = {"A": ("[1:4,1:48]", "[5:40,2:47]"), "B": ("[37:40,1:48]", "[1:36,1:48]")}
    hdus = [primary]
    for k, (name, (biassec, trimsec)) in enumerate(sections.items()):
        data = (500 + 200 * k + rng.normal(0, 3, SHAPE)
                + np.arange(SHAPE[0])[:, None] * (1 + k)).astype(np.float32)
        header = fits.Header([("EXTNAME", name), ("BIASSEC", biassec), ("TRIMSEC", trimsec)])
        hdus.append(fits.CompImageHDU(data, header) if compressed
                    else fits.ImageHDU(data, header))
    path = str(tmp_path / ("exp.fits.fz" if compressed else "exp.fits"))
    fits.HDUList(hdus).writeto(path)

    parts = split_by_ccd(scan([path]))
    for name, (biassec, trimsec) in sections.items():
        (info,) = parts[name].frames
        assert info.header["BIASSEC"] == biassec and info.header["TRIMSEC"] == trimsec
        assert info.header["EXPTIME"] == 30.0  # the primary's, where the CCD has none
        (frame,) = load_frames([path], hdu=name)
        assert frame.header["BIASSEC"] == biassec
        cal = Calibration(overscan=parse_section(frame.header["BIASSEC"], frame.shape),
                          trim=parse_section(frame.header["TRIMSEC"], frame.shape))
        out = calibrated_frame(frame, cal)
        got = np.empty(out.shape, np.float32)
        out.source.read(Tile(0, out.shape[0], 0, out.shape[1]), got)
        assert out.shape == ref_shape(trimsec)
        as_stored = fits.getdata(path, name)  # .fz floats are quantised when written
        ccd = CCDData(as_stored.astype(np.float64), unit="adu")
        ref = ccdproc.trim_image(ccdproc.subtract_overscan(
            ccd, fits_section=biassec, median=True, overscan_axis=1), fits_section=trimsec)
        np.testing.assert_allclose(got, ref.data, rtol=1e-5, atol=1e-3)
