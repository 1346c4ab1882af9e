"""8-bit PNG previews of stacked images, and RGB composites of three filters.

Conventions
-----------
* Images are indexed ``(rows, cols)``; the PNG shows row 0 at the **bottom** (FITS / ds9 /
  ``imshow(origin='lower')`` view), so a PNG is the array flipped vertically.
* NaN (and ±inf) means no data and is drawn black; the display limits ignore it.
* A PNG is written to a temporary file in the target's directory, then renamed onto the
  final name: a crash never leaves a half-written file under that name.

Greyscale previews use, by default, the automatic *screen transfer function* (STF) that
PixInsight and Siril apply to linear data ("auto-stretch"), so that the sky background is a
visible grey and its noise and faint stars show:

* shadows clip at ``c0 = median + shadows_clip * sigma`` (``shadows_clip = -2.8``;
  ``sigma = 1.4826 * MAD``, the MAD normalised to a Gaussian sigma), highlights at the maximum;
  pixels are rescaled to ``x = (v - c0) / (max - c0)`` and clipped to [0, 1];
* the *midtones transfer function* ``MTF(m, x) = (m - 1) x / ((2m - 1) x - m)`` (which maps
  0 → 0, m → 1/2, 1 → 1) is applied with the midtones balance ``m`` chosen so that the median
  lands on ``target_background = 0.25`` (PixInsight's default): ``m = MTF(0.25, x_median)``,
  since MTF(m, x) = y ⇔ m = MTF(y, x).

The other stretches (``linear``, ``sqrt``, ``log``, ``asinh``) use :mod:`astropy.visualization`:
an :class:`AsymmetricPercentileInterval` (default 0.5 – 99.8 %) followed by the stretch.

RGB composites are stretched per channel with the same auto-STF, *unlinked* (PixInsight's
"Link RGB channels" off): every channel's own background median is mapped to the same grey, so
the sky is a neutral dark grey whatever the channels' sky levels or gains, and each channel's
maximum is white. Normalising every channel to its own range is a crude white balance; colours
are for display, not photometry.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from ..errors import SkystackError
from ..io.atomic import atomic_write

__all__ = ["STRETCHES", "FILTER_WAVELENGTH_NM", "write_preview", "write_rgb",
           "filter_order_for_rgb", "to_uint8", "mtf", "auto_stf"]

STRETCHES = ("stf", "linear", "sqrt", "log", "asinh")

SHADOWS_CLIP = -2.8  # sigmas from the median (PixInsight's AutoSTF script default)
TARGET_BACKGROUND = 0.25  # where the sky median lands on [0, 1] (PixInsight's default)
_MAD_TO_SIGMA = 1.4826  # MAD of a Gaussian times this is its sigma
_STATS_SAMPLE = 1_000_000  # pixels enough for the sky median and MAD of any frame

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


def mtf(m: float, x):
    """The midtones transfer function ``MTF(m, x) = (m - 1) x / ((2m - 1) x - m)``.

    ``x`` (scalar or array) in [0, 1], the midtones balance ``m`` in (0, 1). MTF maps 0 → 0,
    ``m`` → 1/2 and 1 → 1, monotonically; ``m < 1/2`` brightens, ``m = 1/2`` is the identity.
    Its inverse in ``m``: ``MTF(m, x) = y`` exactly when ``m = MTF(y, x)``. For ``m`` in (0, 1)
    the denominator is negative on all of [0, 1] (it is linear in ``x``, ``-m`` at 0 and
    ``m - 1`` at 1), so there is no division by zero.
    """
    m = float(m)
    if not 0.0 < m < 1.0:
        raise ValueError(f"midtones balance must be in (0, 1), got {m}")
    x = np.asarray(x, dtype=np.float64)
    return (m - 1.0) * x / ((2.0 * m - 1.0) * x - m)


def auto_stf(image, *, shadows_clip: float = SHADOWS_CLIP,
             target_background: float = TARGET_BACKGROUND) -> tuple[float, float, float] | None:
    """The automatic screen stretch of ``image``: ``(c0, c1, m)``, or None if it has no range.

    ``c0`` (shadows clip, data units) is ``median + shadows_clip * 1.4826 * MAD`` of the finite
    pixels (no lower than their minimum; the minimum itself where the MAD is 0), ``c1``
    (highlights clip) their maximum, and ``m`` the midtones balance that maps the median,
    rescaled to ``(median - c0) / (c1 - c0)``, onto ``target_background`` (1/2 — a linear
    stretch — where the median sits on ``c0``). The median and MAD come from at most a million
    evenly strided pixels. None when no pixel is finite or all finite pixels are equal.
    """
    arr = np.asarray(image, dtype=np.float64)
    values = arr[np.isfinite(arr)]
    if values.size == 0:
        return None
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        return None
    sample = values[:: max(1, values.size // _STATS_SAMPLE)]
    median = float(np.median(sample))
    sigma = _MAD_TO_SIGMA * float(np.median(np.abs(sample - median)))
    c0 = max(lo, median + shadows_clip * sigma) if sigma > 0 else lo
    x_median = (median - c0) / (hi - c0)
    m = float(mtf(target_background, x_median)) if 0.0 < x_median < 1.0 else 0.5
    if not 0.0 < m < 1.0:  # underflow for a median within ~1e-300 of c0: keep it linear
        m = 0.5
    return c0, hi, m


def _stf_unit(arr: np.ndarray, finite: np.ndarray, shadows_clip: float,
              target_background: float) -> np.ndarray:
    """``arr``'s finite pixels auto-stretched onto [0, 1] (see :func:`auto_stf`); NaN → 0."""
    out = np.zeros(arr.shape)
    params = auto_stf(arr, shadows_clip=shadows_clip, target_background=target_background)
    if params is None:
        return out
    c0, c1, m = params
    out[finite] = mtf(m, np.clip((arr[finite] - c0) / (c1 - c0), 0.0, 1.0))
    return out


def to_uint8(image, *, stretch: str = "stf",
             percentiles: tuple[float, float] = (0.5, 99.8)) -> np.ndarray:
    """The preview's pixels, in array orientation (row 0 first): uint8, NaN → 0.

    ``stretch="stf"`` (default) is the automatic screen stretch (module docstring,
    :func:`auto_stf`); ``percentiles`` are then unused. For the other stretches the lower/upper
    ``percentiles`` of the finite pixels map to 0 and 255 before the stretch. An image without
    finite pixels, or a constant one, is all black.
    """
    from astropy.visualization import AsymmetricPercentileInterval

    arr = _as_image(image, "preview")
    lo, hi = (float(p) for p in percentiles)
    if not 0.0 <= lo < hi <= 100.0:
        raise SkystackError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    finite = np.isfinite(arr)
    out = np.zeros(arr.shape, np.uint8)
    if stretch == "stf":
        unit = _stf_unit(arr, finite, SHADOWS_CLIP, TARGET_BACKGROUND)
        return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
    stretcher = _stretch(stretch)
    if not finite.any():
        return out
    vmin, vmax = AsymmetricPercentileInterval(lo, hi).get_limits(arr[finite])
    if not vmax > vmin:
        return out
    scaled = np.clip((arr[finite] - vmin) / (vmax - vmin), 0.0, 1.0)
    values = np.clip(stretcher(scaled, clip=True), 0.0, 1.0)
    out[finite] = np.rint(values * 255.0).astype(np.uint8)
    return out


def _write_png(pixels: np.ndarray, path: str | os.PathLike) -> str:
    """``pixels`` (rows, cols[, 3]) uint8 in array orientation → PNG with row 0 at the bottom,
    through a temporary file in the same directory."""
    from PIL import Image

    target = os.fspath(path)
    img = Image.fromarray(np.ascontiguousarray(pixels[::-1]))
    try:
        with atomic_write(target, suffix=".tmp") as tmp, open(tmp, "wb") as fh:
            img.save(fh, format="PNG")
    except OSError as exc:
        raise SkystackError(f"{target}: cannot write ({exc.strerror or exc})") from None
    return target


def write_preview(image, path: str | os.PathLike, *, stretch: str = "stf",
                  percentiles: tuple[float, float] = (0.5, 99.8)) -> str:
    """Write ``image`` (2-D, any numeric type, NaN = no data) as an 8-bit greyscale PNG.

    ``stretch`` is one of :data:`STRETCHES` (default: the automatic screen stretch, which puts
    the sky median at 25 % grey); see :func:`to_uint8` for the scaling. Row 0 of the image is
    the bottom row of the PNG. Returns the path written.
    """
    return _write_png(to_uint8(image, stretch=stretch, percentiles=percentiles), path)


def write_rgb(red, green, blue, path: str | os.PathLike, *,
              shadows_clip: float = SHADOWS_CLIP,
              target_background: float = TARGET_BACKGROUND) -> str:
    """Write an 8-bit RGB PNG from three registered images of the same shape.

    Each channel gets its own automatic screen stretch (:func:`auto_stf`, unlinked): its
    background median lands on ``target_background`` in every channel, so the sky is a neutral
    grey whatever the channels' sky levels and gains, and its maximum is white; NaN is black in
    that channel. Row 0 at the bottom. Raises :class:`SkystackError` if the shapes differ.
    Returns the path.
    """
    channels = [_as_image(c, name) for c, name in ((red, "red"), (green, "green"),
                                                   (blue, "blue"))]
    shapes = [c.shape for c in channels]
    if len(set(shapes)) != 1:
        raise SkystackError(
            "RGB channels differ in shape: " + ", ".join(
                f"{n} {s[0]}x{s[1]}" for n, s in zip(("red", "green", "blue"), shapes)))
    if not 0.0 < target_background < 1.0:
        raise SkystackError(f"target background must be in (0, 1), got {target_background}")
    rgb = np.stack([_stf_unit(c, np.isfinite(c), shadows_clip, target_background)
                    for c in channels], axis=-1)
    return _write_png(np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8), path)
