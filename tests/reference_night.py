"""Independent reduction of a night of raw CCD frames with astropy, ccdproc and reproject.

This is the way an observer reduces a night today in a notebook, written out once so that
skystack's ``skystack night`` can be checked against it (tests) and timed against it
(``benchmarks/bench_night.py``). It deliberately imports nothing from skystack.

Steps
-----
1. ``ccdproc.ImageFileCollection`` sorts the FITS files of ``RAW`` by ``IMAGETYP``
   (``bias``/``zero``, ``dark``, ``flat``, ``light``/``object``/``science``, case-insensitive,
   as substrings), ``EXPTIME``, ``FILTER`` and ``OBJECT``. Frames with ``TRIMSEC`` are trimmed
   to it (``ccdproc.trim_image``); with ``subtract_overscan=True`` the median of the
   ``BIASSEC`` columns is subtracted first (off by default: the master bias carries the
   level).
2. Master bias: ``ccdproc.combine(method="average", sigma_clip=True, 3 / 3 sigma,
   sigma_clip_func=np.ma.median, sigma_clip_dev_func=mad_std)`` (one clipping pass, as
   ccdproc does).
3. Master dark per exposure time: each dark minus the master bias
   (``ccdproc.subtract_bias``), median-combined. It holds dark current times exposure.
4. Master flat per filter: each flat minus the master bias and minus the master dark
   scaled to the flat's exposure (``ccdproc.subtract_dark(scale=True,
   exposure_time="EXPTIME", exposure_unit=u.s)``), scaled by 1 / its median,
   median-combined and divided by its median (median 1).
5. Lights: minus the master bias, minus the master dark (scaled by ``EXPTIME``; the dark
   of the same exposure when there is one, otherwise the longest: :func:`choose_dark`),
   divided by the master flat (``ccdproc.flat_correct(norm_value=1)``,
   i.e. by the median-1 flat itself, not by the flat over its mean).
6. Per ``(OBJECT, FILTER)``: every calibrated light is resampled with
   ``reproject.reproject_interp(order="bilinear")`` onto one grid, and the cube is combined
   with a sigma-clipped mean: ``astropy.stats.sigma_clip(cube, sigma=3, maxiters=5,
   cenfunc="median", stdfunc="mad_std", axis=0)``, then the mean of the values kept
   (pixels outside a frame are NaN and ignored; pixels with no value at all are NaN).

Grid of a stack
---------------
``grid="first"`` (default): the WCS and shape of the *first light frame of the group*,
the one with the earliest ``DATE-OBS`` (ties: file name), i.e. what
``skystack night --reference <that file>`` (or skystack's default of the first light of the
group) uses; :func:`first_light` names it and :class:`ReferenceProducts` records it.
``grid="object"``: the first light frame of the *object*, whatever its filter, so that the
stacks of one object in every filter share one grid (as colour composites need).
``grid="optimal"``: ``reproject.mosaicking.find_optimal_celestial_wcs`` over the group at the
frames' pixel scale (a grid covering every frame).

Products in ``OUT``
-------------------
``masters/bias.fits``, ``masters/dark_<T>s.fits`` (``T`` from :func:`exptime_label`: ``60``
for integral seconds, ``2.5`` otherwise), ``masters/flat_<FILTER>.fits`` (written with
``CCDData.write``: float64 image, plus ccdproc's ``UNCERT`` and ``MASK`` extensions) and
``stacks/<OBJECT>_<FILTER>.fits`` (float32 image with the grid's WCS, ``NCOMBINE``; names
from :func:`product_name`).

Conventions: images in ADU (the raw frames' ``BUNIT``), exposure times in seconds, arrays
indexed ``(row, col) = (y, x)`` with pixel centres at 0-based integers (FITS / WCS headers
are 1-based as usual).

Usage as a script (prints the time of each step)::

    python tests/reference_night.py RAW_DIR OUT_DIR [--grid first|object|optimal]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import astropy.units as u
import ccdproc
import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import mad_std, sigma_clip
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS
from reproject import reproject_interp

__all__ = ["ReferenceProducts", "choose_dark", "classify", "exptime_label", "first_light",
           "product_name", "reduce_night"]

KEYWORDS = ["imagetyp", "exptime", "filter", "object", "date-obs"]
IMAGETYP_PATTERNS = {"bias": "bias|zero", "dark": "dark", "flat": "flat",
                     "light": "light|object|science"}
GRIDS = ("first", "object", "optimal")
STACK_SIGMA = 3.0
STACK_MAXITERS = 5
BIAS_SIGMA = 3.0


@dataclass
class ReferenceProducts:
    """Paths written by :func:`reduce_night` and what it did.

    Attributes
    ----------
    bias : Path
        Master bias.
    darks : dict of float to Path
        Master dark per exposure time, s.
    flats : dict of str to Path
        Master flat per filter.
    stacks : dict of (str, str) to Path
        Stack per ``(OBJECT, FILTER)``.
    grid_frame : dict of (str, str) to Path
        Raw light frame whose WCS and shape is the stack's grid (``grid="first"`` or
        ``"object"``), else absent.
    n_frames : dict of str to int
        Frames used per kind (``bias``, ``dark``, ``flat``, ``light``).
    dark_used : dict of str to float
        Exposure time of the master dark subtracted from each light / flat (by file name).
    seconds : dict of str to float
        Wall time per step (``classify``, ``bias``, ``darks``, ``flats``, ``lights``,
        ``total``).
    """

    bias: Path
    darks: dict[float, Path] = field(default_factory=dict)
    flats: dict[str, Path] = field(default_factory=dict)
    stacks: dict[tuple[str, str], Path] = field(default_factory=dict)
    grid_frame: dict[tuple[str, str], Path] = field(default_factory=dict)
    n_frames: dict[str, int] = field(default_factory=dict)
    dark_used: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def exptime_label(exptime: float) -> str:
    """``60.0 -> '60'``, ``2.5 -> '2.5'``: the ``<T>`` of ``masters/dark_<T>s.fits``."""
    t = float(exptime)
    return str(int(t)) if t.is_integer() else f"{t:g}"


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+.-]+", "_", str(text)).strip("_") or "x"


def product_name(object_name: str, filter_name: str) -> str:
    """File stem of a stack: ``<OBJECT>_<FILTER>`` with characters other than letters,
    digits, ``+``, ``-`` and ``.`` replaced by ``_`` (``"NGC 2548", "V" -> "NGC_2548_V"``;
    master flats are ``flat_<FILTER>`` with the same rule)."""
    return f"{_clean(object_name)}_{_clean(filter_name)}"


def choose_dark(exptime: float, available: Sequence[float]) -> float:
    """Exposure time of the master dark to subtract from a frame of ``exptime`` seconds.

    The dark of the same exposure (within 0.1 %) when there is one; otherwise the longest,
    whose dark current is best measured, scaled by ``exptime / dark exposure`` in
    ``subtract_dark`` (``skystack night`` chooses the same way).
    """
    if not available:
        raise ValueError("no master darks")
    for t in available:
        if abs(t - exptime) <= 1e-3 * max(1.0, t):
            return float(t)
    return float(max(available))


def classify(raw_dir: str | Path) -> dict[str, list[Path]]:
    """Files of ``raw_dir`` by kind (``bias``, ``dark``, ``flat``, ``light``), sorted by name."""
    ic = ccdproc.ImageFileCollection(str(raw_dir), keywords=KEYWORDS, glob_include="*.fit*")
    out: dict[str, list[Path]] = {}
    if ic.summary is None or len(ic.summary) == 0:
        return {kind: [] for kind in IMAGETYP_PATTERNS}
    for kind, pattern in IMAGETYP_PATTERNS.items():
        files = ic.files_filtered(imagetyp=pattern, regex_match=True, include_path=True)
        out[kind] = sorted(Path(f) for f in files)
    return out


def _date_obs(header: fits.Header) -> datetime:
    text = str(header.get("DATE-OBS", "")).strip()
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return datetime.max


def first_light(paths: Sequence[str | Path]) -> Path:
    """The frame with the earliest ``DATE-OBS`` (ties and missing dates: file name order)."""
    return min((Path(p) for p in paths), key=lambda p: (_date_obs(fits.getheader(p)), p.name))


def _read(path: Path, subtract_overscan: bool) -> CCDData:
    """A raw frame as CCDData in ADU, overscan-corrected if asked and trimmed to TRIMSEC."""
    ccd = CCDData.read(path, unit="adu")
    hdr = ccd.header
    if subtract_overscan and "BIASSEC" in hdr:
        ccd = ccdproc.subtract_overscan(ccd, fits_section=hdr["BIASSEC"], overscan_axis=1,
                                        median=True)
    if "TRIMSEC" in hdr:
        ccd = ccdproc.trim_image(ccd, fits_section=hdr["TRIMSEC"])
    return ccd


def _stack_header(ref_wcs: WCS, object_name: str, filter_name: str, lights: list[Path],
                  exptime: float) -> fits.Header:
    hdr = ref_wcs.to_header()
    hdr["OBJECT"] = object_name
    hdr["FILTER"] = filter_name
    hdr["EXPTIME"] = (exptime, "[s] exposure of one frame")
    hdr["NCOMBINE"] = (len(lights), "frames combined")
    hdr["BUNIT"] = "adu"
    hdr["COMBINE"] = ("sigclip mean", "median centre, mad_std, 3 sigma, 5 iters")
    return hdr


def reduce_night(raw_dir: str | Path, out_dir: str | Path, *, grid: str = "first",
                 subtract_overscan: bool = False,
                 log: Callable[[str], None] | None = None) -> ReferenceProducts:
    """Reduce every frame of ``raw_dir`` into masters and stacks under ``out_dir``.

    Parameters
    ----------
    raw_dir : str or Path
        Directory of raw FITS frames (``IMAGETYP``, ``EXPTIME``, ``FILTER``, ``OBJECT``,
        celestial WCS on the lights).
    out_dir : str or Path
        Output directory (``masters/`` and ``stacks/`` are created; files are overwritten).
    grid : {"first", "object", "optimal"}
        Grid of each stack: the first light frame of the group (default), the first light
        frame of the object in any filter, or ``find_optimal_celestial_wcs`` over the group
        (see the module docstring).
    subtract_overscan : bool
        Subtract the median of the ``BIASSEC`` columns of each frame before trimming.
    log : callable, optional
        Called with one line of progress per step (e.g. ``print``).

    Returns
    -------
    ReferenceProducts
    """
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    say = log or (lambda _msg: None)
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    masters, stacks = out_dir / "masters", out_dir / "stacks"
    masters.mkdir(parents=True, exist_ok=True)
    stacks.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t_start = t0 = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        seconds[step] = now - t0
        t0 = now
        say(f"{step:<9} {seconds[step]:8.2f} s")

    files = classify(raw_dir)
    if not files["bias"]:
        raise FileNotFoundError(f"no bias frames in {raw_dir}")
    headers = {p: fits.getheader(p) for kind in ("dark", "flat", "light") for p in files[kind]}
    lap("classify")

    # --- master bias ----------------------------------------------------------------------
    biases = [_read(p, subtract_overscan) for p in files["bias"]]
    master_bias = ccdproc.combine(biases, method="average", sigma_clip=True,
                                  sigma_clip_low_thresh=BIAS_SIGMA,
                                  sigma_clip_high_thresh=BIAS_SIGMA,
                                  sigma_clip_func=np.ma.median, sigma_clip_dev_func=mad_std)
    master_bias.meta["COMBINED"] = (len(biases), "bias frames combined")
    products = ReferenceProducts(bias=masters / "bias.fits")
    master_bias.write(products.bias, overwrite=True)
    del biases
    lap("bias")

    # --- master darks per exposure time ---------------------------------------------------
    dark_groups: dict[float, list[Path]] = {}
    for p in files["dark"]:
        dark_groups.setdefault(float(headers[p]["EXPTIME"]), []).append(p)
    master_darks: dict[float, CCDData] = {}
    for t_dark, paths in sorted(dark_groups.items()):
        darks = [ccdproc.subtract_bias(_read(p, subtract_overscan), master_bias) for p in paths]
        master = ccdproc.combine(darks, method="median")
        master.meta["EXPTIME"] = t_dark
        master_darks[t_dark] = master
        path = masters / f"dark_{exptime_label(t_dark)}s.fits"
        master.write(path, overwrite=True)
        products.darks[t_dark] = path
    lap("darks")

    def calibrate(ccd: CCDData, name: str) -> CCDData:
        ccd = ccdproc.subtract_bias(ccd, master_bias)
        if master_darks:
            t_dark = choose_dark(float(ccd.header["EXPTIME"]), list(master_darks))
            ccd = ccdproc.subtract_dark(ccd, master_darks[t_dark], scale=True,
                                        exposure_time="EXPTIME", exposure_unit=u.s)
            products.dark_used[name] = t_dark
        return ccd

    # --- master flats per filter ----------------------------------------------------------
    flat_groups: dict[str, list[Path]] = {}
    for p in files["flat"]:
        flat_groups.setdefault(str(headers[p].get("FILTER", "")).strip(), []).append(p)
    master_flats: dict[str, CCDData] = {}
    for filt, paths in sorted(flat_groups.items()):
        flats = [calibrate(_read(p, subtract_overscan), p.name) for p in paths]
        master = ccdproc.combine(flats, method="median",
                                 scale=lambda a: 1.0 / np.ma.median(a))
        master = master.divide(float(np.median(master.data)), handle_meta="first_found")
        master_flats[filt] = master
        path = masters / f"flat_{_clean(filt)}.fits"
        master.write(path, overwrite=True)
        products.flats[filt] = path
    lap("flats")

    # --- lights: calibrate, resample per (OBJECT, FILTER), sigma-clipped mean ----------------
    light_groups: dict[tuple[str, str], list[Path]] = {}
    for p in sorted(files["light"], key=lambda q: (_date_obs(headers[q]), q.name)):
        key = (str(headers[p].get("OBJECT", "")).strip(),
               str(headers[p].get("FILTER", "")).strip())
        light_groups.setdefault(key, []).append(p)
    first_of_object: dict[str, Path] = {}
    for (obj, _), paths in light_groups.items():
        if obj not in first_of_object or (_date_obs(headers[paths[0]]), paths[0].name) < (
                _date_obs(headers[first_of_object[obj]]), first_of_object[obj].name):
            first_of_object[obj] = paths[0]
    for (obj, filt), paths in light_groups.items():
        if grid in ("first", "object"):
            # Acquisition order: the first light of the group, or of the object.
            ref = paths[0] if grid == "first" else first_of_object[obj]
            ref_wcs = WCS(headers[ref]).celestial
            ref_shape = _read(ref, False).shape
            products.grid_frame[(obj, filt)] = ref
        else:
            from reproject.mosaicking import find_optimal_celestial_wcs

            inputs = []
            for p in paths:
                h = headers[p]
                shape = (int(h["NAXIS2"]), int(h["NAXIS1"]))
                if "TRIMSEC" in h:
                    shape = _read(p, False).shape
                inputs.append((shape, WCS(h).celestial))
            ref_wcs, ref_shape = find_optimal_celestial_wcs(inputs)
        cube = np.empty((len(paths), *ref_shape), dtype=np.float64)
        for k, p in enumerate(paths):
            ccd = calibrate(_read(p, subtract_overscan), p.name)
            if filt in master_flats:
                ccd = ccdproc.flat_correct(ccd, master_flats[filt], norm_value=1.0)
            else:
                say(f"no flat for filter {filt!r}: {p.name} not flat-fielded")
            cube[k] = reproject_interp((ccd.data, ccd.wcs.celestial), ref_wcs,
                                       shape_out=ref_shape, order="bilinear",
                                       return_footprint=False)
        with warnings.catch_warnings():
            # Pixels outside a frame are NaN by design; astropy would warn about each stack.
            warnings.simplefilter("ignore", AstropyUserWarning)
            clipped = sigma_clip(cube, sigma=STACK_SIGMA, maxiters=STACK_MAXITERS,
                                 cenfunc="median", stdfunc="mad_std", axis=0, masked=True)
        stack = clipped.mean(axis=0).filled(np.nan).astype(np.float32)
        del cube, clipped
        hdr = _stack_header(ref_wcs, obj, filt, paths, float(headers[paths[0]]["EXPTIME"]))
        path = stacks / f"{product_name(obj, filt)}.fits"
        fits.PrimaryHDU(stack, header=hdr).writeto(path, overwrite=True)
        products.stacks[(obj, filt)] = path
        say(f"stack {obj} {filt}: {len(paths)} frames -> {path}")
    lap("lights")
    seconds["total"] = time.perf_counter() - t_start
    products.n_frames = {kind: len(v) for kind, v in files.items()}
    products.seconds = seconds
    return products


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("raw", help="directory of raw FITS frames")
    p.add_argument("out", help="output directory (masters/, stacks/)")
    p.add_argument("--grid", choices=GRIDS, default="first",
                   help="stack grid: first light of each (OBJECT, FILTER) group (default), "
                        "first light of each OBJECT, or optimal")
    p.add_argument("--subtract-overscan", action="store_true",
                   help="subtract the median of the BIASSEC columns before trimming")
    a = p.parse_args(argv)
    products = reduce_night(a.raw, a.out, grid=a.grid, subtract_overscan=a.subtract_overscan,
                            log=print)
    n = products.n_frames
    print(f"{sum(n.values())} frames ({', '.join(f'{v} {k}' for k, v in n.items())}) "
          f"reduced in {products.seconds['total']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
