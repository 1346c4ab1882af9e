"""A night's input changed in place, with its size and modification time kept, is not reused:
the re-run refuses (or with --overwrite rebuilds) the products made from it, naming it."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from astropy.io import fits

from skystack.errors import SkystackError
from skystack.io.identity import SAMPLE_BYTES, content_sample
from skystack.night.run import run_night
from tests.tiny_night import LOW, left_right_ratio, write_flat, write_lights


def _rewrite_keeping_stat(path: str, offset: int, data: bytes) -> None:
    """Overwrite bytes at ``offset`` in place, then set the size-and-time stat back."""
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


@pytest.fixture
def night(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    flats = write_flat(raw, "flat", "V", left=0.8)
    lights = write_lights(raw, "l", "M1", "V")
    out = tmp_path / "out"
    run_night(raw, out, backend="cpu", previews=False)
    return raw, out, flats, lights


def test_pixel_block_changed_in_place_is_named_and_refused(night):
    raw, out, flats, lights = night
    # A block of pixels (float32, big-endian) rewritten, at the end of the data.
    _rewrite_keeping_stat(lights[1], os.path.getsize(lights[1]) - 2880 - 4096,
                          np.full(1024, 5000.0, ">f4").tobytes())
    with pytest.raises(SkystackError) as err:
        run_night(raw, out, backend="cpu", previews=False)
    message = str(err.value)
    assert lights[1] in message and "changed" in message and "\n" not in message
    assert "M1_V.fits" in message


def test_changed_header_of_a_flat_is_named(night):
    raw, out, flats, lights = night
    text = open(flats[0], "rb").read(2880)
    at = text.index(b"EXPTIME =")
    _rewrite_keeping_stat(flats[0], at, b"EXPTIME =                  3.0")
    with pytest.raises(SkystackError, match="changed since it was made") as err:
        run_night(raw, out, backend="cpu", previews=False)
    assert flats[0] in str(err.value) and "flat_V.fits" in str(err.value)


def test_overwrite_rebuilds_only_what_the_changed_input_made(night):
    raw, out, flats, lights = night
    _rewrite_keeping_stat(lights[0], 2880, np.full(64, 9000.0, ">f4").tobytes())
    again = run_night(raw, out, backend="cpu", previews=False, overwrite=True)
    status = {os.path.basename(p.path): p.status for p in again.products}
    assert status == {"flat_V.fits": "reused", "badpix.fits": "reused", "M1_V.fits": "built"}
    assert {p.status for p in run_night(raw, out, backend="cpu", previews=False).products} \
        == {"reused"}


def test_content_sample_is_cheap_and_covers_head_middle_and_tail(tmp_path):
    path = tmp_path / "big.fits"
    fits.PrimaryHDU(np.zeros((1024, 2048), np.float32)).writeto(path)  # 8 MiB
    size = os.path.getsize(path)
    base = content_sample(path)
    for offset in (100, size // 2, size - 10):
        with open(path, "r+b") as fh:
            fh.seek(offset)
            old = fh.read(1)
            fh.seek(offset)
            fh.write(b"\x01" if old != b"\x01" else b"\x02")
        assert content_sample(path) != base, offset
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.write(old)
        assert content_sample(path) == base
    t0 = time.perf_counter()
    for _ in range(50):
        content_sample(path)
    per_file = (time.perf_counter() - t0) / 50
    assert per_file < 0.01, per_file  # three 64 KiB reads, whatever the file's size
    assert 3 * SAMPLE_BYTES < size


def test_stacks_are_rebuilt_with_a_rebuilt_master(tmp_path):
    """The flats are replaced: with --overwrite the flat is rebuilt *and so is every stack made
    with it* (its recipe holds its masters' fingerprints); without, the stale stack is refused,
    never silently kept with the old calibration."""

    raw = tmp_path / "raw"
    raw.mkdir()
    write_flat(raw, "flat", "V", left=LOW)
    write_lights(raw, "light", "M1", "V", response_left=LOW)
    out = tmp_path / "out"
    first = run_night(raw, out, backend="cpu", previews=False)
    stack = next(p.path for p in first.products if p.kind == "stack")
    assert left_right_ratio(stack) == pytest.approx(1.0, abs=0.01)
    for p in raw.glob("flat*"):
        p.unlink()
    write_flat(raw, "flat", "V", left=1.0)  # a uniform flat: the lights stay uneven
    with pytest.raises(SkystackError, match="stacks"):
        run_night(raw, out, backend="cpu", previews=False)
    again = run_night(raw, out, backend="cpu", previews=False, overwrite=True)
    assert {p.kind: p.status for p in again.products}["stack"] == "built"
    assert left_right_ratio(stack) == pytest.approx(LOW, abs=0.01)
