"""TIFF and XISF inputs, written by tifffile and the xisf package (independent writers),
combined and compared with NumPy on the same arrays; their sources follow PixelSource."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import xisf
from astropy.io import fits

import skystack
from skystack.cli import main
from skystack.errors import SkystackError
from skystack.io.contracts import PixelSource, SourceSpec
from skystack.io.inputs import load_frames, read_header
from skystack.io.plane_source import DecodedSource, PlaneSource
from skystack.io.reader import HandlePool, Tile
from skystack.night.scan import scan

SHAPE = (37, 53)  # odd sizes: rows and columns of tiles do not divide them


def _stack(dtype, n=4, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return [rng.normal(1000, 30, SHAPE).astype(dtype) for _ in range(n)]
    info = np.iinfo(dtype)
    hi = min(info.max, 2**24)  # float32-exact integers
    return [rng.integers(0, hi, SHAPE).astype(dtype) for _ in range(n)]


def _write_tiff(path, data, **kw):
    tifffile.imwrite(path, data, **kw)
    return str(path)


def _write_xisf(path, data, keywords=None, codec=None):
    meta = {"FITSKeywords": {k: [{"value": v, "comment": ""}] for k, v in
                             (keywords or {}).items()}}
    xisf.XISF.write(str(path), data[:, :, None], image_metadata=meta, codec=codec)
    return str(path)


@pytest.mark.parametrize("dtype,byteorder,compression", [
    ("uint16", "<", None), ("uint16", ">", None), ("int32", "<", None),
    ("float32", ">", None), ("uint8", "<", None), ("uint16", "<", "zlib")])
def test_tiff_combine_matches_numpy(tmp_path, dtype, byteorder, compression):
    arrays = _stack(dtype)
    paths = [_write_tiff(tmp_path / f"f{i}.tif", a, byteorder=byteorder,
                         compression=compression) for i, a in enumerate(arrays)]
    frames = load_frames(paths)
    kind = DecodedSource if compression else PlaneSource
    assert all(isinstance(f.source, kind) for f in frames)
    ccd = skystack.combine(paths, method="median", backend="cpu", max_tile_rows=8)
    ref = np.median(np.stack(arrays).astype(np.float64), axis=0)
    np.testing.assert_allclose(ccd.data, ref, rtol=1e-6)


@pytest.mark.parametrize("dtype,codec", [("uint16", None), ("float32", None),
                                         ("uint32", None), ("float32", "zlib")])
def test_xisf_combine_matches_numpy(tmp_path, dtype, codec):
    arrays = _stack(dtype, seed=1)
    paths = [_write_xisf(tmp_path / f"f{i}.xisf", a, {"IMAGETYP": "'LIGHT'",
                                                      "EXPTIME": str(30 + 10 * i)},
                         codec=codec) for i, a in enumerate(arrays)]
    out = tmp_path / "out.fits"
    rc = main(["combine", *paths, "-o", str(out), "-q", "--backend", "cpu",
               "--where", "EXPTIME>=40"])
    assert rc == 0
    with fits.open(out) as hdul:  # the product is FITS
        np.testing.assert_allclose(hdul[0].data, np.mean(np.stack(arrays[1:]), axis=0,
                                                         dtype=np.float64), rtol=1e-6)
        assert hdul[0].header["IMAGETYP"] == "LIGHT" and hdul[0].header["NCOMBINE"] == 3
        assert hdul[0].header["EXPTIME"] == pytest.approx(50.0)


def test_mixed_fits_tiff_xisf(tmp_path):
    a, b, c = _stack("float32", n=3, seed=2)
    fits.PrimaryHDU(a).writeto(tmp_path / "a.fits")
    paths = [str(tmp_path / "a.fits"), _write_tiff(tmp_path / "b.tiff", b),
             _write_xisf(tmp_path / "c.xisf", c)]
    ccd = skystack.combine(paths, backend="cpu")
    np.testing.assert_allclose(ccd.data, (a.astype(np.float64) + b + c) / 3, rtol=1e-6)


def test_tiff_header_tags(tmp_path):
    data = _stack("uint16", n=1)[0]
    path = _write_tiff(tmp_path / "t.tif", data, extratags=[(33434, "2I", 1, (3, 2), True)],
                       description="IMAGETYP= 'FLAT'\nFILTER  = 'V'")
    header, shape = read_header(path)
    assert shape == SHAPE
    assert header["IMAGETYP"] == "FLAT" and header["FILTER"] == "V"
    assert header["EXPTIME"] == pytest.approx(1.5)
    assert "DATE-OBS" not in header


def test_xisf_properties_give_exptime_and_date(tmp_path):
    data = _stack("uint16", n=1)[0]
    meta = {"FITSKeywords": {"IMAGETYP": [{"value": "'Dark Frame'", "comment": "x"}]},
            "XISFProperties": {
                "Instrument:ExposureTime": {"id": "Instrument:ExposureTime", "type": "Float32",
                                            "value": 120.0},
                "Observation:Time:Start": {"id": "Observation:Time:Start", "type": "TimePoint",
                                           "value": "2024-03-01T22:10:05Z"}}}
    xisf.XISF.write(str(tmp_path / "d.xisf"), data[:, :, None], image_metadata=meta)
    header, _ = read_header(str(tmp_path / "d.xisf"))
    assert header["IMAGETYP"] == "Dark Frame"
    assert header["EXPTIME"] == pytest.approx(120.0)
    assert header["DATE-OBS"].startswith("2024-03-01T22:10:05")
    (frame,) = scan(tmp_path).frames  # the night's scan picks .xisf up and classifies it
    assert frame.role == "dark" and frame.exptime == pytest.approx(120.0)


def test_rgb_and_multipage_are_one_line_errors(tmp_path):
    rgb = _write_tiff(tmp_path / "rgb.tif", np.zeros((8, 9, 3), np.uint8), photometric="rgb")
    pages = _write_tiff(tmp_path / "p.tif", np.zeros((2, 8, 9), np.uint16))
    xrgb = tmp_path / "rgb.xisf"
    xisf.XISF.write(str(xrgb), np.zeros((8, 9, 3), np.uint16))
    with pytest.raises(SkystackError, match=r"rgb\.tif: RGB or multi-sample TIFF"):
        load_frames([rgb])
    with pytest.raises(SkystackError, match=r"p\.tif: multi-page TIFF \(2 pages\)"):
        load_frames([pages])
    with pytest.raises(SkystackError, match=r"rgb\.xisf: XISF image of geometry"):
        load_frames([str(xrgb)])


def test_truncated_tiff_is_one_line_error(tmp_path):
    path = _write_tiff(tmp_path / "t.tif", _stack("uint16", n=1)[0])
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[:-500])
    with pytest.raises(SkystackError, match="truncated"):
        load_frames([path])


def test_sources_pickle_and_reopen(tmp_path):
    a = _stack("uint16", n=1)[0]
    paths = [_write_tiff(tmp_path / "a.tif", a, byteorder=">"),
             _write_tiff(tmp_path / "b.tif", a, compression="zlib"),
             _write_xisf(tmp_path / "c.xisf", a), _write_xisf(tmp_path / "d.xisf", a, codec="zlib")]
    pool = HandlePool()
    tile = Tile(3, 20, 5, 40)
    try:
        for frame in load_frames(paths):
            assert isinstance(frame.source, PixelSource)
            spec = pickle.loads(pickle.dumps(frame.source.to_spec(frame.label)))
            assert isinstance(spec, SourceSpec) and Path(spec.files()[0]).is_absolute()
            out = np.empty(tile.shape, np.float32)
            spec.open(pool).read(tile, out)
            np.testing.assert_array_equal(out, a[3:20, 5:40], err_msg=frame.label)
            staged = np.zeros(out.nbytes, np.uint8)
            frame.source.read_staged(tile, staged)
            np.testing.assert_array_equal(staged.view(np.float32).reshape(tile.shape), out)
    finally:
        pool.close()


def test_info_lists_tiff_and_xisf_with_selection(tmp_path, capsys):
    a = _stack("uint16", n=1)[0]
    _write_tiff(tmp_path / "a.tif", a, description="IMAGETYP= 'LIGHT'")
    _write_xisf(tmp_path / "b.xisf", a.astype(np.float32), {"IMAGETYP": "'DARK'"})
    assert main(["info", str(tmp_path / "a.tif"), str(tmp_path / "b.xisf")]) == 0
    out = capsys.readouterr().out
    assert "a.tif" in out and "uint16" in out and "b.xisf" in out and "float32" in out
    assert main(["info", str(tmp_path / "*"), "--where", "IMAGETYP=dark"]) == 0
    out = capsys.readouterr().out
    assert "b.xisf" in out and "a.tif" not in out


def _as_xisf(fits_path, xisf_path):
    """The FITS file's image and every header card as an XISF file (FITSKeywords)."""
    with fits.open(fits_path) as hdul:
        data, header = hdul[0].data, hdul[0].header
    keywords = {}
    for card in header.cards:
        if card.keyword in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"):
            continue
        v = card.value
        text = f"'{v}'" if isinstance(v, str) else ("T" if v is True else "F" if v is False
                                                    else repr(v))
        keywords[card.keyword] = [{"value": text, "comment": card.comment}]
    xisf.XISF.write(str(xisf_path), data.astype(np.float32)[:, :, None],
                    image_metadata={"FITSKeywords": keywords})


def test_night_of_xisf_and_tiff_equals_the_same_night_in_fits(tmp_path):
    from skystack.night.run import run_night
    from tests.tiny_night import left_right_ratio, write_flat, write_lights

    fits_raw, other_raw = tmp_path / "fits", tmp_path / "other"
    fits_raw.mkdir()
    other_raw.mkdir()
    flats = write_flat(fits_raw, "flat", "V", left=0.6)
    lights = write_lights(fits_raw, "light", "M1", "V", response_left=0.6)
    for p in lights:
        _as_xisf(p, other_raw / (Path(p).stem + ".xisf"))
    for p in flats:  # TIFF: pixels, with the header as FITS cards in ImageDescription
        with fits.open(p) as hdul:
            desc = "\n".join(str(c) for c in hdul[0].header.cards
                             if c.keyword not in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1",
                                                  "NAXIS2", "EXTEND"))
            tifffile.imwrite(other_raw / (Path(p).stem + ".tif"), hdul[0].data,
                             description=desc)
    a = run_night(fits_raw, tmp_path / "out_fits", backend="cpu", previews=False)
    b = run_night(other_raw, tmp_path / "out_other", backend="cpu", previews=False)
    stacks_a = sorted(p.path for p in a.products if p.kind == "stack")
    stacks_b = sorted(p.path for p in b.products if p.kind == "stack")
    assert [Path(p).name for p in stacks_a] == [Path(p).name for p in stacks_b] == ["M1_V.fits"]
    np.testing.assert_array_equal(fits.getdata(stacks_b[0]), fits.getdata(stacks_a[0]))
    assert fits.getval(stacks_b[0], "NCOMBINE") == 3
    # ground truth: the TIFF flat's left half at 0.6 corrects the lights' left half at 0.6
    assert left_right_ratio(stacks_b[0]) == pytest.approx(1.0, abs=0.01)


class _CountingPool(HandlePool):
    def __init__(self) -> None:
        super().__init__()
        self.read_bytes = 0

    def pread_into(self, path, buf, offset):
        n = super().pread_into(path, buf, offset)
        self.read_bytes += n
        return n


@pytest.mark.parametrize("fmt", ["tif", "xisf"])
def test_uncompressed_tiles_read_only_their_bytes(tmp_path, fmt):
    a = _stack("uint16", n=1)[0]
    path = (_write_tiff(tmp_path / "a.tif", a) if fmt == "tif"
            else _write_xisf(tmp_path / "a.xisf", a))
    pool = _CountingPool()
    (frame,) = load_frames([path], pool=pool)
    out = np.empty((4, 10), np.float32)
    frame.source.read(Tile(5, 9, 20, 30), out)
    np.testing.assert_array_equal(out, a[5:9, 20:30])
    assert pool.read_bytes == 4 * 10 * 2  # the tile's bytes, not the file's
    pool.close()


def test_xisf_non_ascii_keyword_value_kept_as_printable():
    from skystack.io.formats_xisf import xisf_header

    header = xisf_header({"FITSKeywords": {"FILTER": [{"value": "'Hα'", "comment": "ñ"}],
                                           "IMAGETYP": [{"value": "'LIGHT'", "comment": ""}],
                                           "bad key": [{"value": "1", "comment": ""}]}})
    assert header["FILTER"] == "H?" and header.comments["FILTER"] == "?"
    assert header["IMAGETYP"] == "LIGHT" and "bad key" not in header
