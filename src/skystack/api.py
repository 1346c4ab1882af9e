"""The public Python API; option names mirror the command line's, in snake_case."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from astropy.io import fits

from .clip_efficiency import clip_cards
from .config import DEFAULTS, CombineOptions, Weights
from .cosmetics.cosmic_rays import clean_frames, split_options
from .cosmetics.provenance import cosmetic_cards
from .errors import SkystackError
from .executor import InProcess, executor_for
from .io.inputs import header_with_cards, load_selected_frames, select_files
from .io.provenance import build_header
from .io.saturation import check_level, mask_saturated
from .io.selection import selection_from
from .io.sigma import resolve_uncertainty
from .io.units import common_unit, unit_key
from .io.writer import check_output_path
from .normalization import frame_params
from .pipeline import ArraySink

if TYPE_CHECKING:  # astropy.nddata costs ~0.25 s to import: only when a CCDData is returned
    from astropy.nddata import CCDData

__all__ = ["combine", "combine_mef_to_file", "combine_options"]


def combine_options(*, method: str = DEFAULTS.method, reject: str = DEFAULTS.reject,
                    center: str = DEFAULTS.center, spread: str = DEFAULTS.spread,
                    sigma: float | None = None, sigma_low: float = DEFAULTS.sigma_low,
                    sigma_high: float = DEFAULTS.sigma_high, maxiters: int = DEFAULTS.maxiters,
                    nlow: int = DEFAULTS.nlow, nhigh: int = DEFAULTS.nhigh,
                    low: float | None = DEFAULTS.range_low,
                    high: float | None = DEFAULTS.range_high, plow: float = DEFAULTS.plow,
                    phigh: float = DEFAULTS.phigh,
                    pctclip_low: float = DEFAULTS.pctclip_low,
                    pctclip_high: float = DEFAULTS.pctclip_high,
                    weights: str | Sequence[float] | None = None,
                    scale: str = DEFAULTS.scale, zero: str = DEFAULTS.zero,
                    hdu: int | str | None = DEFAULTS.hdu,
                    mem_limit: int | str | None = DEFAULTS.mem_limit,
                    uncertainty: str = DEFAULTS.uncertainty,
                    esd_alpha: float = DEFAULTS.esd_alpha,
                    esd_max_frac: float = DEFAULTS.esd_max_frac,
                    gain: float | None = DEFAULTS.gain, rdnoise: float | None = DEFAULTS.rdnoise,
                    snoise: float = DEFAULTS.snoise,
                    pclip: float = DEFAULTS.pclip) -> CombineOptions:
    """Build validated :class:`CombineOptions` from keyword options (``sigma`` sets both sides;
    the defaults are :data:`skystack.config.DEFAULTS`)."""
    if sigma is not None:
        sigma_low = sigma_high = sigma
    return CombineOptions(
        method=method, reject=reject, center=center, spread=spread, sigma_low=sigma_low,
        sigma_high=sigma_high, maxiters=maxiters, nlow=nlow, nhigh=nhigh, range_low=low,
        range_high=high, plow=plow, phigh=phigh, pctclip_low=pctclip_low,
        pctclip_high=pctclip_high, weights=Weights.parse(weights), scale=scale,
        zero=zero, hdu=hdu, mem_limit=mem_limit, uncertainty=uncertainty, esd_alpha=esd_alpha,
        esd_max_frac=esd_max_frac, gain=gain, rdnoise=rdnoise, snoise=snoise,
        pclip=pclip).validated()


def combine(inputs, output: str | os.PathLike | None = None, *, backend: str = "auto",
            overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
            threads: int | None = None, max_tile_rows: int | None = None,
            **options) -> CCDData:
    """Combine a stack of images pixel by pixel along the frame axis.

    Parameters
    ----------
    inputs
        Paths, glob patterns, ``@list.txt`` files, astropy HDUs, ``CCDData`` or 2-D arrays (or
        one 3-D array, frames along axis 0), or a ccdproc ``ImageFileCollection`` (its files,
        e.g. after ``.filter(imagetyp="dark")``; or pass ``files_filtered(include_path=True)``).
        All frames must have the same shape.
    output
        If given, the FITS file to write (primary image, ``UNCERT``, ``MASK``, ``COUNT``).
    backend
        ``"auto"``, ``"cpu"`` or ``"gpu"``.
    overwrite
        Replace an existing ``output``.
    progress
        Called as ``progress(done_tiles, total_tiles)``.
    threads
        CPU threads (default: all available).
    max_tile_rows
        Cap on rows per tile (the memory budget sets it otherwise).
    **options
        The combine options of :func:`combine_options`: ``method`` (mean, median, sum, min, max),
        ``reject`` (none, sigclip, minmax, range, percentile, winsor, linfit, pctclip, esd,
        ccdclip, pclip), ``center``, ``spread``, ``sigma``, ``sigma_low``, ``sigma_high``,
        ``maxiters``, ``nlow``, ``nhigh``, ``low``, ``high``, ``plow``, ``phigh``,
        ``pctclip_low``, ``pctclip_high``, ``weights``, ``scale``, ``zero``, ``hdu``,
        ``mem_limit``, ``uncertainty`` (``auto``, ``scatter``, ``model``, ``propagate``: how
        ``UNCERT`` is computed, see :mod:`skystack.uncertainty`; the header's ``UNCMETH`` says
        which), ``esd_alpha``, ``esd_max_frac`` (esd), ``gain``, ``rdnoise``, ``snoise``
        (ccdclip; gain e-/ADU and read noise e- of the raw values, from GAIN/RDNOISE when not
        given), ``pclip`` (see :mod:`skystack.backends.cpu.rejections_stat`),
        ``saturation`` (raw ADU at/above which pixels are masked; default: each raw frame's
        ``SATURATE``, see :mod:`skystack.io.saturation`; header ``SATMASK``), ``cosmic_rays``
        (``none`` or ``lacosmic``: each frame's cosmic rays masked before combining, with
        ``cr_sigclip`` and ``cr_objlim``; see :mod:`skystack.cosmetics.cosmic_rays`);
        ``where`` (a header selection such as ``"IMAGETYP=DARK and EXPTIME=60"``) and
        ``exclude`` (a file listing frames to leave out): :mod:`skystack.io.selection`.

    Returns
    -------
    CCDData
        The combined image (float32; NaN where no valid value), ``uncertainty`` the standard
        error of each combined value (``StdDevUncertainty``; ``UNCMETH`` in ``meta`` says
        how), ``mask`` True where no valid value existed, ``meta`` the provenance header, and
        the attribute ``count`` (int32 array): the number of frames used per pixel.

    Notes
    -----
    Pixel values that are NaN, infinite, BLANK or masked are ignored. See the README for the
    exact semantics of each method, of the rejections and of the uncertainty.
    """
    if mef_requested(options.get("hdu")):
        raise SkystackError("--hdu all writes a multi-extension file: use combine_to_file")
    opts, frames = load_checked(inputs, output, overwrite, options)
    sink = ArraySink(frames[0].shape)
    product = InProcess().combine(
        frames, opts, output, header_for=lambda describe: combine_header(frames, opts, describe),
        backend=backend, overwrite=overwrite, progress=progress, threads=threads,
        max_tile_rows=max_tile_rows, sinks=[sink])
    return _to_ccddata(sink, product.header)


def combine_to_file(inputs, output: str | os.PathLike, *, backend: str = "auto",
                    overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                    threads: int | None = None, max_tile_rows: int | None = None,
                    extra_header: fits.Header | None = None, cluster=None, **options) -> str:
    """Like :func:`combine` with an output file, but streams to disk without keeping the result
    in memory (the command line's path for images larger than RAM). Returns the output path.

    ``extra_header`` cards are added to (or replace those of) the provenance header.

    ``cluster`` runs the tiles on Dask workers instead of in-process: a ``distributed.Client``,
    a scheduler address (``"tcp://host:8786"``) or a number of local worker processes; inputs
    and output must be on storage every worker sees (see :mod:`skystack.cluster`).

    ``hdu="all"`` combines multi-extension inputs CCD by CCD into a multi-extension product
    (:func:`combine_mef_to_file`; in process only)."""
    if mef_requested(options.get("hdu"), cluster):
        return combine_mef_to_file(inputs, output, backend=backend, overwrite=overwrite,
                                   progress=progress, threads=threads,
                                   max_tile_rows=max_tile_rows, extra_header=extra_header,
                                   **options)
    executor = executor_for(cluster)
    opts, frames = load_checked(inputs, output, overwrite, options)
    return executor.combine(
        frames, opts, output,
        header_for=lambda describe: combine_header(frames, opts, describe, extra_header),
        backend=backend, overwrite=overwrite, progress=progress, threads=threads,
        max_tile_rows=max_tile_rows).path


def combine_mef_to_file(inputs, output: str | os.PathLike, *,
                        hdus: Sequence[int | str] | None = None, backend: str = "auto",
                        overwrite: bool = False,
                        progress: Callable[[int, int], None] | None = None,
                        threads: int | None = None, max_tile_rows: int | None = None,
                        extra_header: fits.Header | None = None,
                        handle_limit: int | None = None, **options) -> str:
    """Combine multi-extension (mosaic) FITS files CCD by CCD into one multi-extension product
    (``skystack combine --hdu all``); returns the output path.

    ``inputs``: paths, globs or ``@lists`` of MEF exposures (plain or ``.fits.fz``) with the same
    image extensions (matched by EXTNAME, else by position) of the same shapes. ``hdus``: only
    these CCDs (EXTNAMEs, or HDU indexes of the first input), in this order (default: all, in
    the first input's order). ``extra_header``: cards for the primary header. ``handle_limit``:
    most files open at once (default: from the descriptor limit). ``**options``: those of
    :func:`combine_options` (``hdu`` ignored); ``mem_limit`` bounds each CCD's combine, the
    CCDs run one after the other. Product layout and header conventions:
    :mod:`skystack.io.mef_writer`; matching and errors: :mod:`skystack.io.mef`."""
    from .api_mef import combine_ccds

    cosmic, options = split_options(options)
    if cosmic.active:
        raise SkystackError("--cosmic-rays is not available with --hdu all (combine the CCDs "
                            "one --hdu at a time)")
    if options.pop("saturation", None) is not None:
        raise SkystackError("--saturation is not available with --hdu all (combine the CCDs "
                            "one --hdu at a time)")
    options = dict(options)
    selection = selection_from(options.pop("where", None), options.pop("exclude", None))
    if selection is not None:  # whole exposures kept or not, by their primary header
        inputs, cards = select_files(inputs, selection)
        extra_header = header_with_cards(extra_header, cards)
    opts = combine_options(**{k: v for k, v in options.items() if k != "hdu"})
    return combine_ccds(inputs, output, opts, header_for=combine_header,
                        refuse_output=refuse_input_as_output, hdus=hdus, backend=backend,
                        overwrite=overwrite, progress=progress, threads=threads,
                        max_tile_rows=max_tile_rows, extra_header=extra_header,
                        handle_limit=handle_limit)


def mef_requested(hdu, cluster=None) -> bool:
    """Whether ``hdu`` is ``"all"`` (every CCD of multi-extension inputs); with ``cluster``
    a one-line error (the CCD-by-CCD combine runs in process)."""
    if not (isinstance(hdu, str) and hdu.strip().lower() == "all"):
        return False
    if cluster is not None:
        raise SkystackError("--hdu all runs in this process: drop --workers/--scheduler")
    return True


def combine_header(frames, opts, describe: str,
                   extra_header: fits.Header | None = None) -> fits.Header:
    """The header of a combine: provenance (``describe`` names the backend), BUNIT (``adu`` if
    the inputs give none) and ``extra_header`` cards (added, or replacing those there)."""
    params = frame_params(frames, opts)
    header = build_header(frames, opts, describe, params)
    clip_cards(header, opts, params)  # UNCCLIP, beside UNCMETH
    if "BUNIT" not in header:
        header["BUNIT"] = ("adu", "assumed: inputs give no BUNIT")
    cosmetic_cards(header, frames)
    if extra_header is not None:
        header.extend(extra_header, update=True)
    return header


#: Options that act on the frames as they are loaded (load_checked), not on the combine.
LOADING_OPTIONS = ("where", "exclude", "saturation", "cosmic_rays", "cr_sigclip", "cr_objlim")


def load_checked(inputs, output, overwrite: bool, options: dict):
    """Validated options and loaded frames, with the output path checked before any reading
    and refused if it names an input. ``options["saturation"]`` (raw ADU, else each raw
    frame's SATURATE) masks saturated pixels (:mod:`skystack.io.saturation`); ``where`` and
    ``exclude`` select the frames (:mod:`skystack.io.selection`)."""
    options = dict(options)
    saturation = check_level(options.pop("saturation", None))
    selection = selection_from(options.pop("where", None), options.pop("exclude", None))
    cosmic, options = split_options(options)
    opts = combine_options(**options)
    if output is not None:
        check_output_path(output, overwrite)
    frames, cards = load_selected_frames(inputs, hdu=opts.hdu, selection=selection)
    if cards:  # recorded in the product's header (skystack.io.provenance)
        opts = replace(opts, selection=cards)
    frames = mask_saturated(frames, saturation)
    frames = clean_frames(frames, cosmic)
    common_unit(frames)  # mixed units are refused before any work
    opts = resolve_uncertainty(frames, opts)
    if output is not None:
        refuse_input_as_output(frames, output)
    return opts, frames


def refuse_input_as_output(frames, output) -> None:
    """A one-line error when ``output`` is one of the frames' files (it would be replaced)."""
    if not os.path.exists(output):
        return
    for f in frames:
        if f.path is not None and os.path.samefile(f.path, output):
            raise SkystackError(f"{output}: output would replace an input file")


def header_unit(header: fits.Header):
    """The astropy unit of a header's BUNIT (ADU when missing or not understood)."""
    from astropy import units as u

    unit = unit_key(header.get("BUNIT"))
    return unit if isinstance(unit, u.UnitBase) else u.adu


def _to_ccddata(sink: ArraySink, header: fits.Header) -> CCDData:
    from astropy.nddata import CCDData, StdDevUncertainty

    unit = header_unit(header)
    ccd = CCDData(sink.image, unit=unit, uncertainty=StdDevUncertainty(sink.uncertainty),
                  mask=sink.count == 0, meta=header)
    ccd.count = sink.count
    return ccd
