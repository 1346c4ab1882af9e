"""The ``skystack`` command line: ``main(argv=None) -> int``.

Exit codes: 0 success; 1 processing failure (e.g. a disk error while writing); 2 usage or input
error (one line on stderr naming the file and the problem); 130 interrupted (Ctrl-C), 143 and
129 stopped by SIGTERM and SIGHUP (temporary files removed, as for Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from . import __version__
from .cli_bench import add_bench_parser, run_bench
from .cli_drizzle import add_drizzle_options, drizzle_kwargs
from .cli_register import (
    NIGHT_ALIGN_HELP,
    add_align_options,
    add_register_parser,
    align_kwargs,
    run_register,
)
from .cli_selection import add_header_selection, header_selection_kwargs
from .config import BACKENDS, CHOICES, DEFAULTS, NIGHT_STACK_OPTIONS
from .errors import SkystackError
from .interrupts import Interrupted, exit_code, signals_interrupt

log = logging.getLogger("skystack")

EPILOG_COMBINE = """\
examples:
  skystack combine bias_*.fits -o master_bias.fits --method mean --reject sigclip --sigma 3
  skystack combine @lights.txt -o stack.fits --method median --scale median --backend cpu
  skystack combine 'flats/*.fz' -o flat.fits --reject minmax --nlow 1 --nhigh 2 --mem-limit 1GB
"""

EPILOG_STACK = """\
examples:
  skystack stack 'lights/M67_V_*.fits' -o M67_V.fits --method median
  skystack stack @lights.txt -o deep.fits --reference lights/first.fits --reject sigclip
  skystack stack lights/*.fits -o core.fits --crop intersection --weights exptime
"""


EPILOG_NIGHT = """\
examples:
  skystack night raw/ -o reduced/
  skystack night raw/ -o reduced/ --backend gpu --method median --reject none
  skystack night raw/ -o reduced/ --overscan '[2049:2080,1:2048]' --trim '[1:2048,1:2048]'
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"skystack: error: {message} (see '{self.prog} --help')\n")


def _hdu(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _threads(text: str) -> int:
    """--threads: a whole number of threads, at least 1 (0 or less would mean nothing)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be an integer >= 1")
    return value


def _add_choice(g, name: str, what: str, note: str = "") -> None:
    """A choice option of :class:`~skystack.config.CombineOptions`, with its allowed values and
    default as defined there."""
    default = getattr(DEFAULTS, name)
    g.add_argument(f"--{name}", default=default, choices=CHOICES[name],
                   help=f"{what} (default: {default}{note})")


def _add_combine_options(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS  # the defaults and choices are CombineOptions' (skystack.config)
    g = p.add_argument_group("combination")
    _add_choice(g, "method", "per-pixel statistic of the kept values")
    _add_choice(g, "reject", "outlier rejection before the statistic")
    _add_choice(g, "center", "sigclip: centre of the clipping interval")
    _add_choice(g, "spread", "sigclip: spread, std (ddof 0) or MAD scaled to sigma")
    g.add_argument("--sigma", type=float, help="sigclip, winsor, linfit: both thresholds, in sigma")
    g.add_argument("--sigma-low", type=float, default=d.sigma_low,
                   help=f"sigclip, winsor, linfit: lower threshold ({d.sigma_low:g})")
    g.add_argument("--sigma-high", type=float, default=d.sigma_high,
                   help=f"sigclip, winsor, linfit: upper threshold ({d.sigma_high:g})")
    g.add_argument("--maxiters", type=int, default=d.maxiters,
                   help="sigclip, winsor, linfit: iterations, 0 = until nothing changes "
                        f"(default: {d.maxiters})")
    g.add_argument("--nlow", type=int, default=d.nlow,
                   help=f"minmax: lowest values dropped ({d.nlow})")
    g.add_argument("--nhigh", type=int, default=d.nhigh,
                   help=f"minmax: highest values dropped ({d.nhigh})")
    g.add_argument("--low", type=float, help="range: lowest raw value kept (inclusive)")
    g.add_argument("--high", type=float, help="range: highest raw value kept (inclusive)")
    g.add_argument("--plow", type=float, default=d.plow,
                   help=f"percentile: %% of each pixel's values dropped at the low end "
                        f"({d.plow:g})")
    g.add_argument("--phigh", type=float, default=d.phigh,
                   help=f"percentile: %% of each pixel's values dropped at the high end "
                        f"({d.phigh:g})")
    g.add_argument("--pctclip-low", type=float, default=d.pctclip_low,
                   help="pctclip: reject values more than this fraction of |median| below the "
                        f"median ({d.pctclip_low:g})")
    g.add_argument("--pctclip-high", type=float, default=d.pctclip_high,
                   help="pctclip: reject values more than this fraction of |median| above the "
                        f"median ({d.pctclip_high:g})")
    g.add_argument("--esd-alpha", type=float, default=d.esd_alpha,
                   help=f"esd: significance of the generalized ESD test ({d.esd_alpha:g})")
    g.add_argument("--esd-max-frac", type=float, default=d.esd_max_frac,
                   help=f"esd: most outliers, a fraction of each pixel's values "
                        f"({d.esd_max_frac:g})")
    g.add_argument("--gain", type=float, help="ccdclip: gain of the raw values, e-/ADU "
                   "(default: GAIN of the headers, when all frames agree)")
    g.add_argument("--rdnoise", type=float, help="ccdclip: read noise, e- (default: RDNOISE "
                   "of the headers, when all frames agree)")
    g.add_argument("--snoise", type=float, default=d.snoise,
                   help=f"ccdclip: sensitivity noise, a fraction of the signal ({d.snoise:g})")
    g.add_argument("--pclip", type=float, default=d.pclip,
                   help="pclip: percentile pixel beside the median, a fraction (|p| < 1) or "
                        f"a number of values, negative = below ({d.pclip:g})")
    g.add_argument("--weights", default=d.weights.kind,
                   help="none, exptime, invvar:KEY (KEY = variance), noise:KEY (KEY = sigma), "
                        "w1,w2,... or @file; measured: bgnoise (1/sky variance), stars "
                        "(N/FWHM^2), psf-signal ((star flux/noise)^2) (mean and sum only)")
    _add_choice(g, "scale", "multiplicative normalisation to the first frame")
    _add_choice(g, "zero", "additive normalisation to the first frame")
    _add_choice(g, "uncertainty", "UNCERT plane: scatter between frames, noise model from "
                "GAIN/RDNOISE (bias-subtracted data), or propagate the inputs' UNCERT",
                " = model when every input has GAIN and RDNOISE and is not raw, else scatter")
    cos = p.add_argument_group("cosmetics")
    cos.add_argument("--saturation", type=float, metavar="LEVEL",
                     help="raw ADU at/above which pixels are saturated: masked (NaN) before any "
                          "calibration (default: each raw frame's SATURATE, if any)")
    cos.add_argument("--cosmic-rays", default="none", choices=("none", "lacosmic"),
                     help="mask each frame's cosmic rays before combining (LA Cosmic, for stacks "
                          "too small for rejection; needs GAIN and RDNOISE; default: none)")
    cos.add_argument("--cr-sigclip", type=float, default=4.5,
                     help="lacosmic: Laplacian-to-noise detection limit (default: 4.5)")
    cos.add_argument("--cr-objlim", type=float, default=5.0,
                     help="lacosmic: contrast limit protecting stars (default: 5.0)")
    r = p.add_argument_group("resources")
    r.add_argument("--hdu", type=_hdu, help="HDU index or EXTNAME (default: first image HDU); "
                   "combine: 'all' = every CCD of multi-extension files, into one MEF product")
    r.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="compute engine (default: auto = GPU if usable, else CPU)")
    r.add_argument("--mem-limit", help="memory budget for tiles, e.g. 512MB (default: 1/4 of "
                                       "available RAM, 256MB..8GB)")
    r.add_argument("--threads", type=_threads, help="CPU threads (default: all cores)")


INTERP_CHOICES = ("bilinear", "nearest", "lanczos3", "lanczos4")  # api_reproject.INTERPOLATIONS
DEBAYER_CHOICES = ("bilinear", "mhc", "menon")  # colour.debayer.DEBAYER_METHODS


def _combine_kwargs(a: argparse.Namespace) -> dict:
    return dict(method=a.method, reject=a.reject, center=a.center, spread=a.spread, sigma=a.sigma,
                sigma_low=a.sigma_low, sigma_high=a.sigma_high, maxiters=a.maxiters,
                nlow=a.nlow, nhigh=a.nhigh, low=a.low, high=a.high, plow=a.plow, phigh=a.phigh,
                pctclip_low=a.pctclip_low, pctclip_high=a.pctclip_high,
                weights=a.weights, scale=a.scale, zero=a.zero, hdu=a.hdu,
                mem_limit=a.mem_limit, uncertainty=a.uncertainty, esd_alpha=a.esd_alpha,
                esd_max_frac=a.esd_max_frac, gain=a.gain, rdnoise=a.rdnoise, snoise=a.snoise,
                pclip=a.pclip, saturation=a.saturation,
                cosmic_rays=a.cosmic_rays, cr_sigclip=a.cr_sigclip, cr_objlim=a.cr_objlim,
                **header_selection_kwargs(a))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="skystack",
                     description="Calibrate, align and stack astronomical FITS images.")
    parser.add_argument("--version", action="version", version=f"skystack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("combine", help="combine a stack of images pixel by pixel",
                       epilog=EPILOG_COMBINE, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("files", nargs="+", metavar="FILES",
                   help="FITS files, glob patterns or @list.txt files")
    c.add_argument("-o", "--output", required=True, help="output FITS file")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_combine_options(c)
    add_header_selection(c)
    _add_cluster_options(c)
    _add_common(c)

    s = sub.add_parser("stack", help="reproject frames onto one WCS grid and combine them",
                       epilog=EPILOG_STACK, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("files", nargs="+", metavar="FILES",
                   help="FITS files with celestial WCS, glob patterns or @list.txt files")
    s.add_argument("-o", "--output", required=True, help="output FITS file")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_grid_options(s, required=False)
    add_drizzle_options(s)
    _add_tile_options(s)
    add_align_options(s)
    s.add_argument("--cfa-as-mono", action="store_true",
                   help="stack colour (BAYERPAT) frames as monochrome, mixing their colours")
    s.add_argument("--debayer", choices=DEBAYER_CHOICES, default=None,
                   help="demosaic colour (BAYERPAT) frames and stack R, G, B into "
                        "OUT_R/_G/_B.fits (default for colour frames: bilinear)")
    _add_combine_options(s)
    add_header_selection(s)
    _add_cluster_options(s)
    _add_common(s)

    add_register_parser(sub)

    rp = sub.add_parser("reproject", help="resample one image onto another grid")
    rp.add_argument("file", metavar="FILE", help="FITS image with a celestial WCS")
    rp.add_argument("-o", "--output", required=True, help="output FITS file")
    rp.add_argument("--overwrite", action="store_true", help="replace an existing output")
    rp.add_argument("--hdu", type=_hdu, help="HDU index or EXTNAME (default: first image HDU)")
    rp.add_argument("--backend", default="auto", choices=BACKENDS)
    _add_grid_options(rp, required=True)
    _add_common(rp)

    i = sub.add_parser("info", help="table of shape, dtype, IMAGETYP, FILTER, EXPTIME, DATE-OBS; "
                                    "for a directory, its frames classified as by 'night'")
    i.add_argument("files", nargs="+", metavar="FILES", help="FITS files or a directory")
    i.add_argument("--hdu", type=_hdu, help="HDU index or EXTNAME (default: first image HDU)")
    add_header_selection(i)
    _add_common(i)

    n = sub.add_parser("night", help="masters, calibration and one aligned stack per object and "
                                     "filter, from a directory of raw frames",
                       epilog=EPILOG_NIGHT, formatter_class=argparse.RawDescriptionHelpFormatter)
    n.add_argument("raw", metavar="RAW_DIR", help="directory of raw FITS frames")
    n.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                   help="output directory (masters/, stacks/, previews/, summary.json)")
    n.add_argument("--overwrite", action="store_true",
                   help="rebuild products made from other inputs or options")
    n.add_argument("--overscan", metavar="SECTION",
                   help="overscan [x1:x2,y1:y2] (default: each frame's BIASSEC, if any)")
    n.add_argument("--trim", metavar="SECTION",
                   help="area kept [x1:x2,y1:y2] (default: each frame's TRIMSEC, if any)")
    n.add_argument("--save-calibrated", action="store_true",
                   help="also write every calibrated light to OUT_DIR/calibrated/")
    n.add_argument("--no-previews", action="store_true", help="no PNG previews")
    n.add_argument("--gain-normalise", action="store_true",
                   help="multiply each calibrated light by its (CCD's) GAIN: stacks in electrons")
    n.add_argument("--cosmetic", default="mask", choices=("mask", "interpolate"),
                   help="the lights' bad pixels (hot, dead, bad columns): NaN, taken from the "
                        "other frames (default: interpolated values are not measurements), or "
                        "interpolated from their good neighbours")
    _add_combine_options(n)
    add_header_selection(n)
    night = NIGHT_STACK_OPTIONS
    n.set_defaults(**night)
    n.description = (f"Stacks are combined with --reject {night['reject']} --spread "
                     f"{night['spread']} --sigma {night['sigma_high']:g} --maxiters "
                     f"{night['maxiters']} unless told otherwise.")
    add_align_options(n, default="auto", align_help=NIGHT_ALIGN_HELP)
    n.set_defaults(reject=None)  # None: sigclip, or none with --interp drizzle (night.options)
    for action in n._actions:  # its help names the night's default, not combine's
        if action.dest == "reject":
            action.help = (f"outlier rejection before the statistic (default: {night['reject']}; "
                           "none with --interp drizzle)")
    n.add_argument("--interp", default="bilinear", choices=(*INTERP_CHOICES, "drizzle"),
                   help="resampling of the stacks (default: bilinear; drizzle: with --reject "
                        "none, the default then)")
    add_drizzle_options(n)
    n.add_argument("--debayer", choices=DEBAYER_CHOICES, default="bilinear",
                   help="demosaicing of colour (BAYERPAT) lights (default: bilinear; mhc: "
                        "Malvar-He-Cutler; menon: directional, Menon 2007)")
    _add_tile_options(n, "stacks on sky tiles instead of one grid per object: "
                         "stacks/<TILE>_<FILTER>.fits and stacks/tiles.json "
                         "(see skystack.night.tiles)")
    _add_cluster_options(n)
    _add_common(n)

    ins = sub.add_parser("inspect", help="statistics of calibration frames: bias level, read "
                                         "noise, dark current, hot pixels, flat uniformity")
    ins.add_argument("files", nargs="+", metavar="FILES",
                     help="FITS files, directories, glob patterns or @list.txt files")
    ins.add_argument("--plot", metavar="DIR", help="write histograms and images as PNG to DIR")
    add_header_selection(ins)
    _add_common(ins)

    d = sub.add_parser("demo", help="write a synthetic night of raw frames to DIR and stack it")
    d.add_argument("directory", metavar="DIR")
    d.add_argument("--overwrite", action="store_true", help="replace existing products")
    d.add_argument("--backend", default="auto", choices=BACKENDS)
    d.add_argument("--survey", action="store_true",
                   help="a survey night instead: a 6-CCD mosaic camera, 3x3 pointings in g and "
                        "r, reduced CCD by CCD and co-added on sky tiles")
    d.add_argument("--osc", action="store_true",
                   help="a one-shot-colour (Bayer RGGB) CMOS night instead: stacks in R, G, B")
    _add_common(d)

    add_bench_parser(sub)
    return parser


def _add_grid_options(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("output grid")
    target = g.add_mutually_exclusive_group(required=required)
    target.add_argument("--reference", metavar="FILE",
                        help="use this FITS file's WCS and shape as the output grid")
    target.add_argument("--grid-header", metavar="FILE",
                        help="output grid from a FITS header (a FITS file or a text header)")
    if not required:
        g.add_argument("--crop", default="union", choices=("union", "intersection"),
                       help="default grid (north up, median pixel scale): cover every frame "
                            "(union, default) or only the area all frames cover")
    g.add_argument("--interp", default="bilinear",
                   choices=INTERP_CHOICES + (() if required else ("drizzle",)),
                   help="resampling (default: bilinear, as reproject_interp; lanczos3/4: "
                        "sharper, clamped against ringing; drizzle: stack only)")
    g.add_argument("--conserve-flux", action="store_true",
                   help="multiply by the output/input pixel-area ratio")


def _add_tile_options(p: argparse.ArgumentParser,
                      title: str = "co-adds on sky tiles (-o is then a directory: "
                                   "<TILE>_<FILTER>.fits and tiles.json; see "
                                   "skystack.coadd_tiles)") -> None:
    g = p.add_argument_group(title)
    g.add_argument("--tiles", type=float, metavar="DEG",
                   help="tile the sky (declination rings of DEG-sized tangent-plane tiles) and "
                        "co-add every frame into each tile it touches")
    g.add_argument("--pixel-scale", type=float, metavar="ARCSEC", help="the tiles' pixel scale")
    g.add_argument("--tile-margin", type=int, metavar="PX",
                   help="overlap of the tiles beyond their cores (default: 1%% of a tile)")
    g.add_argument("--tiles-from", nargs="+", metavar="HEADER",
                   help="co-add on these tiles instead: one FITS/text header each "
                        "(named by TILENAME, EXTNAME or the file name)")


def _run_stack_tiles(a: argparse.Namespace) -> int:
    from .coadd_tiles import stack_files_on_tiles
    from .progress import ProgressBar

    if a.reference or a.grid_header or a.crop != "union" or a.align == "stars":
        raise SkystackError("--tiles/--tiles-from fix the grids: --reference, --grid-header, "
                            "--crop and --align stars do not apply")
    if header_selection_kwargs(a):
        raise SkystackError("--where/--exclude do not apply to --tiles/--tiles-from yet")
    t0 = time.perf_counter()
    products = stack_files_on_tiles(
        a.files, a.output, size_deg=a.tiles, scale_arcsec=a.pixel_scale, margin=a.tile_margin,
        tile_headers=a.tiles_from, interp=a.interp, conserve_flux=a.conserve_flux,
        backend=a.backend, overwrite=a.overwrite, threads=a.threads, cluster=_cluster(a),
        progress=None if a.quiet else ProgressBar("stacking"), **_combine_kwargs(a))
    if not a.quiet:
        print(f"wrote {len(products)} tile co-adds and tiles.json in {a.output} "
              f"({time.perf_counter() - t0:.2f} s)")
    return 0


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (needs: pip install 'skystack[cluster]')")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the tiles on this dask.distributed scheduler's workers, e.g. "
                            "tcp://host:8786 (inputs and output on storage they all see)")
    where.add_argument("--workers", type=int, metavar="N",
                       help="run the tiles on a local Dask cluster of N worker processes")


def _cluster(a: argparse.Namespace):
    """The ``cluster=`` argument of the API: an address, a number of workers, or None."""
    return a.scheduler if a.scheduler is not None else a.workers


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")


def _run_combine(a: argparse.Namespace) -> int:
    from .api import combine_to_file
    from .progress import ProgressBar

    t0 = time.perf_counter()
    progress = None if a.quiet else ProgressBar("combining")
    path = combine_to_file(a.files, a.output, backend=a.backend, overwrite=a.overwrite,
                           progress=progress, threads=a.threads, cluster=_cluster(a),
                           **_combine_kwargs(a))
    if not a.quiet:
        print(f"wrote {path} ({time.perf_counter() - t0:.2f} s)")
    return 0


def _run_stack(a: argparse.Namespace) -> int:
    from .api_reproject import stack
    from .progress import ProgressBar

    if a.tiles is not None or a.tiles_from:
        return _run_stack_tiles(a)
    t0 = time.perf_counter()
    if not a.cfa_as_mono and _cluster(a) is None:
        from .api_colour import frames_are_cfa, stack_debayered

        if a.debayer or frames_are_cfa(a.files, a.hdu):  # colour frames: never stacked as mono
            log = None if a.quiet else print
            if log and not a.debayer:
                log("colour (Bayer) frames: debayered (bilinear) and stacked as R, G, B")
            stack_debayered(a.files, a.output, debayer_method=a.debayer or "bilinear",
                            reference=a.reference, grid_header=a.grid_header, crop=a.crop,
                            interp=a.interp, conserve_flux=a.conserve_flux, backend=a.backend,
                            overwrite=a.overwrite, threads=a.threads, log=log,
                            **align_kwargs(a), **drizzle_kwargs(a), **_combine_kwargs(a))
            return 0
    progress = None if a.quiet else ProgressBar("stacking")
    if _cluster(a) is not None:  # streamed to the file by the workers, never in memory here
        from .api_reproject import stack_to_file

        stack_to_file(a.files, a.output, reference=a.reference, grid_header=a.grid_header,
                      crop=a.crop, interp=a.interp, conserve_flux=a.conserve_flux,
                      backend=a.backend, overwrite=a.overwrite, progress=progress,
                      threads=a.threads, cluster=_cluster(a), cfa_as_mono=a.cfa_as_mono,
                      **align_kwargs(a), **drizzle_kwargs(a), **_combine_kwargs(a))
    else:
        stack(a.files, a.output, reference=a.reference, grid_header=a.grid_header,
              crop=a.crop, interp=a.interp, conserve_flux=a.conserve_flux,
              backend=a.backend, overwrite=a.overwrite, progress=progress, threads=a.threads,
              cfa_as_mono=a.cfa_as_mono, **align_kwargs(a), **drizzle_kwargs(a),
              **_combine_kwargs(a))
    if not a.quiet:
        print(f"wrote {a.output} ({time.perf_counter() - t0:.2f} s)")
    return 0


def _run_reproject(a: argparse.Namespace) -> int:
    from .api_reproject import read_header_file, reproject

    t0 = time.perf_counter()
    target = a.reference if a.reference is not None else read_header_file(a.grid_header)
    reproject(a.file, target, a.output, interp=a.interp, conserve_flux=a.conserve_flux,
              backend=a.backend, overwrite=a.overwrite, hdu=a.hdu)
    if not a.quiet:
        print(f"wrote {a.output} ({time.perf_counter() - t0:.2f} s)")
    return 0


def _run_info(a: argparse.Namespace) -> int:
    import os

    from .io.info import format_table, info_rows
    from .io.selection import selection_from

    selection = selection_from(a.where, a.exclude)
    if any(os.path.isdir(f) for f in a.files):
        # A directory: classify its frames as the night would (unreadable files are listed).
        from .night.scan import format_scan_table, scan

        print(format_scan_table(scan(a.files, selection)))
        return 0

    rows, errors = info_rows(a.files, hdu=a.hdu, selection=selection)
    if rows:
        print(format_table(rows))
    for err in errors:
        print(f"skystack: error: {err}", file=sys.stderr)
    return 2 if errors else 0


def _run_night(a: argparse.Namespace) -> int:
    from .coadd_tiles import tiles_from_options
    from .night.run import format_night_table, run_night

    kwargs = _combine_kwargs(a)
    mem_limit = kwargs.pop("mem_limit")
    kwargs.pop("hdu")
    kwargs["interp"] = a.interp
    kwargs.update(drizzle_kwargs(a), debayer=a.debayer)
    tiles = tiles_from_options(a.tiles, a.pixel_scale, a.tile_margin, a.tiles_from)
    result = run_night(a.raw, a.output, backend=a.backend, overwrite=a.overwrite, tiles=tiles,
                       overscan=a.overscan, trim=a.trim, save_calibrated=a.save_calibrated,
                       previews=not a.no_previews, gain_normalise=a.gain_normalise,
                       cosmetic=a.cosmetic,
                       threads=a.threads, mem_limit=mem_limit,
                       log=None if a.quiet else print, cluster=_cluster(a),
                       progress=not a.quiet,
                       **align_kwargs(a), **kwargs)
    if not a.quiet:
        print()
        print(format_night_table(result))
        built = sum(p.status == "built" for p in result.products)
        reused = sum(p.status == "reused" for p in result.products)
        print(f"\n{built} products built, {reused} reused, in {result.seconds:.1f} s; "
              f"summary in {a.output}/summary.json")
    failed = [p for p in result.products if p.status == "failed"]
    return 1 if failed and not any(p.status in ("built", "reused") for p in result.products) \
        else 0


def _run_inspect(a: argparse.Namespace) -> int:
    from .io.selection import selection_from
    from .night.inspect import format_inspect_table, inspect_frames
    from .night.scan import scan

    result = scan(a.files, selection_from(a.where, a.exclude))
    if not result.frames:  # nothing readable at all: an input error, not an empty report
        first = result.skipped[0] if result.skipped else None
        reason = f"{first.path}: {first.reason}" if first else \
            f"{' '.join(map(str, a.files))}: no FITS files"
        raise SkystackError(reason + (f" (and {len(result.skipped) - 1} more skipped)"
                                      if len(result.skipped) > 1 else ""))
    report = inspect_frames(result, plot_dir=a.plot)
    print(format_inspect_table(report))
    return 0


def _run_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo, run_osc_demo, run_survey_demo

    if a.survey and a.osc:
        raise SkystackError("give --survey or --osc, not both")
    run = run_survey_demo if a.survey else run_osc_demo if a.osc else run_demo
    run(a.directory, backend=a.backend, overwrite=a.overwrite, quiet=a.quiet)
    return 0


COMMANDS = {"combine": _run_combine, "stack": _run_stack, "reproject": _run_reproject,
            "info": _run_info, "night": _run_night, "inspect": _run_inspect,
            "demo": _run_demo, "register": run_register, "bench": run_bench}


def _not_astropy(record: logging.LogRecord) -> bool:
    """astropy's logger prints its warnings itself; ours would print each a second time."""
    return not record.name.startswith("astropy")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (see module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = logging.StreamHandler()
    handler.addFilter(_not_astropy)
    logging.basicConfig(format="skystack: %(message)s", handlers=[handler],
                        level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        with signals_interrupt():
            return COMMANDS[args.command](args)
    except SkystackError as exc:
        print(f"skystack: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"skystack: interrupted{f' by {exc}' if isinstance(exc, Interrupted) else ''}",
              file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"skystack: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print("skystack: error: out of memory (try a smaller --mem-limit)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
