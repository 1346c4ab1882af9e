"""Every combine option in one frozen dataclass, with its defaults and its validation.

The command line, the Python API and the pipeline all use :class:`CombineOptions`; option names are
the CLI's long options in snake_case. The defaults (:data:`DEFAULTS`) and the allowed values of
the choice options (:data:`CHOICES`) are written here only: ``skystack.combine_options`` and the
command line's options and help take them from here.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .errors import SkystackError

METHODS = ("mean", "median", "sum", "min", "max")
REJECTIONS = ("none", "sigclip", "minmax", "range", "percentile", "winsor", "linfit", "pctclip",
              "esd", "ccdclip", "pclip")
CENTERS = ("median", "mean")
SPREADS = ("std", "mad")
# stars, regression: measured from the pixels (skystack.frame_measures).
SCALES = ("none", "median", "mean", "exposure", "stars", "regression")
ZEROS = ("none", "median", "mean", "regression")
BACKENDS = ("auto", "cpu", "gpu")
# How the UNCERT plane is computed (skystack.uncertainty); "auto" is resolved from the inputs.
UNCERTAINTIES = ("auto", "scatter", "model", "propagate")
# The allowed values of each choice option of CombineOptions, by option name.
CHOICES: dict[str, tuple[str, ...]] = {
    "method": METHODS, "reject": REJECTIONS, "center": CENTERS, "spread": SPREADS,
    "scale": SCALES, "zero": ZEROS, "uncertainty": UNCERTAINTIES}

_SIZE_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9,
               "T": 1e12, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str | int | float) -> int:
    """Parse a memory size such as ``512MB``, ``2GiB``, ``1.5G`` or a number of bytes."""
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        unit = m.group(2).upper() if m else None
        if not m or unit not in _SIZE_UNITS:
            raise SkystackError(f"invalid memory size {text!r} (examples: 512MB, 2GB, 1GiB)")
        value = int(float(m.group(1)) * _SIZE_UNITS[unit])
    if value < 16 * 2**20:
        raise SkystackError(f"memory limit {text!r} is too small: at least 16 MiB "
                            f"({16 * 2**20} bytes) is needed")
    return value


def default_mem_limit() -> int:
    """A quarter of the memory available now, between 256 MB and 8 GB."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 4 * 2**30
    return int(min(max(available // 4, 256 * 2**20), 8 * 2**30))


@dataclass(frozen=True)
class Weights:
    """How frames are weighted in mean and sum combines.

    kind: ``none``; ``exptime`` (weight = EXPTIME); ``invvar`` (weight = 1 / header[key], the key
    holding a variance); ``noise`` (weight = 1 / header[key]**2, the key holding a noise sigma);
    ``values`` (one weight per frame, given); measured from the pixels
    (:mod:`skystack.frame_measures`): ``bgnoise`` (1 / background variance of the scaled
    frame), ``stars`` (stars / FWHM^2), ``psf-signal`` ((star flux / noise)^2).
    """

    kind: str = "none"
    key: str | None = None
    values: tuple[float, ...] | None = None

    @classmethod
    def parse(cls, spec: str | Sequence[float] | None) -> Weights:
        """Parse ``none``, ``exptime``, ``bgnoise``, ``stars``, ``psf-signal``, ``invvar:KEY``,
        ``noise:KEY``, ``1,2,3`` or ``@file``."""
        if spec is None:
            return cls()
        if not isinstance(spec, str):
            return cls("values", values=_positive_weights(spec, "weights"))
        text = spec.strip()
        low = text.lower()
        if low in ("none", "exptime", "bgnoise", "stars", "psf-signal"):
            return cls(low)
        for kind in ("invvar", "noise"):
            if low.startswith(kind + ":") and text[len(kind) + 1:].strip():
                return cls(kind, key=text[len(kind) + 1:].strip().upper())
        if text.startswith("@"):
            path = text[1:]
            try:
                with open(path) as f:
                    items = f.read().replace(",", " ").split()
            except OSError as exc:
                raise SkystackError(f"{path}: cannot read weights file ({exc.strerror})") from None
            return cls("values", values=_positive_weights(items, path))
        if re.fullmatch(r"[0-9eE.+,\s-]+", text):
            return cls("values", values=_positive_weights(text.split(","), "--weights"))
        raise SkystackError(
            f"invalid --weights {spec!r}: use none, exptime, bgnoise, stars, psf-signal, "
            "invvar:KEY, noise:KEY, a comma-separated list or @file")

    def describe(self) -> str:
        if self.kind in ("invvar", "noise"):
            return f"{self.kind}:{self.key}"
        return "list" if self.kind == "values" else self.kind


def _positive_weights(items, where: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in items)
    except (TypeError, ValueError):
        raise SkystackError(f"{where}: weights must be numbers") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise SkystackError(f"{where}: weights must be finite and positive")
    return values


@dataclass(frozen=True)
class CombineOptions:
    """Options of a pixel-by-pixel combination; see ``skystack combine --help``.

    Sigma-clipping thresholds are in units of the spread (std, or MAD scaled to sigma);
    ``maxiters=0`` iterates until nothing changes. ``range_low``/``range_high`` are raw pixel
    values (before scaling), inclusive. ``plow``/``phigh`` are percentages of each pixel's valid
    values dropped from the low and high end (rounded down). ``pctclip_low``/``pctclip_high`` are
    fractions (Siril's percentile clipping): the largest relative distance ``|x - median| /
    |median|`` kept below / above the median. ``sigma_low``/``sigma_high``/``maxiters`` also
    drive ``winsor`` and ``linfit`` (skystack.backends.cpu.rejections). ``mem_limit`` is in bytes.
    ``esd``: at most ``floor(esd_max_frac * n)`` outliers at significance ``esd_alpha``.
    ``ccdclip``: ``gain`` (e-/ADU) and ``rdnoise`` (e-) of the raw values (None: from the
    headers, :mod:`skystack.rejection_noise`), ``snoise`` a fraction. ``pclip``: IRAF's
    percentile pixel (|pclip| < 1: a fraction of the values beside the median, else a number;
    negative: below the median). See :mod:`skystack.backends.cpu.rejections_stat`.
    """

    method: str = "mean"
    reject: str = "none"
    center: str = "median"
    spread: str = "std"
    sigma_low: float = 3.0
    sigma_high: float = 3.0
    maxiters: int = 5
    nlow: int = 1
    nhigh: int = 1
    range_low: float | None = None
    range_high: float | None = None
    plow: float = 10.0
    phigh: float = 10.0
    pctclip_low: float = 0.2
    pctclip_high: float = 0.1
    weights: Weights = field(default_factory=Weights)
    scale: str = "none"
    zero: str = "none"
    hdu: int | str | None = None
    mem_limit: int | None = None
    uncertainty: str = "auto"
    # Header cards recording --where/--exclude (skystack.io.selection), set by load_checked.
    selection: tuple = ()
    esd_alpha: float = 0.05
    esd_max_frac: float = 0.3
    gain: float | None = None
    rdnoise: float | None = None
    snoise: float = 0.0
    pclip: float = -0.5

    def validated(self) -> CombineOptions:
        """Return self (with defaults filled in) or raise SkystackError on an invalid value."""
        for name, allowed in CHOICES.items():
            check_choice(name, getattr(self, name), allowed)
        for name in ("sigma_low", "sigma_high"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise SkystackError(f"invalid --{name.replace('_', '-')} {v!r}: must be > 0")
        if not isinstance(self.maxiters, int) or self.maxiters < 0:
            raise SkystackError(f"invalid --maxiters {self.maxiters!r}: must be an integer >= 0")
        for name in ("nlow", "nhigh"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise SkystackError(f"invalid --{name} {v!r}: must be an integer >= 0")
        for name in ("plow", "phigh"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v < 100):
                raise SkystackError(f"invalid --{name} {v!r}: must be a percentage in [0, 100)")
        for name in ("pctclip_low", "pctclip_high"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise SkystackError(f"invalid --{name.replace('_', '-')} {v!r}: must be a "
                                    "fraction >= 0 (0.1 = 10 % of the median)")
        if self.reject == "percentile" and self.plow + self.phigh >= 100:
            # floor(n*plow/100) + floor(n*phigh/100) reaches n for large n: every value dropped.
            raise SkystackError(f"invalid --plow {self.plow} with --phigh {self.phigh}: together "
                                "they drop every value (their sum must be below 100)")
        _check_stat_rejection_options(self)
        if isinstance(self.hdu, bool) or (isinstance(self.hdu, int) and self.hdu < 0):
            raise SkystackError(f"invalid --hdu {self.hdu!r}: an HDU index is >= 0 (0 = primary)")
        if self.reject == "range":
            if self.range_low is None and self.range_high is None:
                raise SkystackError("--reject range needs --low and/or --high")
            lo = -math.inf if self.range_low is None else self.range_low
            hi = math.inf if self.range_high is None else self.range_high
            if not lo <= hi:
                raise SkystackError(f"invalid range: --low {lo} is above --high {hi}")
        if not isinstance(self.weights, Weights):
            raise SkystackError("weights must be parsed with Weights.parse")
        mem = self.mem_limit
        return replace(self, mem_limit=default_mem_limit() if mem is None else parse_size(mem))

    def check_frame_count(self, n: int) -> None:
        """Raise SkystackError when the options cannot keep any value of ``n`` frames.

        minmax drops ``nlow + nhigh`` values of every pixel: with that many frames or fewer
        nothing would be left, and the product would be NaN everywhere.
        """
        if self.reject == "minmax" and self.nlow + self.nhigh >= n:
            raise SkystackError(
                f"--reject minmax drops --nlow {self.nlow} + --nhigh {self.nhigh} values of "
                f"each pixel, which leaves nothing of {n} frame{'s' if n != 1 else ''} "
                "(lower --nlow/--nhigh or give more frames)")

    @property
    def weighted(self) -> bool:
        """Weights change the result only for mean and sum."""
        return self.weights.kind != "none" and self.method in ("mean", "sum")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_stat_rejection_options(o: CombineOptions) -> None:
    """The options of the esd, ccdclip and pclip rejections (one-line errors)."""
    if not (_number(o.esd_alpha) and 0 < o.esd_alpha < 1):
        raise SkystackError(f"invalid --esd-alpha {o.esd_alpha!r}: must be in (0, 1)")
    if not (_number(o.esd_max_frac) and 0 < o.esd_max_frac < 1):
        raise SkystackError(f"invalid --esd-max-frac {o.esd_max_frac!r}: must be in (0, 1)")
    if o.gain is not None and not (_number(o.gain) and o.gain > 0):
        raise SkystackError(f"invalid --gain {o.gain!r}: must be > 0 (e-/ADU)")
    if o.rdnoise is not None and not (_number(o.rdnoise) and o.rdnoise >= 0):
        raise SkystackError(f"invalid --rdnoise {o.rdnoise!r}: must be >= 0 (e-)")
    if not (_number(o.snoise) and o.snoise >= 0):
        raise SkystackError(f"invalid --snoise {o.snoise!r}: must be >= 0 (a fraction)")
    if not (_number(o.pclip) and o.pclip != 0):
        raise SkystackError(f"invalid --pclip {o.pclip!r}: must be a non-zero number")


#: The default of every combine option.
DEFAULTS = CombineOptions()

#: The night's stacks reject outliers (cosmic rays, satellites) unless told otherwise.
# 5 sigma about the median (MAD spread): seeing changes from frame to frame then do not clip
# star cores (3 sigma biased the flux of bright stars low by 0.25 % on the generated night),
# while cosmic rays and satellite trails, tens of sigma above the sky, are still rejected.
NIGHT_STACK_OPTIONS = dict(method="mean", reject="sigclip", center="median", spread="mad",
                           sigma_low=5.0, sigma_high=5.0, maxiters=0)


def check_threads(threads) -> None:
    """Raise SkystackError unless ``threads`` is None (all cores) or an integer >= 1."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise SkystackError(f"invalid --threads {threads!r}: must be an integer >= 1 "
                            "(omit it to use all cores)")


def check_choice(name: str, value, allowed: Sequence[str]) -> None:
    """Raise SkystackError unless ``value`` is one of ``allowed`` (``name``: the option)."""
    if value not in allowed:
        raise SkystackError(f"invalid --{name} {value!r}: choose from {', '.join(allowed)}")
