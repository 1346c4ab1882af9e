"""Stacks of colour (one-shot-colour, Bayer) frames: debayer, register on green, stack R, G, B.

:func:`stack_debayered` demosaics each frame (:func:`skystack.colour.debayer`, after any
calibration the frames carry), registers the *green* planes (twice the photosites of red or
blue: the best-sampled, highest signal-to-noise plane) by their WCS or their stars exactly as
:func:`skystack.stack` would, and then resamples and combines each of the R, G and B planes
with that one registration, that one grid and the same combine options. Frame selection
(``max_fwhm`` …) is decided once, on green, so the three planes hold the same frames.

Product: three FITS files next to each other, ``<stem>_R.fits``, ``<stem>_G.fits``,
``<stem>_B.fits`` for ``output = <stem>.fits``, each an ordinary skystack stack (image,
UNCERT, MASK, COUNT, EXPMAP; COUNT and UNCERT are per plane: a NaN photosite is missing in
its own colour only) with ``CFACHAN`` (R, G or B) and ``DEBAYER`` (the method) in the header
and the Bayer cards removed. Three files, like the per-filter stacks of ``skystack night``
that its RGB composite is made from, rather than a cube that most tools open as one plane.
Normalisation options (``scale``/``zero``) are computed per plane, from that plane's pixels.

Memory: the debayered planes of every frame are held in memory (3 x 4 bytes per pixel per
frame); this path is meant for the frames of one object, not for frames larger than RAM.
"""

from __future__ import annotations

import os

import numpy as np
from astropy.io import fits

from .colour.cfa import CFA_KEYS, CHANNELS, common_cfa
from .colour.debayer import DEBAYER_METHODS, debayer, plane_cards
from .core.frame import Frame
from .core.tiles import Tile
from .errors import SkystackError
from .io.inputs import header_with_cards, load_frames
from .io.reader import ArraySource
from .io.writer import check_output_path

__all__ = ["stack_debayered", "plane_paths", "frames_are_cfa"]


def plane_paths(output: str | os.PathLike) -> list[str]:
    """``[<stem>_R.fits, <stem>_G.fits, <stem>_B.fits]`` for ``output`` ``<stem>.fits``
    (``.fit``, ``.fts`` and ``.fits.fz`` kept as the extension, written uncompressed)."""
    path = os.fspath(output)
    for ext in (".fits.fz", ".fits", ".fit", ".fts"):
        if path.lower().endswith(ext):
            stem = path[: -len(ext)]
            ext = ".fits" if ext == ".fits.fz" else path[len(stem):]
            break
    else:
        stem, ext = path, ".fits"
    return [f"{stem}_{ch}{ext}" for ch in CHANNELS]


def frames_are_cfa(inputs, hdu=None) -> bool:
    """Whether ``inputs`` (as for :func:`skystack.stack`) are colour (Bayer) frames; frames
    mixing colour and monochrome data are a :class:`SkystackError`. Reads headers only."""
    return common_cfa(load_frames(inputs, hdu=hdu)) is not None


def _debayered_planes(frames: list[Frame], method: str) -> list[list[Frame]]:
    """Per channel (R, G, B), one in-memory frame per input: its debayered plane with its
    header minus the Bayer cards."""
    pattern = common_cfa(frames)
    if pattern is None:
        raise SkystackError(f"{frames[0].label}: not a colour (Bayer) frame: no BAYERPAT, "
                            "nothing to debayer")
    planes: list[list[Frame]] = [[], [], []]
    for frame in frames:
        mosaic = np.empty(frame.shape, np.float32)
        frame.source.read(Tile(0, frame.shape[0], 0, frame.shape[1]), mosaic)
        rgb = debayer(mosaic, pattern.layout(frame.shape), method)
        header = frame.header.copy()
        for key in CFA_KEYS:
            header.remove(key, ignore_missing=True)
        for k in range(3):
            planes[k].append(Frame(frame.label, frame.shape, header, ArraySource(rgb[k])))
    return planes


def stack_debayered(inputs, output: str | os.PathLike, *,
                    debayer_method: str = "bilinear",
                    reference=None, grid_header=None, crop: str = "union",
                    interp: str = "bilinear", conserve_flux: bool = False,
                    backend: str = "auto", overwrite: bool = False, progress=None,
                    threads: int | None = None, align: str = "wcs",
                    align_model: str = "similarity", max_fwhm: float | None = None,
                    max_ellipticity: float | None = None, min_stars: int | None = None,
                    best_fraction: float | None = None,
                    extra_header: fits.Header | None = None, log=None,
                    pixfrac: float | None = None, drizzle_kernel: str | None = None,
                    drizzle_scale: float | None = None, **options) -> list[str]:
    """Debayer colour frames and stack them into R, G and B stacks (see module docstring).

    ``debayer_method``: :data:`~skystack.colour.debayer.DEBAYER_METHODS` (``bilinear`` or
    ``mhc``).
    The other arguments are those of :func:`skystack.stack` (``hdu`` among ``options``).
    Every output is checked before any pixel is read. Returns the three paths (R, G, B)."""
    from .api import LOADING_OPTIONS, load_checked
    from .api_reproject import choose_grid, stack_to_file
    from .register.plan import plan_stack

    if debayer_method not in DEBAYER_METHODS:
        raise SkystackError(f"invalid --debayer {debayer_method!r}: choose from "
                            f"{', '.join(DEBAYER_METHODS)}")
    paths = plane_paths(output)
    for path in paths:
        check_output_path(path, overwrite)
    # Selection, saturation and cosmic rays act on the raw mosaic (the levels are raw ADU);
    # each plane's header copy carries what was done (SATLEVEL, CRMASKED) into its product.
    opts, frames = load_checked(inputs, None, overwrite, options)
    options = {k: v for k, v in options.items() if k not in LOADING_OPTIONS}
    if opts.selection:
        extra_header = header_with_cards(extra_header, opts.selection)
    for frame in frames:
        if frame.path is not None and any(os.path.exists(p) and os.path.samefile(frame.path, p)
                                          for p in paths):
            raise SkystackError(f"{frame.path}: output would replace an input file")
    planes = _debayered_planes(frames, debayer_method)
    green = planes[1]
    plan = plan_stack(green, align=align, reference=reference, grid_header=grid_header,
                      crop=crop, model=align_model, max_fwhm=max_fwhm,
                      max_ellipticity=max_ellipticity, min_stars=min_stars,
                      best_fraction=best_fraction, hdu=opts.hdu, threads=threads)
    kept = [next(k for k, f in enumerate(green) if f is g) for g in plan.frames]
    grid = plan.grid or choose_grid(plan.frames, plan.wcs_list, reference=plan.grid_reference,
                                    grid_header=grid_header, crop=crop)
    for channel, plane_frames, path in zip(CHANNELS, planes, paths, strict=True):
        header = plan.merged_header(extra_header)
        for key, value, comment in plane_cards(channel, debayer_method):
            header[key] = (value, comment)
        header["CFAREG"] = ("G", "registration and frame selection made on this plane")
        stack_to_file([plane_frames[k] for k in kept], path, grid=grid,
                      wcs_list=list(plan.wcs_list), interp=interp,
                      conserve_flux=conserve_flux, backend=backend, overwrite=overwrite,
                      progress=progress, threads=threads, extra_header=header,
                      pixfrac=pixfrac, drizzle_kernel=drizzle_kernel,
                      drizzle_scale=drizzle_scale, **options)
        if log is not None:
            log(f"wrote {path}")
    return paths
