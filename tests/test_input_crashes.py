"""Inputs that used to crash (traceback, exit 1) or give a silently wrong product.

Each must now be one line on stderr naming the file (exit 2), or work. The command line is run as
a separate process, as a user runs it: astropy's warnings and tracebacks reach stderr there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

import skystack
from skystack.errors import SkystackError
from skystack.io.inputs import load_frames


def _cli(*args, cwd=None, nofile: int | None = None) -> subprocess.CompletedProcess:
    """``skystack ARGS`` in a new process (``nofile``: its open-file limit)."""
    code = "import sys; from skystack.cli import main; sys.exit(main(sys.argv[1:]))"
    if nofile is not None:
        code = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, " \
               f"{nofile})); " + code
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def _one_line_error(proc: subprocess.CompletedProcess, *words) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("skystack: error: "), lines[0]
    for w in words:
        assert str(w) in lines[0], (w, lines[0])
    return lines[0]


def _write_raw_cards(path, data: np.ndarray, cards: list[bytes]) -> None:
    """A float32 primary image whose header holds ``cards`` exactly as given (80 bytes each):
    astropy refuses to write non-ASCII or control characters, observatories' software does."""
    header = b"".join(str(c).encode("ascii") for c in fits.PrimaryHDU(
        data.astype(np.float32)).header.cards)
    header += b"".join(c.ljust(80)[:80] for c in cards) + b"END".ljust(80)
    header += b" " * (-len(header) % 2880)
    raw = data.astype(">f4").tobytes()
    with open(path, "wb") as f:
        f.write(header + raw + b"\0" * (-len(raw) % 2880))


def _card(key: str, value: bytes) -> bytes:
    return key.ljust(8).encode() + b"= '" + value + b"'"


def _set_card(path, key: str, value: bytes) -> None:
    """Replace card ``key`` of the first header of ``path`` in place, byte for byte."""
    raw = bytearray(open(path, "rb").read())
    for i in range(0, len(raw), 80):
        name = raw[i:i + 8].decode("ascii").rstrip()
        if name == key:
            raw[i:i + 80] = _card(key, value).ljust(80)
            break
        assert name != "END", f"{key} not in {path}"
    open(path, "wb").write(bytes(raw))


# -- 1. non-ASCII and control characters in header values -------------------------------------

ODD_VALUES = {"FILTER": "Hα".encode(), "OBJECT": "M31 ñ".encode()}


@pytest.fixture
def odd_headers(tmp_path):
    """A directory of biases, flats and lights whose FILTER/OBJECT hold UTF-8 and a BEL."""
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        _write_raw_cards(raw / f"bias{k}.fits", rng.normal(100, 1, (24, 24)),
                         [_card("IMAGETYP", b"BIAS")])
        _write_raw_cards(raw / f"flat{k}.fits", rng.normal(1000, 1, (24, 24)),
                         [_card("IMAGETYP", b"FLAT"), _card("FILTER", ODD_VALUES["FILTER"]),
                          b"EXPTIME =                  1.0"])
        _write_raw_cards(raw / f"light{k}.fits", rng.normal(500, 1, (24, 24)),
                         [_card("IMAGETYP", b"LIGHT"), _card("FILTER", ODD_VALUES["FILTER"]),
                          _card("OBJECT", ODD_VALUES["OBJECT"]), b"EXPTIME =                 10.0"])
        _write_raw_cards(raw / f"bell{k}.fits", rng.normal(500, 1, (24, 24)),
                         [_card("IMAGETYP", b"LIGHT"), _card("FILTER", b"V\x07"),
                          _card("OBJECT", b"M\x0767"), b"EXPTIME =                 10.0"])
    return raw


def test_odd_header_characters_in_info_and_inspect(odd_headers):
    """Every byte outside printable ASCII reads as '?' (as astropy does for non-ASCII), so a
    BEL no longer makes the card unparsable and the tables print."""
    for args in (["info", odd_headers], ["info", *sorted(odd_headers.glob("*.fits"))],
                 ["inspect", odd_headers]):
        proc = _cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr
        assert "H??" in proc.stdout, proc.stdout
        if args[0] == "info":
            assert "V?" in proc.stdout, proc.stdout
    proc = _cli("info", odd_headers)
    assert "M31 ??" in proc.stdout and "M?67" in proc.stdout and "0 skipped" in proc.stdout


def test_odd_header_characters_read_alike_plain_and_compressed(odd_headers, tmp_path):
    """The fast reader of plain files and astropy's reader of .fz files agree on the value, so
    that flats still match lights across the two."""
    plain = str(odd_headers / "bell0.fits")
    packed = tmp_path / "bell0.fits.fz"
    header = fits.Header([("IMAGETYP", "LIGHT"), ("FILTER", "VXX"), ("OBJECT", "ABCD")])
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.ones((24, 24), np.float32),
                                                       header=header)]).writeto(packed)
    raw = open(packed, "rb").read()
    raw = raw.replace(b"'VXX", b"'V\x07\xce").replace(b"'ABCD", b"'M\xc3\xb1\x07")
    open(packed, "wb").write(raw)
    a, b = load_frames([plain, str(packed)])
    assert a.header["FILTER"] == "V?" and b.header["FILTER"] == "V??"
    assert b.header["OBJECT"] == "M???"
    assert fits.Header.fromstring(b.header.tostring())["FILTER"] == "V??"  # writable as is
    hdr, shape = skystack.io.inputs.read_header(str(packed))
    assert hdr["FILTER"] == "V??" and shape == (24, 24)


def test_night_with_odd_header_characters(tmp_path):
    """A night whose lights and flats have FILTER = 'Hα' and OBJECT = 'M31 ñ' is reduced: the
    values are safe in the product's name, header and summary."""
    from skystack.demo_data import write_sample_night

    raw = tmp_path / "raw"
    write_sample_night(raw, shape=(96, 96), n_bias=3, n_dark=0, n_flat=3, n_light=3,
                       filters=("V",), object_name="M31", seed=1)
    for path in raw.glob("*.fits"):
        if not path.name.startswith("bias"):
            _set_card(path, "FILTER", ODD_VALUES["FILTER"])
        if path.name.startswith("light"):
            _set_card(path, "OBJECT", ODD_VALUES["OBJECT"] + b"\x07")
    out = tmp_path / "out"
    proc = _cli("night", raw, "-o", out, "--no-previews", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr
    stacks = list((out / "stacks").glob("*.fits"))
    assert len(stacks) == 1 and stacks[0].name.isascii(), stacks
    header = fits.getheader(stacks[0])
    assert header["OBJECT"] == "M31 ???" and header["FILTER"] == "H??"
    summary = json.loads((out / "summary.json").read_text())
    assert all(f["used"] for f in summary["frames"]), summary["frames"]


# -- 2. corrupt tile data of a compressed input ------------------------------------------------

def _packed(path, data, **kw) -> None:
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, **kw)]).writeto(path)


@pytest.mark.parametrize("codec", ["RICE_1", "GZIP_1", "HCOMPRESS_1"])
def test_corrupt_compressed_tiles(tmp_path, codec):
    """Found only while decompressing inside the tile loop: still one line naming the file,
    and no output (nor temporary file) left."""
    rng = np.random.default_rng(1)
    for k in range(3):
        _packed(tmp_path / f"f{k}.fits.fz", rng.normal(100, 5, (128, 128)).astype(np.float32),
                compression_type=codec, tile_shape=(16, 128))
    bad = tmp_path / "f2.fits.fz"
    with fits.open(bad) as hdul:
        start = hdul.fileinfo(1)["datLoc"] + hdul.fileinfo(1)["datSpan"] // 2
    raw = bytearray(bad.read_bytes())
    raw[start:start + 400] = rng.integers(0, 256, 400).astype(np.uint8).tobytes()
    bad.write_bytes(bytes(raw))
    before = sorted(os.listdir(tmp_path))
    proc = _cli("combine", tmp_path / "f*.fits.fz", "-o", tmp_path / "out.fits", "--backend",
                "cpu", "-q")
    _one_line_error(proc, bad, "decompress")
    assert sorted(os.listdir(tmp_path)) == before


def test_hcompress_frames_read_by_several_threads_are_right(tmp_path):
    """astropy's HCOMPRESS decoder is not thread-safe (it failed or returned wrong pixels when
    the reader's threads decoded two frames at once): the combine matches numpy's."""
    rng = np.random.default_rng(2)
    paths = []
    for k in range(6):
        p = tmp_path / f"h{k}.fits.fz"
        _packed(p, rng.normal(100, 10, (192, 192)).astype(np.float32),
                compression_type="HCOMPRESS_1", tile_shape=(16, 192))
        paths.append(str(p))
    expected = np.mean([fits.getdata(p).astype(np.float64) for p in paths], axis=0)
    for _ in range(3):
        got = skystack.combine(paths, backend="cpu", max_tile_rows=32).data
        np.testing.assert_allclose(got, expected, rtol=1e-6)


# -- 3. @lists that name themselves, binary and empty ones -------------------------------------

def test_bad_file_lists(tmp_path):
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(tmp_path / "a.fits")
    (tmp_path / "self.txt").write_text("a.fits\n@self.txt\n")
    (tmp_path / "one.txt").write_text("a.fits\n@two.txt\n")
    (tmp_path / "two.txt").write_text("@one.txt\n")
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "empty.txt").write_text("# nothing here\n\n")
    a = str(tmp_path / "a.fits")
    cases = [("self.txt", "includes itself"), ("one.txt", "includes itself"),
             ("blob.txt", "binary"), ("a.fits", "is a FITS file"),
             # next to other inputs an empty list was silently nothing; the user meant files
             ("empty.txt", "empty")]
    for name, words in cases:
        with pytest.raises(SkystackError, match=words) as exc:
            load_frames([a, a, f"@{tmp_path / name}"])
        assert name in str(exc.value)
    out = tmp_path / "o.fits"
    for name, words in cases[:3]:
        _one_line_error(_cli("combine", "a.fits", f"@{name}", "-o", out, cwd=tmp_path), name,
                        words)
    assert not out.exists()


def test_nested_file_lists_are_relative_to_their_directory(tmp_path):
    """An ``@list`` line ``@other.txt`` names the list next to it (it was read as a file
    named '@other.txt' there)."""
    sub = tmp_path / "lists"
    sub.mkdir()
    for k in range(2):
        fits.PrimaryHDU(np.full((4, 4), k, np.float32)).writeto(sub / f"f{k}.fits")
    (sub / "outer.txt").write_text("f0.fits\n@inner.txt\n")
    (sub / "inner.txt").write_text("f1.fits\n")
    frames = load_frames([f"@{sub / 'outer.txt'}"])
    assert [f.label for f in frames] == ["f0.fits", "f1.fits"]


# -- 4. truncated files: one line, not astropy's warnings twice --------------------------------

def test_truncated_files_give_exactly_one_line(tmp_path):
    data = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    fits.PrimaryHDU(data).writeto(tmp_path / "good.fits")
    _packed(tmp_path / "good.fits.fz", data)
    plain = (tmp_path / "good.fits").read_bytes()
    packed = (tmp_path / "good.fits.fz").read_bytes()
    cases = {"head.fits": (plain[:1000], "header"),
             "data.fits": (plain[:2880 + 100], "truncated data"),
             "tail.fits.fz": (packed[:len(packed) - 3000], "truncated"),
             "ext.fits.fz": (packed[:2880 + 1000], "truncated"),
             "zero.fits": (b"", "empty file")}
    for name, (raw, _) in cases.items():
        (tmp_path / name).write_bytes(raw)
    # astropy warned (twice: its logger and ours) before the error on these two
    for name in ("head.fits", "tail.fits.fz"):
        _one_line_error(_cli("combine", tmp_path / "good.fits", tmp_path / name, "-o",
                             tmp_path / "o.fits"), name, cases[name][1])
    # info: one line per bad file, the good ones in the table (a truncated .fz was listed)
    proc = _cli("info", tmp_path / "good.fits", *(tmp_path / name for name in cases))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(cases), proc.stderr
    for line, (name, (_, words)) in zip(lines, cases.items()):
        assert name in line and words in line, (name, line)
    assert "good.fits" in proc.stdout


# -- 5. compressed inputs under a small descriptor limit ---------------------------------------

def test_many_compressed_frames_under_small_descriptor_limit(tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.normal(100, 10, (60, 16, 16)).astype(np.float32)
    for k, d in enumerate(frames):
        _packed(tmp_path / f"c{k:02d}.fits.fz", d, compression_type="GZIP_2")
    out = tmp_path / "o.fits"
    proc = _cli("combine", tmp_path / "c*.fits.fz", "-o", out, "--backend", "cpu", "-q",
                nofile=32)
    assert proc.returncode == 0, proc.stderr
    expected = np.mean([fits.getdata(tmp_path / f"c{k:02d}.fits.fz").astype(np.float64)
                        for k in range(60)], axis=0)
    np.testing.assert_allclose(fits.getdata(out), expected, rtol=1e-6)
    assert fits.getheader(out)["NCOMBINE"] == 60
    # (the pool's bound for compressed files: tests/test_inputs.py::
    # test_handle_pool_reopens_beyond_its_limit[fz])


# -- 6. options that would keep nothing --------------------------------------------------------

@pytest.fixture
def three(tmp_path):
    paths = []
    for k in range(3):
        p = tmp_path / f"t{k}.fits"
        fits.PrimaryHDU(np.full((8, 8), k, np.float32)).writeto(p)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("args,words", [
    (["--threads", "-2"], ["--threads", "-2"]),
    (["--hdu", "-1"], ["--hdu", "-1"]),
    (["--reject", "minmax", "--nlow", "2", "--nhigh", "1"], ["minmax", "3 frames"]),
])
def test_options_that_keep_nothing(three, tmp_path, args, words):
    out = tmp_path / "o.fits"
    _one_line_error(_cli("combine", *three, "-o", out, "--backend", "cpu", *args), *words)
    assert not out.exists()


def test_api_refuses_the_same_options(three):
    from skystack.cli import main

    for kwargs, words in ((dict(threads=0), "--threads"), (dict(threads=-2), "--threads"),
                          (dict(hdu=-1), "--hdu"),
                          (dict(reject="minmax", nlow=3, nhigh=0), "3 frames"),
                          (dict(reject="percentile", plow=50, phigh=50), "--phigh")):
        with pytest.raises(SkystackError, match=words):
            skystack.combine(three, backend="cpu", **kwargs)
    with pytest.raises(SystemExit) as exc:  # argparse's own one-line error
        main(["combine", *three, "-o", "unused.fits", "--threads", "0"])
    assert exc.value.code == 2
    r = skystack.combine(three, backend="cpu", reject="minmax", nlow=1, nhigh=1, threads=1)
    assert np.all(r.data == 1.0)


def test_stack_refuses_threads_before_aligning(three, monkeypatch):
    """``stack(threads=0)`` is refused before any frame is measured or aligned."""
    import skystack.register.plan as plan

    def not_reached(*a, **k):
        raise AssertionError("aligned before the threads were checked")

    monkeypatch.setattr(plan, "plan_stack", not_reached)
    for call in (skystack.stack, lambda *a, **k: skystack.api_reproject.stack_to_file(
            *a, "unused.fits", **k)):
        with pytest.raises(SkystackError, match="--threads"):
            call(three, threads=0, align="stars")


def test_inspect_of_nothing_readable_is_a_one_line_error(tmp_path):
    """``inspect`` of a missing path, or of a folder without FITS files, is an input error
    (exit 2, one line naming it), not an empty report."""
    _one_line_error(_cli("inspect", tmp_path / "missing"), "missing", "no such file")
    (tmp_path / "empty").mkdir()
    _one_line_error(_cli("inspect", tmp_path / "empty"), "empty", "no FITS files")


# -- 7. numpy masked arrays --------------------------------------------------------------------

@pytest.mark.parametrize("method", ["mean", "median"])
def test_masked_arrays_honour_their_mask(method):
    rng = np.random.default_rng(4)
    data = rng.normal(0, 1, (5, 16, 16))
    mask = rng.random(data.shape) < 0.3
    mask[:, 0, 0] = True  # a pixel with no valid value
    data[mask] = 1e6  # what a masked pixel holds must not matter
    cube = np.ma.masked_array(data, mask)
    expected = getattr(np.ma, method)(cube, axis=0)
    for inputs in (cube, list(cube)):
        r = skystack.combine(inputs, method=method, backend="cpu")
        np.testing.assert_allclose(r.data, expected.filled(np.nan), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(r.mask, np.ma.getmaskarray(expected))
        np.testing.assert_array_equal(r.count, (~mask).sum(axis=0))


# -- 8. night: RAW_DIR must be a directory -----------------------------------------------------

def test_night_needs_an_existing_raw_directory(tmp_path):
    from skystack.night.run import run_night

    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(tmp_path / "a.fits")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    _one_line_error(_cli("night", tmp_path / "missing", "-o", out), "missing",
                    "no such directory")
    _one_line_error(_cli("night", tmp_path / "a.fits", "-o", out), "a.fits", "not a directory")
    with pytest.raises(SkystackError, match="no usable"):
        run_night(tmp_path / "empty", out, backend="cpu")
    with pytest.raises(SkystackError, match="--threads"):
        run_night(tmp_path / "empty", out, backend="cpu", threads=0)
    assert not out.exists()


# -- others of the same kind -------------------------------------------------------------------

def test_directory_and_zero_size_inputs(tmp_path, three):
    (tmp_path / "sub").mkdir()
    (tmp_path / "zero.fits").write_bytes(b"")
    with pytest.raises(SkystackError, match="is a directory"):
        load_frames([*three, str(tmp_path / "sub")])
    with pytest.raises(SkystackError, match="zero.fits: empty file"):
        load_frames([*three, str(tmp_path / "zero.fits")])


def test_int64_with_blank(tmp_path):
    """BITPIX 64 integers with BLANK: the BLANK pixels are ignored, others exact."""
    blank = -(2**63)
    stack = np.array([[[1, 2**40 + 1], [3, blank]], [[5, 2**40 + 3], [blank, 8]],
                      [[9, 2**40 + 5], [11, 12]]], dtype=np.int64)
    paths = []
    for k, d in enumerate(stack):
        h = fits.PrimaryHDU(d)
        h.header["BLANK"] = blank
        h.writeto(tmp_path / f"i{k}.fits")
        paths.append(str(tmp_path / f"i{k}.fits"))
    r = skystack.combine(paths, backend="cpu")
    expected = np.ma.masked_equal(stack, blank).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(r.data, expected.astype(np.float32))
    np.testing.assert_array_equal(r.count, [[3, 3], [2, 2]])


def test_gzip_files_are_decompressed_not_read_as_raw_bytes(tmp_path):
    """``.fits.gz`` (which a night's scan picks up) was refused as 'truncated data': its
    offsets were compared with, and would have been read from, the compressed bytes."""
    rng = np.random.default_rng(6)
    stack = rng.normal(100, 5, (3, 40, 30)).astype(np.float32)
    paths = []
    for k, d in enumerate(stack):
        paths.append(str(tmp_path / f"z{k}.fits.gz"))
        fits.PrimaryHDU(d).writeto(paths[-1])
    r = skystack.combine(paths, method="median", backend="cpu")
    np.testing.assert_allclose(r.data, np.median(stack, axis=0), rtol=1e-6)
    short = tmp_path / "short.fits.gz"
    short.write_bytes(open(paths[0], "rb").read()[:2000])
    with pytest.raises(SkystackError, match="short.fits.gz: truncated or corrupt gzip"):
        skystack.combine([*paths, str(short)], backend="cpu")

