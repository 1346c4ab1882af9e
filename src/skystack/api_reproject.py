"""Public API for reprojection: ``skystack.stack`` and ``skystack.reproject``."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .api import header_unit, load_checked, refuse_input_as_output
from .backends import get_backend
from .clip_efficiency import clip_cards
from .colour.cfa import mark_resampled_cfa, refuse_resampled_cfa
from .config import check_choice as _check_choice
from .config import check_threads
from .core.grid import Grid, frame_wcs
from .core.tiles import Tile
from .cosmetics.provenance import cosmetic_cards
from .errors import SkystackError
from .executor import InProcess, executor_for
from .io.atomic import atomic_write
from .io.inputs import load_frames
from .io.lock import output_lock, remove_leftovers, temporary_pattern
from .io.provenance import build_header, wcs_cards
from .io.writer import check_output_path
from .normalization import frame_params
from .pipeline import ArraySink
from .regrid.grid import grid_from_header, grid_from_reference, optimal_grid
from .regrid.interp import pixel_area_ratio, resample
from .regrid.pixmap import check_celestial, pixel_map

if TYPE_CHECKING:  # imported where a CCDData is built (see api.py)
    from astropy.nddata import CCDData

__all__ = ["stack", "stack_to_file", "reproject", "choose_grid"]

log = logging.getLogger("skystack")

INTERPOLATIONS = ("bilinear", "nearest", "lanczos3", "lanczos4")
# A stack may also drizzle (skystack.drizzling); reproject only interpolates.
STACK_INTERPOLATIONS = (*INTERPOLATIONS, "drizzle")
CROPS = ("union", "intersection")


def check_interp(interp: str) -> None:
    """Raise a :class:`SkystackError` naming the choices unless ``interp`` is one of
    :data:`INTERPOLATIONS`."""
    _check_choice("interp", interp, INTERPOLATIONS)


def read_header_file(path: str | os.PathLike) -> fits.Header:
    """A header from a FITS file (its first HDU) or from a text file of 80-column cards."""
    path = os.fspath(path)
    try:
        if path.lower().endswith((".fits", ".fit", ".fts", ".fz")):
            return fits.getheader(path)
        return fits.Header.fromtextfile(path)
    except (OSError, ValueError) as exc:
        raise SkystackError(f"{path}: cannot read a FITS header ({exc})") from None


def choose_grid(frames, wcs_list, *, reference=None, grid_header=None, crop: str = "union") -> Grid:
    """The output grid: ``grid_header`` (a header or a FITS/text header file), else the WCS and
    shape of ``reference`` (a FITS file or header), else the optimal north-up grid covering the
    frames (``crop="union"``) or their common area (``"intersection"``)."""
    _check_choice("crop", crop, CROPS)
    if grid_header is not None and reference is not None:
        raise SkystackError("give --reference or --grid-header, not both")
    if grid_header is not None:
        header = grid_header
        if not isinstance(header, fits.Header):
            header = read_header_file(header)
        wcs, shape = grid_from_header(header)
        return Grid(wcs, shape)
    if reference is not None:
        wcs, shape = grid_from_reference(reference)
        return Grid(wcs, shape)
    wcs, shape = optimal_grid([(w, f.shape) for w, f in zip(wcs_list, frames)], crop=crop,
                              labels=[f.label for f in frames])
    return Grid(wcs, shape)


def _grid_header(header: fits.Header, grid: Grid) -> fits.Header:
    """Provenance header with the inputs' WCS replaced by the grid's (not its time keywords:
    the product's times are its frames', whatever the grid's WCS was made from)."""
    out = header.copy()
    for key in list(out.keys()):
        if key[:5] in ("CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT") or key[:2] in ("CD", "PC") \
                or key[:2] in ("A_", "B_") or key[:3] in ("AP_", "BP_") or \
                key in ("WCSAXES", "LONPOLE", "LATPOLE", "RADESYS", "EQUINOX", "MJDREF"):
            if key in out:
                del out[key]
    out.update(grid.header())
    return out


def stack(inputs, output: str | os.PathLike | None = None, *, reference=None,
          grid_header=None, crop: str = "union", interp: str = "bilinear",
          conserve_flux: bool = False, backend: str = "auto", overwrite: bool = False,
          progress: Callable[[int, int], None] | None = None, threads: int | None = None,
          max_tile_rows: int | None = None, align: str = "wcs",
          align_model: str = "similarity", max_fwhm: float | None = None,
          max_ellipticity: float | None = None, min_stars: int | None = None,
          best_fraction: float | None = None, cfa_as_mono: bool = False,
          pixfrac: float | None = None, drizzle_kernel: str | None = None,
          drizzle_scale: float | None = None,
          **options) -> CCDData:
    """Reproject ``inputs`` onto one grid and combine them: a deep co-add.

    Parameters
    ----------
    inputs
        FITS paths, globs, ``@lists``, HDUs or CCDData with celestial WCS (SIP honoured).
    output
        Optional FITS file (image, UNCERT, MASK, COUNT = coverage, EXPMAP = seconds per pixel).
    reference, grid_header, crop
        The output grid (see :func:`choose_grid`).
    interp
        ``"bilinear"`` (as ``reproject.reproject_interp(order="bilinear")``), ``"nearest"``,
        clamped ``"lanczos3"``/``"lanczos4"`` (:func:`skystack.regrid.interp.lanczos3`), or
        ``"drizzle"``: a drizzle co-add (:mod:`skystack.drizzling`; CPU only, no rejection,
        EXPMAP = drizzle's weight map).
    pixfrac, drizzle_kernel, drizzle_scale
        Drizzle's drop size in input pixels (default 1.0, as DrizzlePac), kernel (``square``
        default, ``turbo``, ``point``) and output pixel side in units of the grid's pixels
        (default 1; 0.5 = twice finer); with ``interp="drizzle"`` only.
    conserve_flux
        Multiply each resampled value by the output/input pixel-area ratio (surface brightness
        → flux per pixel).
    align, align_model
        ``"wcs"`` (each frame's WCS), ``"stars"`` (registration on a reference frame by its
        stars, ``align_model`` ``"shift"``, ``"similarity"``, ``"affine"``, ``"poly2"`` or
        ``"poly3"``; ``reference`` then names that frame, whose pixel grid becomes the output
        grid) or ``"auto"`` (``"wcs"`` if every frame has one); see
        :mod:`skystack.register.plan`.
    max_fwhm, max_ellipticity, min_stars, best_fraction
        Frame selection by measured stars (:func:`skystack.register.select_frames`); skipped
        frames are logged and listed in the header's HISTORY.
    cfa_as_mono
        Colour (Bayer, ``BAYERPAT``) frames are refused (resampling mixes their colours)
        unless this is true: they are then stacked as monochrome (``CFAMONO`` in the header).
    options
        Every option of :func:`skystack.combine` (method, reject, weights, scale, ...).

    A frame whose WCS cannot place it, or a union grid stretched by a far-off frame, is a
    :class:`SkystackError`; frames that miss a given grid are skipped (logged, HISTORY,
    NSKIPPED) and not counted: see :mod:`skystack.register.plan`.

    Returns
    -------
    CCDData
        With the grid's WCS (pixel-only when aligned by stars on a reference without a WCS:
        no sky coordinates), ``uncertainty`` (standard error), ``mask`` (no value kept),
        and attributes ``coverage`` (int32) and ``expmap`` (float32 seconds); ``registration``
        (a :class:`~skystack.register.RegistrationResult` or None) and ``selection``.
    """
    _check_choice("interp", interp, STACK_INTERPOLATIONS)
    check_threads(threads)  # before alignment, which already uses the threads
    drizzle = _drizzle(interp, pixfrac, drizzle_kernel, drizzle_scale, options)
    backend = _drizzle_backend(drizzle, backend)
    opts, frames = load_checked(inputs, output, overwrite, options)
    refuse_resampled_cfa(frames, cfa_as_mono)
    opts = _drizzle_options(drizzle, opts)
    from .register.plan import keep_frames_on_grid, plan_stack

    plan = plan_stack(frames, align=align, reference=reference, grid_header=grid_header,
                      crop=crop, model=align_model, max_fwhm=max_fwhm,
                      max_ellipticity=max_ellipticity, min_stars=min_stars,
                      best_fraction=best_fraction, hdu=opts.hdu, threads=threads)
    frames, wcs_list = plan.frames, plan.wcs_list
    grid = plan.grid or choose_grid(frames, wcs_list, reference=plan.grid_reference,
                                    grid_header=grid_header, crop=crop)
    grid, extra = _drizzle_grid(drizzle, grid, opts, plan.header)
    frames, wcs_list, extra = keep_frames_on_grid(frames, wcs_list, grid, extra)
    sink = ArraySink(grid.shape)
    header = InProcess().stack(
        frames, wcs_list, grid, opts, output,
        header_for=lambda describe: stack_header(frames, opts, describe, grid, interp,
                                                 conserve_flux, extra, wcs_list),
        interp=interp, conserve_flux=conserve_flux, backend=backend, overwrite=overwrite,
        progress=progress, threads=threads, max_tile_rows=max_tile_rows, sinks=[sink],
        drizzle=drizzle).header
    from astropy.nddata import CCDData, StdDevUncertainty

    unit = header_unit(header)
    mask = sink.mask if sink.mask is not None else sink.count == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ccd = CCDData(sink.image, unit=unit, uncertainty=StdDevUncertainty(sink.uncertainty),
                      mask=mask, meta=header, wcs=grid.output_wcs)
    ccd.coverage = sink.count
    ccd.expmap = sink.extras.get("EXPMAP")
    ccd.registration, ccd.selection = plan.result, plan.selection
    return ccd


def stack_to_file(inputs, output: str | os.PathLike, *, grid: Grid | None = None,
                  reference=None, grid_header=None, crop: str = "union",
                  interp: str = "bilinear", conserve_flux: bool = False, backend: str = "auto",
                  overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                  threads: int | None = None, max_tile_rows: int | None = None,
                  extra_header: fits.Header | None = None, cluster=None, align: str = "wcs",
                  align_model: str = "similarity", max_fwhm: float | None = None,
                  max_ellipticity: float | None = None, min_stars: int | None = None,
                  best_fraction: float | None = None, wcs_list: list | None = None,
                  cfa_as_mono: bool = False, pixfrac: float | None = None,
                  drizzle_kernel: str | None = None, drizzle_scale: float | None = None,
                  **options) -> str:
    """Like :func:`stack`, streaming the result to ``output`` without keeping it in memory.

    ``grid`` (a :class:`~skystack.stacking.Grid`) may be given directly instead of
    ``reference``/``grid_header``/``crop``; ``extra_header`` cards are added to the output
    header. ``cluster`` runs the tiles on Dask workers (as for
    :func:`skystack.combine_to_file`). ``align`` and the selection options as for
    :func:`stack`. ``wcs_list`` (one celestial WCS per input, e.g. from a registration made
    by the caller) replaces the inputs' own WCS and ``align``. ``cfa_as_mono``,
    ``interp="drizzle"`` and its options as for :func:`stack` (the drizzle scale applies to
    ``grid`` too). Returns the output path."""
    _check_choice("interp", interp, STACK_INTERPOLATIONS)
    check_threads(threads)  # before alignment, which already uses the threads
    drizzle = _drizzle(interp, pixfrac, drizzle_kernel, drizzle_scale, options)
    backend = _drizzle_backend(drizzle, backend)
    opts, frames = load_checked(inputs, output, overwrite, options)
    refuse_resampled_cfa(frames, cfa_as_mono)
    opts = _drizzle_options(drizzle, opts)
    if wcs_list is not None:
        if len(wcs_list) != len(frames):
            raise SkystackError(f"{len(wcs_list)} WCS given for {len(frames)} frames")
        plan = None
    else:
        from .register.plan import plan_stack

        plan = plan_stack(frames, align=align, reference=reference,
                          grid_header=None if grid is not None else grid_header, crop=crop,
                          model=align_model, max_fwhm=max_fwhm,
                          max_ellipticity=max_ellipticity, min_stars=min_stars,
                          best_fraction=best_fraction, hdu=opts.hdu, threads=threads)
        frames, wcs_list = plan.frames, plan.wcs_list
        extra_header = plan.merged_header(extra_header)
    if grid is None:
        grid = (plan.grid if plan is not None else None) or choose_grid(
            frames, wcs_list, reference=plan.grid_reference if plan is not None else reference,
            grid_header=grid_header, crop=crop)
    from .register.plan import keep_frames_on_grid

    grid, extra_header = _drizzle_grid(drizzle, grid, opts, extra_header)
    frames, wcs_list, extra_header = keep_frames_on_grid(frames, wcs_list, grid, extra_header)
    return executor_for(cluster).stack(
        frames, wcs_list, grid, opts, output,
        header_for=lambda describe: stack_header(frames, opts, describe, grid, interp,
                                                 conserve_flux, extra_header, wcs_list),
        interp=interp, conserve_flux=conserve_flux, backend=backend, overwrite=overwrite,
        progress=progress, threads=threads, max_tile_rows=max_tile_rows,
        **({"drizzle": drizzle} if drizzle is not None else {})).path


def _drizzle(interp: str, pixfrac, kernel, scale, options: dict):
    """Checked drizzle parameters (None unless ``interp == "drizzle"``), before any reading."""
    from .api import LOADING_OPTIONS, combine_options
    from .drizzling import drizzle_params

    combine = {k: v for k, v in options.items() if k not in LOADING_OPTIONS}
    return drizzle_params(interp, pixfrac, kernel, scale, combine_options(**combine))


def _drizzle_backend(drizzle, backend):
    """Drizzle runs on the CPU whatever the backend (skystack.drizzling): said in the log."""
    if drizzle is None or backend == "cpu":
        return backend
    if backend == "gpu":
        log.warning("--interp drizzle runs on the CPU (the drizzle package): --backend gpu "
                    "is not used for it")
    return "cpu"


def _drizzle_options(drizzle, opts):
    """A drizzle co-add's UNCERT is the weighted scatter (``auto`` resolves to it)."""
    return opts if drizzle is None else replace(opts, uncertainty="scatter")


def _drizzle_grid(drizzle, grid: Grid, opts, extra_header: fits.Header | None):
    """The drizzle's output grid (``grid`` rescaled) and header cards, or both unchanged."""
    if drizzle is None:
        return grid, extra_header
    from .drizzling import drizzle_header, scaled_grid

    header = fits.Header() if extra_header is None else extra_header.copy()
    header.extend(drizzle_header(drizzle, opts.weights.kind), update=True)
    return scaled_grid(grid, drizzle.scale), header


def stack_header(frames, opts, describe: str, grid: Grid, interp: str, conserve_flux: bool,
                 extra_header: fits.Header | None = None, wcs_list=None) -> fits.Header:
    """The header of a stack: provenance (``describe`` names the backend) with the grid's WCS,
    INTERP, CONSFLUX, BUNIT (``adu`` if the inputs give none) and ``extra_header`` cards;
    ``wcs_list``: the frames' WCS (star matching of ``--scale stars``)."""
    params = frame_params(frames, opts, wcs_list)
    header = _grid_header(build_header(frames, opts, describe, params), grid)
    if interp != "drizzle":  # drizzle's UNCERT is its own weighted scatter
        clip_cards(header, opts, params)  # UNCCLIP, beside UNCMETH
    mark_resampled_cfa(header)  # allowed only with cfa_as_mono (refuse_resampled_cfa)
    header["INTERP"] = (interp, "resampling onto the output grid")
    header["CONSFLUX"] = (bool(conserve_flux), "values scaled by pixel-area ratio")
    if "BUNIT" not in header:
        header["BUNIT"] = ("adu", "assumed: inputs give no BUNIT")
    cosmetic_cards(header, frames)
    if extra_header is not None:
        header.extend(extra_header, update=True)
    return header


def _target_grid(target) -> Grid:
    if isinstance(target, WCS):
        shape = target.array_shape or (target.pixel_shape[::-1] if target.pixel_shape else None)
        if shape is None:
            raise SkystackError("target WCS has no pixel shape: give a header with NAXIS1/2")
        return Grid(check_celestial(target, "target WCS"), tuple(int(s) for s in shape))
    if isinstance(target, fits.Header):
        return Grid(*grid_from_header(target))
    return Grid(*grid_from_reference(target))


def reproject(input, target, output: str | os.PathLike | None = None, *,
              interp: str = "bilinear", conserve_flux: bool = False, backend: str = "auto",
              overwrite: bool = False, hdu: int | str | None = None) -> CCDData:
    """Resample one image onto ``target``'s grid, like ``reproject.reproject_interp``.

    ``input`` is a path, an HDU, CCDData or an ``(array, WCS)`` pair; ``target`` a WCS with a
    pixel shape, a header (NAXIS1/2 + WCS) or a FITS file. Pixel centres are at integers
    (0-based); outside the input's footprint the value is NaN. Returns CCDData whose ``mask`` is
    True outside the footprint and with a ``footprint`` attribute (1.0 inside, 0.0 outside);
    ``output`` gets the image (float32) and a FOOTPRINT extension (uint8).
    """
    _check_choice("interp", interp, INTERPOLATIONS)
    if output is not None:
        check_output_path(output, overwrite)
    if isinstance(input, tuple) and len(input) == 2:
        data, wcs = input
        header = wcs.to_header(relax=True)
        frames = load_frames([np.asarray(data, np.float32)])
        in_wcs = check_celestial(wcs, "input WCS")
        label = "array"
    else:
        frames = load_frames([input], hdu=hdu)
        in_wcs = frame_wcs(frames[0])
        header = frames[0].header
        label = frames[0].label
    if output is not None:
        refuse_input_as_output(frames, output)
    get_backend(backend).close()  # validates --backend; resampling runs on the CPU for now
    grid = _target_grid(target)
    frame = frames[0]
    image = np.empty((frame.shape[0], frame.shape[1]), np.float32)
    frame.source.read(Tile(0, frame.shape[0], 0, frame.shape[1]), image)
    out = np.empty(grid.shape, np.float32)
    band = max(1, (1 << 22) // max(1, grid.shape[1]))
    for r0 in range(0, grid.shape[0], band):
        rows = slice(r0, min(grid.shape[0], r0 + band))
        x, y = pixel_map(in_wcs, grid.wcs, grid.shape, rows=rows)
        values = resample(image, x, y, interp)
        if conserve_flux:
            values *= pixel_area_ratio(x, y).astype(np.float32)
        out[rows] = values
    footprint = np.isfinite(out)
    hdr = fits.Header()
    for card in header.cards:
        if card.keyword in ("BUNIT", "OBJECT", "FILTER", "EXPTIME", "DATE-OBS", "TELESCOP",
                            "INSTRUME"):
            hdr.append(card)
    hdr.update(wcs_cards(grid.wcs))
    hdr["INTERP"] = (interp, "resampling onto the output grid")
    hdr["HISTORY"] = f"skystack reproject of {label}"
    if output is not None:
        _write_reprojected(os.fspath(output), out, footprint, hdr, overwrite)
    from astropy import units as u
    from astropy.nddata import CCDData

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ccd = CCDData(out, unit=u.Unit(hdr.get("BUNIT", "adu"), parse_strict="silent"),
                      mask=~footprint, meta=hdr, wcs=grid.wcs)
    ccd.footprint = footprint.astype(np.float64)
    return ccd


def _write_reprojected(path: str, image, footprint, header, overwrite: bool) -> None:
    hdul = fits.HDUList([fits.PrimaryHDU(image, header=header),
                         fits.ImageHDU(footprint.astype(np.uint8), name="FOOTPRINT")])
    folder = os.path.dirname(os.path.abspath(path))
    with output_lock(path):
        remove_leftovers(folder, temporary_pattern(os.path.basename(path)).match)
        with atomic_write(path, overwrite=overwrite) as tmp:
            hdul.writeto(tmp, overwrite=True)
