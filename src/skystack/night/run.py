"""``skystack night RAW_DIR -o OUT_DIR``: masters, then one aligned stack per object and filter.

Plan (everything is decided, and every existing product checked, before any pixel is read):

1. :func:`skystack.night.scan.scan` reads every header once and classifies the frames; files
   that cannot be read or classified are reported and skipped.
2. Frames are grouped by *camera*: binning and calibrated shape (after ``TRIMSEC``). Masters are
   per camera: ``bias``, ``dark_<T>s`` per exposure time, ``flat_<FILTER>`` per filter and
   ``badpix`` (see :mod:`skystack.night.masters`). When a night holds several cameras the names
   get a ``_<bx>x<by>_<rows>x<cols>`` suffix.
3. Lights are calibrated inside the tile loop (:mod:`skystack.night.calibrate`): bias, the dark
   of the same exposure time or else the longest one scaled by exposure time, the flat of the
   light's filter, bad pixels masked. Missing masters are skipped with a note, never fatal.
   A camera without biases has darks that hold the bias level: they are never scaled, the
   dark of the closest exposure time is subtracted as it is (see
   :func:`skystack.night.masters.choose_dark`), with a note.
   Lights and darks whose EXPTIME (or EXPOSURE) is present but unusable (not a number, not
   positive, or above 1e6 s: see :mod:`skystack.exposure`), and such flats when there are
   darks to scale to them, are skipped with the reason; a frame without the keyword is kept
   (its dark cannot be matched or scaled: noted).
4. One stack per (OBJECT, FILTER, camera), reprojected and combined with outlier rejection
   (sigma clipping about the median by default; any combine option can be given). Alignment
   (``align``): by the lights' WCS onto the grid of the object's first light (by DATE-OBS)
   whose pointing agrees with its other lights' (one with a wrong CRVAL is passed over), or
   by stars (:mod:`skystack.register`): all lights of an object, every filter, are measured
   and registered on its sharpest light with the most stars, whose pixel grid all the
   object's stacks share. ``auto`` (the default) uses stars for an object where any light has
   no celestial WCS. Frame selection (``max_fwhm``, ``max_ellipticity``, ``min_stars``,
   ``best_fraction``, per object and filter) measures the stars in either mode; measurements,
   registrations and decisions go into the summary and the table.
   Lights whose WCS cannot place them (aligned by WCS) or whose footprint misses the grid are
   skipped with the reason; stacks aligned on a light without WCS get a pixel-only WCS (no sky
   coordinates: ``sky_coordinates`` false in the summary).
5. PNG previews (auto-stretch), an RGB composite for objects with three or more filters, and
   ``summary.json`` plus a printed table: every frame, its role, group, the masters used, and
   whether it was used or why not.

Re-running into the same OUT_DIR reuses every product whose recipe is unchanged (see
:mod:`skystack.night.products`).

Where each step lives: planning, from headers to typed jobs (:mod:`skystack.night.plan`);
building masters (:mod:`skystack.night.build`) and stacks (:mod:`skystack.night.stacks`,
aligned and selected by :mod:`skystack.register.plan`, as ``skystack stack`` is);
``summary.json`` and the table (:mod:`skystack.night.summary`). :func:`run_night` wires them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

from ..config import NIGHT_STACK_OPTIONS, check_threads
from ..errors import SkystackError
from ..io.lock import output_lock
from .products import remove_night_leftovers
from .scan import check_raw_dir
from .summary import (
    FrameRecord,
    NightResult,
    Product,
    format_night_table,
    night_result,
    object_alignment,
    write_summary,
)

__all__ = ["run_night", "NightResult", "STACK_OPTIONS", "FrameRecord", "Product",
           "format_night_table"]

STACK_OPTIONS = NIGHT_STACK_OPTIONS  # the stacks' combine options (see config)


def run_night(raw_dir, out_dir: str | os.PathLike, *, backend: str = "auto",
              overwrite: bool = False, overscan: str | None = None, trim: str | None = None,
              save_calibrated: bool = False, previews: bool = True,
              threads: int | None = None, mem_limit=None,
              log: Callable[[str], None] | None = None, cluster=None,
              align: str = "auto", align_model: str = "similarity",
              max_fwhm: float | None = None, max_ellipticity: float | None = None,
              min_stars: int | None = None, best_fraction: float | None = None,
              gain_normalise: bool = False, tiles=None, saturation: float | None = None,
              cosmetic: str = "mask", where: str | None = None,
              exclude: str | os.PathLike | None = None, progress: bool = False,
              debayer: str = "bilinear", **stack_options) -> NightResult:
    """Reduce a night of raw frames (see module docstring).

    Parameters
    ----------
    raw_dir
        A directory of FITS files (or a list of paths/globs).
    out_dir
        Created if missing; receives ``masters/``, ``stacks/``, ``previews/`` and
        ``summary.json``.
    backend, threads, mem_limit
        As for :func:`skystack.combine`; one backend for every product.
    overwrite
        Rebuild products that exist with another recipe (otherwise such a product stops the
        night before any work); products with the same recipe are always reused.
    overscan, trim
        FITS sections ``[x1:x2,y1:y2]`` overriding the headers' ``BIASSEC`` / ``TRIMSEC``.
    save_calibrated
        Also write each calibrated light (float32 ADU) to ``out_dir/calibrated/``.
    previews
        Write PNG previews and RGB composites.
    align, align_model
        ``"auto"`` (default): per object, the lights' WCS when every light of the object has a
        celestial one, else their stars; ``"wcs"``; ``"stars"`` (see module docstring).
        ``align_model``: the transform fitted per frame (:data:`skystack.register.MODELS`).
    max_fwhm, max_ellipticity, min_stars, best_fraction
        Frame selection per stack (median stellar FWHM in pixels, median ellipticity
        1 - b/a, number of stars, sharpest fraction kept); None: no selection.
    gain_normalise
        Multiply each calibrated light by its (CCD's) ``GAIN`` so that stacks are in electrons
        (:mod:`skystack.night.ccds`); a light without a positive GAIN is skipped with the reason.
    saturation
        Raw ADU at/above which pixels of every raw frame are masked (NaN) before calibration;
        None: each frame's SATURATE keyword, if any (:mod:`skystack.io.saturation`).
    cosmetic
        ``"mask"`` (default: the lights' bad pixels are NaN, taken from the other frames) or
        ``"interpolate"`` (from their good neighbours, :mod:`skystack.cosmetics.interpolate`;
        interpolated values are not measurements, hence not the default).
    tiles
        A :class:`~skystack.regrid.skytiles.SkyTiling` or a list of sky tiles
        (:func:`skystack.coadd_tiles.tiles_from_options`): the lights are co-added on the tiles
        they touch, per filter, instead of one stack per object (:mod:`skystack.night.tiles`).
    cluster
        Run every master and stack on Dask workers (a ``distributed.Client``, a scheduler
        address or a number of local workers, as for :func:`skystack.combine_to_file`): one
        task graph per product, masters first; OUT_DIR must be on storage the workers see.
    where, exclude
        Frame selection on every raw frame (:mod:`skystack.io.selection`), in ``summary.json``.
    progress
        A per-product progress line on stderr when it is a terminal
        (:class:`skystack.progress.NightProgress`).
    debayer
        Demosaicing of colour (Bayer) lights: ``"bilinear"`` (default) or ``"mhc"``
        (:data:`skystack.colour.debayer.DEBAYER_METHODS`); in the colour stacks' recipe.
    **stack_options
        Combine options for the stacks (default :data:`STACK_OPTIONS`), and
        ``cosmic_rays="lacosmic"`` (``cr_sigclip``, ``cr_objlim``): each calibrated light's
        cosmic rays masked before its stack (:mod:`skystack.cosmetics.cosmic_rays`).
        ``interp="drizzle"`` with ``pixfrac``, ``drizzle_kernel``, ``drizzle_scale`` drizzles
        the stacks; without a ``reject`` given they are then made with ``reject="none"``
        (logged, HISTORY in the stacks: :mod:`skystack.night.options`).
    """
    from ..api_reproject import check_interp
    from ..cosmetics.cosmic_rays import split_options
    from ..cosmetics.interpolate import COSMETIC_MODES
    from ..io.selection import selection_from
    from .options import check_debayer, drizzle_stack_options

    t0 = time.perf_counter()
    out = os.fspath(out_dir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise SkystackError(f"{out}: exists and is not a directory")
    check_raw_dir(raw_dir)
    check_threads(threads)
    # Cosmic rays: per light, before its stack (skystack.cosmetics.cosmic_rays); left out of
    # the stacks' options (and fingerprints) when not asked for.
    cosmic, rest = split_options(stack_options)
    stack_options = {**rest, **(dict(cosmic_rays=cosmic.method, cr_sigclip=cosmic.sigclip,
                                     cr_objlim=cosmic.objlim) if cosmic.active else {})}
    # interp (resampling) travels with the stack options into stack_to_file and fingerprints;
    # the default is left out, so that products made before the option existed stay fresh.
    if stack_options.get("interp") == "bilinear":
        del stack_options["interp"]
    # Drizzle options resolved (or removed), reject none by default with drizzle; the combine
    # options are validated there, before any work.
    stack_options, stack_history = drizzle_stack_options(stack_options, STACK_OPTIONS,
                                                         log or (lambda s: None))
    if stack_options.get("interp") != "drizzle":
        check_interp(stack_options.get("interp", "bilinear"))
    check_debayer(debayer)
    from ..register import MODELS
    from ..register.align import select_frames

    if cosmetic not in COSMETIC_MODES:
        raise SkystackError(f"invalid --cosmetic {cosmetic!r}: choose from "
                            f"{', '.join(COSMETIC_MODES)}")
    if align not in ("auto", "wcs", "stars"):
        raise SkystackError(f"invalid --align {align!r}: choose from auto, wcs, stars")
    if align_model not in MODELS:
        raise SkystackError(f"invalid --align-model {align_model!r}: choose from "
                            f"{', '.join(MODELS)}")
    selection = dict(max_fwhm=max_fwhm, max_ellipticity=max_ellipticity, min_stars=min_stars,
                     best_fraction=best_fraction)
    select_frames([], **selection)  # validates the thresholds
    inputs_selection = selection_from(where, exclude)  # a bad --where fails before any work
    created = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    try:
        with output_lock(out):  # one night at a time in OUT_DIR
            return _run_locked(raw_dir, out, t0, cluster, dict(
                backend=backend, overwrite=overwrite, stack_options=stack_options,
                overscan=overscan, trim=trim, save_calibrated=save_calibrated,
                previews=previews, threads=threads, mem_limit=mem_limit,
                log=log or (lambda s: None), align=align, align_model=align_model,
                selection=selection, gain_normalise=gain_normalise, tiles=tiles,
                saturation=saturation, cosmetic=cosmetic,
                inputs_selection=inputs_selection, progress=progress, debayer=debayer,
                stack_history=stack_history))
    except SkystackError:
        if created:  # refused before writing anything: leave no empty OUT_DIR behind
            with contextlib.suppress(OSError):
                os.rmdir(out)
        raise


def _run_locked(raw_dir, out: str, t0: float, cluster, options: dict) -> NightResult:
    """The night, holding OUT_DIR's lock: plan, remove what a killed run left, build."""
    from .build import NightBuild
    from .plan import plan_night
    from .scan import scan

    log = options["log"]
    scanned = scan(raw_dir, options["inputs_selection"])
    plan = plan_night(scanned, out, overscan=options["overscan"], trim=options["trim"],
                      save_calibrated=options["save_calibrated"],
                      saturation=options["saturation"])
    for why in plan.renamed.values():
        log(f"names   {why}")
    if not plan.jobs:
        raise SkystackError(f"{raw_dir}: no usable bias, dark, flat or light frames found")
    remove_night_leftovers(out, [job.path for job in plan.jobs] if cluster is not None else ())
    stack_jobs = []
    if options["tiles"] is not None:  # the lights go on sky tiles, not per-object stacks
        stack_jobs = [job for job in plan.jobs if job.kind == "stack"]
        plan.jobs = [job for job in plan.jobs if job.kind != "stack"]
    stack_options = {**STACK_OPTIONS, **options["stack_options"]}
    selection = {k: v for k, v in options["selection"].items() if v is not None}
    night = NightBuild(plan, out, backend=options["backend"], overwrite=options["overwrite"],
                       stack_options=stack_options, save_calibrated=options["save_calibrated"],
                       threads=options["threads"], mem_limit=options["mem_limit"], log=log,
                       align=options["align"], align_model=options["align_model"],
                       selection=selection, gain_normalise=options["gain_normalise"])
    night.cosmetic = options["cosmetic"]
    night.show_progress = options["progress"]
    night.debayer = options["debayer"]
    night.stack_history = options["stack_history"]
    planned = night.fingerprints()

    def build() -> None:
        night.execute(planned)
        if stack_jobs:
            from .tiles import build_tiles

            night.products += build_tiles(night, stack_jobs, options["tiles"], log)

    if cluster is None:
        build()
    else:
        from ..cluster.connect import cluster_client

        with cluster_client(cluster) as client:  # one connection (or local cluster) for all
            night.cluster = client
            build()
    if options["previews"]:
        night.write_previews()
    result = night_result(out, night.products, plan.records, time.perf_counter() - t0,
                          options["backend"])
    write_summary(result, raw_dir=raw_dir, stack_options=stack_options, align={
        "mode": options["align"], "model": options["align_model"], "selection": selection,
        "objects": {obj: object_alignment(a) for (obj, _), a in night.alignments.items()}},
        selection=scanned.selection)
    return result
