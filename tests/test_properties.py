"""Property-based tests (hypothesis) of the command line's contract on generated inputs.

For ``skystack combine``, ``skystack stack`` and ``skystack night`` run on generated FITS files
(headers with odd EXPTIME, IMAGETYP, OBJECT/FILTER and WCS values; BITPIX 8/16/32/-32/-64 with
BZERO/BSCALE/BLANK; shapes down to 1xN; NaN patterns up to all-NaN frames) the outcome is one of

* exit 0 with a correct product — for combine, equal to a NumPy reference (nanmean, nanmedian,
  nanmin, nanmax, nansum, weighted mean) computed here from the generated values; or
* exit 2 with exactly one line on stderr, ``skystack: error: ...`` naming the offending file,

and never a traceback (an exception escaping ``skystack.cli.main``) or exit 1; nothing is ever
written outside the output directory (the whole temporary tree is listed before and after) and
no input changes (hashed before and after).

The FITS files are written byte by byte here (80-character cards, 2880-byte blocks), so that
values astropy refuses to write (NaN, INF, non-ASCII bytes) can be generated too.

Profiles: ``HYPOTHESIS_PROFILE=ci`` (default; few examples, derandomized so that a run is
reproducible, the whole file well under a minute) or ``long`` (many random examples).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import traceback
from dataclasses import dataclass, field

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, Phase, assume, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from skystack.cli import main
from skystack.exposure import MAX_EXPTIME, MIN_EXPTIME

# ci: no shrinking (a failing example is reported as found, quickly);
# run with HYPOTHESIS_PROFILE=long for 1000 examples and minimal failing ones.
settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, database=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate), report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "long", max_examples=1000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# -- FITS files written card by card ---------------------------------------------------------

_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", -32: ">f4", -64: ">f8"}


def card(key: str, value: str | None = None) -> bytes:
    """One 80-byte header card; ``value`` is the raw value text (strings already quoted)."""
    if value is None:
        text = key.encode("ascii")
    elif value.startswith("'"):
        text = f"{key:<8}= {value:<20}".encode()
    else:
        text = f"{key:<8}= {value:>20}".encode("ascii")
    assert len(text) <= 80, text
    return text.ljust(80)


def fits_string(text: str) -> str:
    """A FITS string value: quotes doubled, at least 8 characters between the quotes."""
    return "'" + text.replace("'", "''").ljust(8) + "'"


def fits_number(value: float) -> str:
    return repr(float(value)).upper() if np.isfinite(value) else str(value).upper()


def write_fits(path: str, bitpix: int, stored: np.ndarray, cards: list[bytes]) -> None:
    """A primary-HDU image file: ``stored`` (rows, cols) are the raw values for ``bitpix``."""
    data = np.ascontiguousarray(stored, dtype=_DTYPES[bitpix])
    head = b"".join([card("SIMPLE", "T"), card("BITPIX", str(bitpix)), card("NAXIS", "2"),
                     card("NAXIS1", str(data.shape[1])), card("NAXIS2", str(data.shape[0])),
                     *cards, card("END")])
    head += b" " * (-len(head) % 2880)
    body = data.tobytes()
    body += b"\0" * (-len(body) % 2880)
    with open(path, "wb") as f:
        f.write(head + body)


# -- running the CLI and checking the contract -------------------------------------------------


def _tree(root: str) -> dict[str, str]:
    """Every file under ``root`` (relative path → sha256 of its bytes)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@dataclass
class Outcome:
    code: int
    stderr: str
    new_files: list[str] = field(default_factory=list)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(argv: list[str], root: str, out: str) -> Outcome:
    """Run ``skystack ARGV`` in-process with ``root`` as the working directory and check the
    parts of the contract that hold whatever the inputs: no traceback, exit code 0 or 2,
    nothing written outside ``out``, no file under ``root`` outside ``out`` changed."""
    before = _tree(root)
    stderr = io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    except BaseException:  # noqa: BLE001 - any escaping exception is a traceback for the user
        pytest.fail(f"skystack {' '.join(argv)} raised (a traceback for the user):\n"
                    f"{traceback.format_exc()}")
    finally:
        os.chdir(cwd)
    after = _tree(root)
    note(f"exit {code}; stderr: {stderr.getvalue()!r}")
    out_rel = os.path.relpath(out, root)

    def inside(rel: str) -> bool:
        return rel == out_rel or rel.startswith(out_rel + os.sep)

    outside_new = sorted(p for p in after if p not in before and not inside(p))
    assert not outside_new, f"files written outside {out_rel}: {outside_new}"
    changed = sorted(p for p in before if not inside(p) and after.get(p) != before[p])
    assert not changed, f"inputs modified or removed: {changed}"
    assert code in (0, 2), f"exit code {code}; stderr: {stderr.getvalue()!r}"
    outcome = Outcome(code, stderr.getvalue(), sorted(p for p in after if p not in before))
    if code == 2:
        lines = outcome.error_lines
        assert len(lines) == 1 and lines[0].startswith("skystack: error: "), outcome.stderr
    return outcome


def assert_names_one_of(outcome: Outcome, names: list[str]) -> None:
    assert any(n in outcome.error_lines[0] for n in names), \
        f"the error does not name any of {names}: {outcome.stderr!r}"


def no_temporaries(out_dir: str, expected: set[str]) -> None:
    left = set(os.listdir(out_dir)) if os.path.isdir(out_dir) else set()
    assert left <= expected, f"left in the output directory: {sorted(left - expected)}"


@contextlib.contextmanager
def workspace():
    with tempfile.TemporaryDirectory(prefix="skystack-prop-") as root:
        os.makedirs(os.path.join(root, "in"))
        os.makedirs(os.path.join(root, "out"))
        yield root


# -- generated frames --------------------------------------------------------------------------

_INT_RANGE = {8: (0, 255), 16: (-32768, 32767), 32: (-2**31, 2**31 - 1)}
_BZERO = {8: [None, 0, -128], 16: [None, 0, 32768, -1000], 32: [None, 0, 2**31],
          -32: [None, 0, 10.5], -64: [None, 0]}
_BSCALE = {8: [None, 1, 0.5, 3], 16: [None, 1, 0.25], 32: [None, 1], -32: [None, 1, 2],
           -64: [None, 1]}


@dataclass
class Encoding:
    bitpix: int
    bzero: float | None
    bscale: float | None
    blank: int | None

    def cards(self) -> list[bytes]:
        out = []
        if self.bzero is not None:
            out.append(card("BZERO", str(self.bzero)))
        if self.bscale is not None:
            out.append(card("BSCALE", str(self.bscale)))
        if self.blank is not None:
            out.append(card("BLANK", str(self.blank)))
        return out

    def physical(self, stored: np.ndarray) -> np.ndarray:
        """The values a FITS reader must see (float64, NaN for BLANK), computed here."""
        values = stored.astype(np.float64) * (1.0 if self.bscale is None else self.bscale) \
            + (0.0 if self.bzero is None else self.bzero)
        if self.blank is not None:
            values[stored == self.blank] = np.nan
        return values


@st.composite
def encodings(draw, bitpixes=(8, 16, 32, -32, -64)) -> Encoding:
    bitpix = draw(st.sampled_from(bitpixes))
    blank = None
    if bitpix > 0 and draw(st.booleans()):
        lo, hi = _INT_RANGE[bitpix]
        blank = draw(st.sampled_from([lo, hi, 0]))
    return Encoding(bitpix, draw(st.sampled_from(_BZERO[bitpix])),
                    draw(st.sampled_from(_BSCALE[bitpix])), blank)


shapes = st.one_of(st.tuples(st.just(1), st.integers(1, 9)),
                   st.tuples(st.integers(1, 9), st.just(1)),
                   st.tuples(st.integers(2, 7), st.integers(2, 7)))


@st.composite
def stacks(draw, enc: Encoding, shape: tuple[int, int], n: int) -> np.ndarray:
    """``n`` frames of stored values; float frames with NaN patterns, integer frames with
    some pixels equal to BLANK (when there is one)."""
    if enc.bitpix > 0:
        lo, hi = _INT_RANGE[enc.bitpix]
        if enc.bitpix == 32:  # keep the physical values exact enough in float32
            lo, hi = -2**24, 2**24
        elements = st.integers(lo, hi)
        if enc.blank is not None:
            elements = st.one_of(elements, st.just(enc.blank))
        return draw(hnp.arrays(_DTYPES[enc.bitpix], (n, *shape), elements=elements))
    elements = st.floats(-1e6, 1e6, width=32, allow_nan=False)
    values = draw(hnp.arrays(np.float64, (n, *shape), elements=elements))
    pattern = draw(st.sampled_from(["none", "random", "frame", "pixel", "all"]))
    if pattern == "random":
        values[draw(hnp.arrays(bool, values.shape))] = np.nan
    elif pattern == "frame":  # one whole frame without data
        values[draw(st.integers(0, n - 1))] = np.nan
    elif pattern == "pixel":  # one pixel without data in every frame
        values[:, draw(st.integers(0, shape[0] - 1)), draw(st.integers(0, shape[1] - 1))] = np.nan
    elif pattern == "all":
        values[:] = np.nan
    return values


def read_product(path: str) -> dict[str, np.ndarray]:
    with fits.open(path) as hdul:
        return {"data": hdul[0].data.astype(np.float64),
                "mask": hdul["MASK"].data.astype(bool), "count": hdul["COUNT"].data.copy(),
                "header": hdul[0].header.copy()}


def reference(values: np.ndarray, method: str, weights: np.ndarray | None) -> np.ndarray:
    """The combined image by NumPy, in float64; NaN where no frame has data."""
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    with np.errstate(all="ignore"), warnings_off():
        if method == "mean" and weights is not None:
            w = (weights / weights.max())[:, None, None] * finite
            out = np.nansum(np.where(finite, values, 0.0) * w, axis=0) / w.sum(axis=0)
        else:
            out = {"mean": np.nanmean, "median": np.nanmedian, "min": np.nanmin,
                   "max": np.nanmax, "sum": np.nansum}[method](values, axis=0)
    return np.where(count > 0, out, np.nan)


@contextlib.contextmanager
def warnings_off():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def assert_product_equals(path: str, expected: np.ndarray, count: np.ndarray) -> None:
    product = read_product(path)
    got = product["data"]
    assert got.shape == expected.shape
    empty = count == 0
    np.testing.assert_array_equal(product["count"], count)
    np.testing.assert_array_equal(product["mask"], empty)
    assert np.isnan(got[empty]).all(), "pixels without data must be NaN"
    scale = max(1.0, float(np.nanmax(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(got[~empty], expected[~empty], rtol=2e-6, atol=2e-6 * scale)


# -- combine -----------------------------------------------------------------------------------


@given(data=st.data(), enc=encodings(), shape=shapes, n=st.integers(1, 4),
       method=st.sampled_from(["mean", "median", "min", "max", "sum"]))
def test_combine_matches_numpy(data, enc, shape, n, method):
    """Any BITPIX/BZERO/BSCALE/BLANK, shape and NaN pattern: the product is NumPy's answer."""
    stored = data.draw(stacks(enc, shape, n))
    with workspace() as root:
        paths = []
        for i in range(n):
            paths.append(os.path.join(root, "in", f"f{i}.fits"))
            write_fits(paths[-1], enc.bitpix, stored[i], enc.cards())
        target = os.path.join(root, "out", "stack.fits")
        outcome = run_cli(["combine", *paths, "-o", target, "--method", method, "-q",
                           "--backend", "cpu"], root, os.path.join(root, "out"))
        assert outcome.code == 0, outcome.stderr
        values = np.stack([enc.physical(s) for s in stored])
        assert_product_equals(target, reference(values, method, None),
                              np.isfinite(values).sum(axis=0))
        no_temporaries(os.path.join(root, "out"), {"stack.fits"})


# EXPTIME as written in real headers (raw card values; None = no card).
_EXPTIME_GOOD = ["30.0", "1", "0.001", "7.5E2", "'30'"]
_EXPTIME_BAD = [None, "0.0", "-5.0", "'abc'", "''", "T"]
_EXPTIME_NOT_FINITE = ["NAN", "nan", "INF", "-INF", "1E999"]
_EXPTIME_EXTREME = ["1E308", "1.7E308", "-1E308", "1E-300", "4.9E-324"]
_EXPTIME_OPTIONS = [[], ["--weights", "exptime"], ["--scale", "exposure"]]


def _exptime_value(raw: str | None) -> float | None:
    """The exposure time a raw card gives (a number, or a string holding one), or None when it
    is not a usable one: not a finite number within the documented bounds of a real exposure
    (skystack.exposure: 1 µs to 1e6 s; a logical T is not an exposure time)."""
    if raw is None or raw in ("T", "F"):
        return None
    try:
        value = float(raw.strip("'").replace("''", "'"))
    except ValueError:
        return None
    return value if np.isfinite(value) and MIN_EXPTIME <= value <= MAX_EXPTIME else None


def check_exptime_combine(option: list[str], raws: list[str | None], seed: int) -> None:
    """Combine frames with these EXPTIME cards: used by --weights/--scale only when valid, else
    exit 2 naming the file; with no option needing it, whatever it holds never stops the
    combine; the product is the (weighted, scaled) mean and its EXPTIME a finite number."""
    n = len(raws)
    frames = np.random.default_rng(seed).normal(100.0, 10.0, (n, 3, 4))
    with workspace() as root:
        paths = []
        for i, raw in enumerate(raws):
            paths.append(os.path.join(root, "in", f"e{i}.fits"))
            write_fits(paths[-1], -64, frames[i], [] if raw is None else [card("EXPTIME", raw)])
        target = os.path.join(root, "out", "stack.fits")
        outcome = run_cli(["combine", *paths, "-o", target, "-q", "--backend", "cpu", *option],
                          root, os.path.join(root, "out"))
        times = [_exptime_value(r) for r in raws]
        if option and any(t is None for t in times):
            assert outcome.code == 2, "an unusable EXPTIME was used"
            assert_names_one_of(outcome, [f"e{i}.fits" for i, t in enumerate(times) if t is None])
            no_temporaries(os.path.join(root, "out"), set())
            return
        assert outcome.code == 0, outcome.stderr
        no_temporaries(os.path.join(root, "out"), {"stack.fits"})
        values = frames.astype(np.float32).astype(np.float64)
        t = np.array([1.0 if v is None else v for v in times])
        if option == ["--scale", "exposure"]:
            values = values * (t[0] / t).astype(np.float32)[:, None, None]
        weights = t if option == ["--weights", "exptime"] else None
        assert_product_equals(target, reference(values, "mean", weights), np.full((3, 4), n))
        header = read_product(target)["header"]
        if "EXPTIME" in header:  # provenance: a finite number, never a copy of garbage
            assert isinstance(header["EXPTIME"], float) and np.isfinite(header["EXPTIME"])


@pytest.mark.parametrize("option", _EXPTIME_OPTIONS, ids=["none", "weights", "scale"])
@given(raws=st.lists(st.sampled_from(_EXPTIME_GOOD + _EXPTIME_BAD), min_size=2, max_size=3),
       seed=st.integers(0, 2**32 - 1))
@example(raws=["30.0", "T"], seed=0)  # a logical was taken as 1 s
def test_combine_exptime_values(option, raws, seed):
    """Missing, zero, negative, string and logical EXPTIME."""
    check_exptime_combine(option, raws, seed)


@pytest.mark.parametrize("option", _EXPTIME_OPTIONS, ids=["none", "weights", "scale"])
@given(raws=st.lists(st.sampled_from(_EXPTIME_GOOD + _EXPTIME_NOT_FINITE), min_size=2,
                     max_size=3),
       seed=st.integers(0, 2**32 - 1))
@example(raws=["30.0", "NAN"], seed=0)  # VerifyError traceback
@example(raws=["30.0", "1E999"], seed=0)  # inf in the product header: traceback
def test_combine_exptime_not_finite(option, raws, seed):
    """NaN and infinite EXPTIME cards (invalid FITS, written by some camera software)."""
    assume(any(r in _EXPTIME_NOT_FINITE for r in raws))
    check_exptime_combine(option, raws, seed)


@pytest.mark.parametrize("option", _EXPTIME_OPTIONS, ids=["none", "weights", "scale"])
@given(raws=st.lists(st.sampled_from(_EXPTIME_GOOD + _EXPTIME_EXTREME), min_size=2,
                     max_size=3),
       seed=st.integers(0, 2**32 - 1))
@example(raws=["1E308", "1E308"], seed=0)  # mean EXPTIME overflows: traceback
@example(raws=["30.0", "1E308"], seed=0)  # --weights exptime: product all inf, exit 0
@example(raws=["1E308", "30.0"], seed=0)  # --scale exposure: frame 2 scaled to inf, dropped
def test_combine_exptime_extreme(option, raws, seed):
    """EXPTIME near the float64 limits: a correct product (the weighted mean does not depend on
    the weights' scale) or exit 2, never an infinite product or header value."""
    assume(any(r in _EXPTIME_EXTREME for r in raws))
    check_exptime_combine(option, raws, seed)


_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=16)
_NON_ASCII = st.text(st.characters(min_codepoint=0xA0, max_codepoint=0x2FF), min_size=1,
                     max_size=6)


def check_header_strings(obj: str, filt: str) -> None:
    frames = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    with workspace() as root:
        paths = []
        for i in range(2):
            paths.append(os.path.join(root, "in", f"s{i}.fits"))
            write_fits(paths[-1], -32, frames[i],
                       [card("OBJECT", fits_string(obj)), card("FILTER", fits_string(filt))])
        target = os.path.join(root, "out", "stack.fits")
        outcome = run_cli(["combine", *paths, "-o", target, "-q", "--backend", "cpu"], root,
                          os.path.join(root, "out"))
        if outcome.code == 2:
            assert_names_one_of(outcome, ["s0.fits", "s1.fits"])
            return
        assert_product_equals(target, frames.mean(axis=0), np.full((3, 4), 2))


@given(obj=_TEXT, filt=st.one_of(st.sampled_from(["V", "R/G", "../x", "a'b", ""]), _TEXT))
def test_combine_header_strings(obj, filt):
    """OBJECT/FILTER with '/', quotes, blanks."""
    check_header_strings(obj, filt)


@given(obj=st.builds(lambda a, b: a + b, _TEXT, _NON_ASCII), filt=_TEXT)
@example(obj="\xa0", filt="")
def test_combine_header_strings_non_ascii(obj, filt):
    """OBJECT with non-ASCII bytes (UTF-8; invalid FITS, found in the wild)."""
    check_header_strings(obj, filt)


@given(shapes=st.lists(shapes, min_size=2, max_size=4), enc=encodings())
def test_combine_shape_mismatch_names_a_file(shapes, enc):
    assume(len(set(shapes)) > 1)
    with workspace() as root:
        paths = []
        for i, shape in enumerate(shapes):
            paths.append(os.path.join(root, "in", f"m{i}.fits"))
            write_fits(paths[-1], enc.bitpix, np.zeros(shape), enc.cards())
        outcome = run_cli(["combine", *paths, "-o", os.path.join(root, "out", "x.fits"), "-q",
                           "--backend", "cpu"], root, os.path.join(root, "out"))
        assert outcome.code == 2
        assert_names_one_of(outcome, [f"m{i}.fits" for i, s in enumerate(shapes)
                                      if s != shapes[0]])
        no_temporaries(os.path.join(root, "out"), set())


# -- stack: WCS keyword values -----------------------------------------------------------------

_SCALE = 1.0 / 3600  # degrees per pixel
_CD_OK = st.sampled_from([[-_SCALE, 0.0, 0.0, _SCALE], [0.0, _SCALE, _SCALE, 0.0],
                          [-_SCALE * 0.8, _SCALE * 0.6, _SCALE * 0.6, _SCALE * 0.8]])
_CD_BAD = st.sampled_from([[0.0, 0.0, 0.0, 0.0], [_SCALE, _SCALE, _SCALE, _SCALE],
                           [_SCALE, 0.0, 0.0, 0.0], [1e-300, 0.0, 0.0, 1e-300]])
_CRVAL_BAD = st.sampled_from(["NAN", "INF", "1E308", "'abc'", "''", "T"])


def wcs_cards(ra: str, dec: str, cd: list[float]) -> list[bytes]:
    cards = [card("CTYPE1", fits_string("RA---TAN")), card("CTYPE2", fits_string("DEC--TAN")),
             card("CRPIX1", "2.5"), card("CRPIX2", "2.5"), card("CRVAL1", ra),
             card("CRVAL2", dec)]
    return cards + [card(k, fits_number(v))
                    for k, v in zip(("CD1_1", "CD1_2", "CD2_1", "CD2_2"), cd)]


def run_stack(cards: list[bytes], seed: int) -> tuple[Outcome, np.ndarray, str, str]:
    """Stack two frames sharing ``cards`` onto the first one's grid."""
    frames = np.random.default_rng(seed).normal(100.0, 10.0, (2, 6, 5))
    with workspace() as root:
        paths = []
        for i in range(2):
            paths.append(os.path.join(root, "in", f"w{i}.fits"))
            write_fits(paths[-1], -64, frames[i], cards)
        out = os.path.join(root, "out")
        target = os.path.join(out, "stack.fits")
        outcome = run_cli(["stack", *paths, "-o", target, "--reference", paths[0], "-q",
                           "--backend", "cpu", "--align", "wcs"], root, out)
        left = set(os.listdir(out))
        got = fits.getdata(target).astype(np.float64) if outcome.code == 0 else None
    return outcome, frames, got, left


@given(ra=st.floats(0, 359.99), dec=st.floats(-89, 89), cd=_CD_OK, seed=st.integers(0, 2**16))
def test_stack_valid_wcs(ra, dec, cd, seed):
    """A valid WCS shared by both frames, the reference grid = their grid: resampling is the
    identity and the stack is their mean."""
    outcome, frames, got, left = run_stack(wcs_cards(fits_number(ra), fits_number(dec), cd),
                                           seed)
    assert outcome.code == 0, outcome.stderr
    assert left == {"stack.fits"}
    np.testing.assert_allclose(got, frames.astype(np.float32).mean(axis=0), rtol=1e-5)


@given(ra=st.one_of(st.just("150.0"), _CRVAL_BAD), dec=st.one_of(st.just("20.0"), _CRVAL_BAD),
       cd=st.one_of(_CD_OK, _CD_BAD), seed=st.integers(0, 2**16))
@example(ra="150.0", dec="20.0", cd=[0.0, 0.0, 0.0, 0.0], seed=0)  # exit 0, a stack
@example(ra="150.0", dec="1E308", cd=[-_SCALE, 0.0, 0.0, _SCALE], seed=0)  # 6-line error
def test_stack_invalid_wcs(ra, dec, cd, seed):
    """Unparsable or non-finite CRVAL, zero or singular CD: exit 2 naming a file."""
    assume(ra != "150.0" or dec != "20.0" or cd[0] * cd[3] - cd[1] * cd[2] == 0
           or abs(cd[0]) < 1e-200)
    outcome, _, _, left = run_stack(wcs_cards(ra, dec, cd), seed)
    assert outcome.code == 2, "a stack was made from an invalid WCS"
    assert_names_one_of(outcome, ["w0.fits", "w1.fits"])
    assert left == set()


# -- night: IMAGETYP spellings, OBJECT/FILTER and EXPTIME values -------------------------------

_IMAGETYP = {
    "bias": ["BIAS", "Bias Frame", "zero", "bias_frame"],
    "flat": ["FLAT", "Flat Field", "SKYFLAT", "dome-flat", "Flat Frame"],
    "light": ["LIGHT", "Light Frame", "object", "SCIENCE"],
    "junk": ["", "foo", "DARKISH", "'"],
}
_NIGHT_WCS = [card("CTYPE1", fits_string("RA---TAN")), card("CTYPE2", fits_string("DEC--TAN")),
              card("CRPIX1", "5.0"), card("CRPIX2", "6.0"), card("CRVAL1", "150.0"),
              card("CRVAL2", "20.0"), card("CD1_1", "-0.0002"), card("CD2_2", "0.0002")]
_NAMES = st.one_of(st.sampled_from(["M67", "NGC 188/core", "NGC_188_core", "../../escape", "a/b",
                                    "a_b", "..", ""]), _TEXT)
_GOOD_EXPTIME = st.just("30.0")


@st.composite
def nights(draw, names=_NAMES, exptimes=_GOOD_EXPTIME):
    """A small raw directory: two biases, two flats and two lights of each of two objects,
    with the frame types spelled in various ways (now and then not a frame type at all).
    Returns [(file name, cards, data)]."""
    objects = [draw(names), draw(names)]
    filt = draw(st.one_of(st.sampled_from(["V", "R", "g'", "B/V", ".."]), _TEXT))
    exptime = draw(exptimes)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    frames = []
    for role, count in (("bias", 2), ("flat", 2), ("light", 4)):
        for i in range(count):
            typ = _IMAGETYP[role][0]
            if draw(st.integers(0, 3)) == 0:
                typ = draw(st.sampled_from(_IMAGETYP[role] + _IMAGETYP["junk"]))
            cards = [card("IMAGETYP", fits_string(typ))]
            if role != "bias":
                cards.append(card("FILTER", fits_string(filt)))
            if role == "light":
                cards += [card("OBJECT", fits_string(objects[i // 2])), *_NIGHT_WCS]
                if exptime is not None:
                    cards.append(card("EXPTIME", exptime))
            else:
                cards.append(card("EXPTIME", "0.0" if role == "bias" else "1.0"))
            level = {"bias": 100.0, "flat": 5000.0, "light": 400.0}[role]
            frames.append((f"{role}{i}.fits", cards, rng.normal(level, 5.0, (12, 10))))
    return frames


def check_night(frames) -> None:
    """A whole night: exit 0 or 2, nothing outside OUT, inputs untouched, every product under
    OUT and written where summary.json says, no two products in one file, no temporaries."""
    with workspace() as root:
        raw = os.path.join(root, "in")
        for name, cards, data in frames:
            write_fits(os.path.join(raw, name), -32, data, cards)
        out = os.path.join(root, "out")
        outcome = run_cli(["night", raw, "-o", out, "-q", "--backend", "cpu"], root, out)
        if outcome.code == 2:
            assert_names_one_of(outcome, [name for name, _, _ in frames] + [raw])
            return
        with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        paths = [p["path"] for p in summary["products"]]
        assert len(paths) == len(set(paths)), f"two products share a file: {paths}"
        for p in summary["products"]:
            full = os.path.realpath(os.path.join(out, p["path"]))
            assert full.startswith(os.path.realpath(out) + os.sep), p["path"]
            if p["status"] in ("built", "reused"):
                assert os.path.isfile(full), p
        temporaries = [p for p in outcome.new_files
                       if any(t in os.path.basename(p)
                              for t in (".partial", ".inprogress", ".tmp"))]
        assert not temporaries, temporaries


def _alnum(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


@given(frames=nights())
def test_night_contract(frames):
    """OBJECT/FILTER with '/', '..', blanks; IMAGETYP spellings and junk."""
    assume_distinct_objects(frames)
    check_night(frames)


def assume_distinct_objects(frames) -> None:
    """Only nights whose two objects differ in letters or digits: no sanitising of names may
    merge them (the colliding ones have their own test)."""
    assume(_alnum(_object_of(frames, "light0.fits")) != _alnum(_object_of(frames, "light2.fits")))


def _object_of(frames, name: str) -> str:
    cards = next(c for n, c, _ in frames if n == name)
    text = next(c for c in cards if c.startswith(b"OBJECT  ")).decode()
    return text[10:].strip()[1:-1].replace("''", "'").strip()


@given(frames=nights(names=st.sampled_from(["", ")<_", "a/b", "a_b", "a b"])))
def test_night_colliding_object_names(frames):
    """Distinct OBJECTs whose names sanitise alike still get distinct products."""
    assume(_object_of(frames, "light0.fits") != _object_of(frames, "light2.fits"))
    check_night(frames)


@given(frames=nights(names=st.builds(lambda a, b: a + b, _TEXT, _NON_ASCII)))
def test_night_non_ascii_names(frames):
    """OBJECT with non-ASCII bytes (UTF-8; invalid FITS, found in the wild)."""
    assume_distinct_objects(frames)
    check_night(frames)


@given(frames=nights(exptimes=st.sampled_from([None, "0.0", "-5.0", "'x'", "''", "T"])))
def test_night_bad_exptime(frames):
    """Lights with missing, zero, negative or non-numeric EXPTIME."""
    assume_distinct_objects(frames)
    check_night(frames)


@given(frames=nights(exptimes=st.sampled_from(["NAN", "INF", "1E308", "1E999"])))
def test_night_non_finite_exptime(frames):
    assume_distinct_objects(frames)
    check_night(frames)
