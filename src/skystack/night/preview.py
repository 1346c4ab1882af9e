"""8-bit PNG previews of stacked images, and RGB composites of three filters.

Conventions
-----------
* Images are indexed ``(rows, cols)``; the PNG shows row 0 at the **bottom** (FITS / ds9 /
  ``imshow(origin='lower')`` view), so a PNG is the array flipped vertically.
* NaN (and ±inf) means no data and is drawn black; the display limits ignore it.
* A PNG is written to a temporary file in the target's directory, then ``os.replace``-d onto the
  final name: a crash never leaves a half-written file under that name.

Greyscale previews use :mod:`astropy.visualization`: an :class:`AsymmetricPercentileInterval`
(default 0.5 – 99.8 %) followed by a stretch (asinh by default). RGB composites stretch each
channel independently, as :func:`astropy.visualization.make_rgb` does (astropy >= 7), built here
from the same interval and stretch classes so that astropy 6 works too: per channel, the
sigma-clipped median sky is subtracted, the range [0, high percentile] is mapped to [0, 1] and
an :class:`AsinhStretch` applied. Normalising every channel to its own high percentile is a
crude white balance; colours are for display, not photometry.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from ..errors import SkystackError
from ..io.writer import product_mode

__all__ = ["STRETCHES", "FILTER_WAVELENGTH_NM", "write_preview", "write_rgb",
           "filter_order_for_rgb", "to_uint8"]

STRETCHES = ("linear", "sqrt", "log", "asinh")

# Effective wavelengths (nm) of common filters, keyed by normalised name (see _filter_key).
# Broad-band: Johnson-Cousins UBVRI, photographic RGB, SDSS u'g'r'i'z'. Narrow-band: emission
# lines. Luminance/clear filters have no colour and are never used for RGB.
FILTER_WAVELENGTH_NM = {
    "U": 365.0, "B": 445.0, "G": 525.0, "V": 551.0, "R": 640.0, "I": 806.0,
    "SDSSU": 354.0, "SDSSG": 475.0, "SDSSR": 622.0, "SDSSI": 763.0, "SDSSZ": 905.0,
    "HA": 656.3, "HB": 486.1, "OIII": 500.7, "SII": 671.6, "NII": 658.4,
}
_NARROW = {"HA", "HB", "OIII", "SII", "NII"}
_ALIASES = {
    "BLUE": "B", "GREEN": "G", "RED": "R",
    "RC": "R", "IC": "I", "HALPHA": "HA", "HBETA": "HB", "O3": "OIII", "S2": "SII", "N2": "NII",
    "UP": "SDSSU", "GP": "SDSSG", "RP": "SDSSR", "IP": "SDSSI", "ZP": "SDSSZ", "Z": "SDSSZ",
}
_LUMINANCE = {"L", "LUM", "LUMINANCE", "C", "CLEAR", "CLR", "NONE", "OPEN"}
_TARGET_NM = (450.0, 550.0, 650.0)  # blue, green, red of the eye


def _filter_key(name: str) -> str:
    """Upper-case, alphanumerics only; ``g'``/``gp``/``sdss_g``/``SDSS-g`` → ``SDSSG``."""
    text = str(name).strip()
    m = re.fullmatch(r"(?i)(?:sdss[\s_\-]*)?([ugriz])(?:'|p|prime)?", text)
    if m and (text != m.group(1) or text.islower()):
        # g' / gp / sdss_g, or a lone lower-case letter (SDSS names are lower case).
        return "SDSS" + m.group(1).upper()
    key = re.sub(r"[^A-Z0-9]", "", text.upper())
    return _ALIASES.get(key, key)


def filter_order_for_rgb(filters: Sequence[str]) -> tuple[str, str, str] | None:
    """The three filters to show as (red, green, blue), or None with fewer than 3 colour filters.

    Names are recognised case-insensitively (see :data:`FILTER_WAVELENGTH_NM`): Johnson-Cousins
    U B V R I, photographic R G B, SDSS u' g' r' i' z' (``g'``, ``gp``, ``sdss_g``, or lower-case
    ``g``), and narrow bands Ha, Hb, OIII, SII, NII. Luminance/clear (L, Lum, C, Clear) and
    unknown names are left out. If three or more broad-band filters are present only those are
    considered (narrow bands ignored); otherwise all colour filters are. Of these, the three
    whose sorted wavelengths are closest to 450/550/650 nm (least total distance) are chosen,
    then ordered longest wavelength first: B,V,R → (R, V, B); U,B,V,R,I → (R, V, B);
    g',r',i',z' → (i', r', g'); Ha,OIII,SII → (SII, Ha, OIII) (the "Hubble palette").
    The names are returned as given.
    """
    known: dict[str, float] = {}
    for name in filters:
        key = _filter_key(name)
        if key in _LUMINANCE or key not in FILTER_WAVELENGTH_NM or name in known:
            continue
        known[name] = FILTER_WAVELENGTH_NM[key]
    broad = {n: w for n, w in known.items() if _filter_key(n) not in _NARROW}
    pool = broad if len(broad) >= 3 else known
    if len(pool) < 3:
        return None
    best = min(combinations(sorted(pool, key=lambda n: (pool[n], n)), 3),
               key=lambda c: sum(abs(pool[n] - t) for n, t in zip(c, _TARGET_NM)))
    blue, green, red = best
    return red, green, blue


def _as_image(image, what: str) -> np.ndarray:
    arr = np.ma.filled(np.ma.asarray(image).astype(np.float64), np.nan) \
        if np.ma.isMaskedArray(image) else np.asarray(image, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise SkystackError(f"{what}: expected a 2-D image, got shape {arr.shape}")
    return arr


def _stretch(name: str):
    from astropy.visualization import AsinhStretch, LinearStretch, LogStretch, SqrtStretch

    table = {"linear": LinearStretch, "sqrt": SqrtStretch, "log": LogStretch,
             "asinh": AsinhStretch}
    if name not in table:
        raise SkystackError(f"unknown stretch {name!r}; expected one of {', '.join(STRETCHES)}")
    return table[name]()


def to_uint8(image, *, stretch: str = "asinh",
             percentiles: tuple[float, float] = (0.5, 99.8)) -> np.ndarray:
    """The preview's pixels, in array orientation (row 0 first): uint8, NaN → 0.

    The lower/upper ``percentiles`` of the finite pixels map to 0 and 255 before the stretch;
    an image without finite pixels, or a constant one, is all black.
    """
    from astropy.visualization import AsymmetricPercentileInterval

    arr = _as_image(image, "preview")
    lo, hi = (float(p) for p in percentiles)
    if not 0.0 <= lo < hi <= 100.0:
        raise SkystackError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    finite = np.isfinite(arr)
    out = np.zeros(arr.shape, np.uint8)
    if not finite.any():
        return out
    vmin, vmax = AsymmetricPercentileInterval(lo, hi).get_limits(arr[finite])
    if not vmax > vmin:
        return out
    scaled = np.clip((arr[finite] - vmin) / (vmax - vmin), 0.0, 1.0)
    values = np.clip(_stretch(stretch)(scaled, clip=True), 0.0, 1.0)
    out[finite] = np.rint(values * 255.0).astype(np.uint8)
    return out


def _write_png(pixels: np.ndarray, path: str | os.PathLike) -> str:
    """``pixels`` (rows, cols[, 3]) uint8 in array orientation → PNG with row 0 at the bottom,
    through a temporary file in the same directory."""
    from PIL import Image

    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    img = Image.fromarray(np.ascontiguousarray(pixels[::-1]))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                                   dir=folder)
    except OSError as exc:
        raise SkystackError(f"{target}: cannot write ({exc.strerror})") from None
    try:
        os.fchmod(fd, product_mode())  # mkstemp's file is private (0600)
        with os.fdopen(fd, "wb") as f:
            img.save(f, format="PNG")
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise SkystackError(f"{target}: cannot write ({exc.strerror or exc})") from None
        raise
    return target


def write_preview(image, path: str | os.PathLike, *, stretch: str = "asinh",
                  percentiles: tuple[float, float] = (0.5, 99.8)) -> str:
    """Write ``image`` (2-D, any numeric type, NaN = no data) as an 8-bit greyscale PNG.

    ``stretch`` is one of :data:`STRETCHES`; see :func:`to_uint8` for the scaling. Row 0 of
    the image is the bottom row of the PNG. Returns the path written.
    """
    return _write_png(to_uint8(image, stretch=stretch, percentiles=percentiles), path)


def _channel(arr: np.ndarray, high: float, asinh_a: float) -> np.ndarray:
    """Background-subtracted, [0, high percentile]-normalised, asinh-stretched channel in
    [0, 1]; NaN → 0."""
    from astropy.stats import sigma_clipped_stats
    from astropy.visualization import AsinhStretch, ManualInterval

    finite = np.isfinite(arr)
    out = np.zeros(arr.shape)
    if not finite.any():
        return out
    values = arr[finite]
    sample = values[:: max(1, values.size // 1_000_000)]  # the sky level needs no more
    _, sky, _ = sigma_clipped_stats(sample, sigma=3.0, maxiters=5)
    values = values - sky
    vmax = float(np.percentile(values, high))
    if not vmax > 0:
        return out
    interval = ManualInterval(0.0, vmax)
    out[finite] = AsinhStretch(a=asinh_a)(interval(values, clip=True), clip=True)
    return out


def write_rgb(red, green, blue, path: str | os.PathLike, *, percentile: float = 99.8,
              asinh_a: float = 0.1) -> str:
    """Write an 8-bit RGB PNG from three registered images of the same shape.

    Each channel independently: sigma-clipped median sky subtracted, [0, ``percentile``-th
    percentile] → [0, 1], then ``AsinhStretch(a=asinh_a)``; NaN is black in that channel.
    Row 0 at the bottom. Raises :class:`SkystackError` if the shapes differ. Returns the path.
    """
    channels = [_as_image(c, name) for c, name in ((red, "red"), (green, "green"),
                                                   (blue, "blue"))]
    shapes = [c.shape for c in channels]
    if len(set(shapes)) != 1:
        raise SkystackError(
            "RGB channels differ in shape: " + ", ".join(
                f"{n} {s[0]}x{s[1]}" for n, s in zip(("red", "green", "blue"), shapes)))
    if not 0.0 < percentile <= 100.0:
        raise SkystackError(f"percentile must be in (0, 100], got {percentile}")
    rgb = np.stack([_channel(c, percentile, asinh_a) for c in channels], axis=-1)
    return _write_png(np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8), path)
