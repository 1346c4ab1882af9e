"""FITS inputs: every pixel type, scaling, BLANK, compression, HDU choice, masks, many files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

import skystack
from skystack.errors import SkystackError
from skystack.io.inputs import load_frames
from skystack.io.reader import HandlePool, Tile


def _values(shape=(20, 30), seed=0):
    return np.random.default_rng(seed).integers(0, 200, shape)


@pytest.mark.parametrize("kind", ["uint8", "int16", "uint16", "int32", "float32", "float64",
                                  "int16_bscale"])
def test_pixel_types_read_like_astropy(tmp_path, kind):
    base = _values()
    paths = []
    for k in range(3):
        data = base + 10 * k
        if kind == "uint16":
            hdu = fits.PrimaryHDU((data + 40000).astype(np.uint16))  # BZERO = 32768
        elif kind == "int16_bscale":
            hdu = fits.PrimaryHDU(data.astype(np.int16))
            hdu.scale("int16", bscale=0.5, bzero=100.0)
        elif kind == "int32":
            hdu = fits.PrimaryHDU((data - 100_000).astype(np.int32))
        else:
            hdu = fits.PrimaryHDU(data.astype(kind))
        p = tmp_path / f"f{k}.fits"
        hdu.writeto(p)
        paths.append(p)
    expected = np.stack([fits.getdata(p).astype(np.float64) for p in paths])
    frames = load_frames([str(p) for p in paths])
    out = np.empty((20, 30), np.float32)
    for k, f in enumerate(frames):
        f.source.read(Tile(3, 17, 5, 29), out[3:17, 5:29])
        np.testing.assert_allclose(out[3:17, 5:29], expected[k, 3:17, 5:29], rtol=1e-6)
    r = skystack.combine([str(p) for p in paths], method="mean", backend="cpu")
    np.testing.assert_allclose(r.data, expected.mean(0), rtol=1e-6)


def test_blank_becomes_missing(tmp_path):
    data = np.full((4, 5), 7, np.int16)
    data[1, 2] = -999
    hdu = fits.PrimaryHDU(data)
    hdu.header["BLANK"] = -999
    paths = []
    for k in range(3):
        hdu.writeto(tmp_path / f"b{k}.fits")
        paths.append(str(tmp_path / f"b{k}.fits"))
    r = skystack.combine(paths, method="mean", backend="cpu")
    assert r.count[1, 2] == 0 and np.isnan(r.data[1, 2]) and r.count[0, 0] == 3


def test_compressed_fz(tmp_path):
    rng = np.random.default_rng(1)
    cube = rng.normal(500, 10, (4, 64, 48)).astype(np.float32)
    paths = []
    for k, frame in enumerate(cube):
        p = tmp_path / f"c{k}.fits.fz"
        fits.HDUList([fits.PrimaryHDU(),
                      fits.CompImageHDU(frame, compression_type="RICE_1", quantize_level=0,
                                        tile_shape=(16, 48))]).writeto(p)
        paths.append(str(p))
    expected = np.stack([fits.getdata(p, ext=1) for p in paths])
    r = skystack.combine(paths, method="median", backend="cpu", max_tile_rows=10)
    np.testing.assert_allclose(r.data, np.median(expected, 0), rtol=1e-6)


def test_hdu_selection(tmp_path):
    paths = []
    for k in range(3):
        p = tmp_path / f"m{k}.fits"
        fits.HDUList([fits.PrimaryHDU(np.full((5, 6), 1.0 + k, np.float32)),
                      fits.ImageHDU(np.full((5, 6), 10.0 + k, np.float32), name="SCI")]
                     ).writeto(p)
        paths.append(str(p))
    assert skystack.combine(paths, backend="cpu").data[0, 0] == pytest.approx(2.0)
    assert skystack.combine(paths, hdu="SCI", backend="cpu").data[0, 0] == pytest.approx(11.0)
    assert skystack.combine(paths, hdu=1, backend="cpu").data[0, 0] == pytest.approx(11.0)


def test_image_in_first_extension_is_found(tmp_path):
    paths = []
    for k in range(2):
        p = tmp_path / f"e{k}.fits"
        primary = fits.PrimaryHDU()
        primary.header["EXPTIME"] = 30.0
        fits.HDUList([primary, fits.ImageHDU(np.full((4, 4), k, np.float32))]).writeto(p)
        paths.append(str(p))
    r = skystack.combine(paths, method="sum", backend="cpu")
    assert r.data[0, 0] == 1.0
    assert r.meta["EXPTIME"] == 60.0  # primary-header keywords are seen


def test_ccddata_mask_extension_honoured(tmp_path):
    from astropy.nddata import CCDData

    paths = []
    for k in range(3):
        mask = np.zeros((6, 7), bool)
        if k == 0:
            mask[2, 3] = True
        ccd = CCDData(np.full((6, 7), 10.0 * (k + 1), np.float32), unit="adu", mask=mask)
        ccd.write(tmp_path / f"ccd{k}.fits")
        paths.append(str(tmp_path / f"ccd{k}.fits"))
    r = skystack.combine(paths, method="mean", backend="cpu")
    assert r.count[2, 3] == 2 and r.data[2, 3] == pytest.approx(25.0)
    assert r.count[0, 0] == 3 and r.data[0, 0] == pytest.approx(20.0)


def test_globs_and_list_files(tmp_path):
    for k in range(4):
        fits.PrimaryHDU(np.full((3, 3), k, np.float32)).writeto(tmp_path / f"g{k}.fits")
    listing = tmp_path / "list.txt"
    listing.write_text("# two frames\ng0.fits\n\ng3.fits\n")
    assert skystack.combine(str(tmp_path / "g*.fits"), backend="cpu").data[0, 0] == 1.5
    r = skystack.combine([f"@{listing}"], method="sum", backend="cpu")
    assert r.data[0, 0] == 3.0 and r.meta["NCOMBINE"] == 2


@pytest.mark.parametrize("compressed", [False, True], ids=["fits", "fz"])
def test_handle_pool_reopens_beyond_its_limit(tmp_path, compressed):
    """Plain and tile-compressed files share one bounded pool of open files: every read
    reopens what it needs, and never more than the limit stays open."""
    paths = []
    for k in range(7):
        data = np.full((8, 8), k, np.float32)
        p = tmp_path / f"h{k}.fits{'.fz' if compressed else ''}"
        if compressed:
            fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(p)
        else:
            fits.PrimaryHDU(data).writeto(p)
        paths.append(str(p))
    pool = HandlePool(limit=2)
    frames = load_frames(paths, pool=pool)
    out = np.empty((8, 8), np.float32)
    for _ in range(2):
        for k, f in enumerate(frames):
            f.source.read(Tile(0, 8, 0, 8), out)
            assert out[0, 0] == k
            assert len(pool._fds) + len(pool._hduls) <= 2
    pool.close()


def test_more_frames_than_open_file_limit(tmp_path):
    """The CLI combines 300 files under a 64-descriptor limit."""
    for k in range(300):
        fits.PrimaryHDU(np.full((6, 5), k % 10, np.int16)).writeto(tmp_path / f"n{k:03d}.fits")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
            "from skystack.cli import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "out.fits"
    proc = subprocess.run([sys.executable, "-c", code, "combine", str(tmp_path / "n*.fits"),
                           "-o", str(out), "--method", "mean", "--backend", "cpu", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert fits.getdata(out)[0, 0] == pytest.approx(4.5)
    assert fits.getheader(out)["NCOMBINE"] == 300
    assert os.path.getsize(out) % 2880 == 0


def _frame_with_mask(path, data, mask, compress: bool) -> None:
    hdus = [fits.PrimaryHDU()]
    if compress:
        hdus += [fits.CompImageHDU(data, compression_type="GZIP_1"),
                 fits.CompImageHDU(mask.astype(np.uint8), name="MASK",
                                   compression_type="GZIP_1")]
    else:
        hdus = [fits.PrimaryHDU(data), fits.ImageHDU(mask.astype(np.uint8), name="MASK")]
    fits.HDUList(hdus).writeto(path)


@pytest.mark.parametrize("compress", [False, True], ids=["fits", "fz"])
def test_mask_extensions_are_honoured_in_plain_and_compressed_files(tmp_path, compress):
    """A CCDData-style MASK extension (nonzero = bad) masks its pixels whether the file is plain
    or tile-compressed (fpack compresses the MASK too): a huge value under the mask never
    reaches the mean, which equals numpy's masked mean."""
    rng = np.random.default_rng(3)
    data = np.round(rng.normal(100, 5, (4, 24, 20))).astype(np.int32)  # .fz: lossless ints
    masks = rng.random(data.shape) < 0.1
    data[masks] = 10**9
    paths = []
    for k in range(4):
        p = tmp_path / f"f{k}.fits{'.fz' if compress else ''}"
        _frame_with_mask(p, data[k], masks[k], compress)
        paths.append(p)
    got = skystack.combine([str(p) for p in paths], backend="cpu", method="mean")
    want = np.ma.masked_array(data.astype(np.float64), masks).mean(axis=0)
    np.testing.assert_allclose(got.data, want.filled(np.nan), rtol=1e-6)
    np.testing.assert_array_equal(got.count, (~masks).sum(axis=0))


def test_mask_extension_that_cannot_be_applied_is_an_error(tmp_path):
    """A MASK of another shape cannot say which pixels it masks: a one-line error naming the
    file, not a silently unmasked frame."""
    p = tmp_path / "odd.fits"
    fits.HDUList([fits.PrimaryHDU(np.ones((8, 10), np.float32)),
                  fits.ImageHDU(np.zeros((4, 5), np.uint8), name="MASK")]).writeto(p)
    with pytest.raises(SkystackError, match=r"odd\.fits: MASK extension's shape differs"):
        load_frames([str(p)])
