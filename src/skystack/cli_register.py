"""Command line of registration by stars: ``skystack register`` and the ``--align`` options of
``skystack stack``.

``skystack register FILES... [--reference FILE] [--model M] [-o table.csv|table.ecsv]``
measures every frame's stars, registers the frames on the reference and prints a table
(transforms, residuals, FWHM, ellipticity, background, and the selection when options are
given); ``-o`` writes it as CSV or ECSV (ECSV keeps units and the reference in its metadata).
Exit code 0 when every frame was registered, 1 when some could not be (they are in the table
with the reason), 2 for a usage or input error.
"""

from __future__ import annotations

import argparse

from .cli_selection import add_header_selection

__all__ = ["add_register_parser", "run_register", "add_align_options", "align_kwargs"]

MODELS = ("shift", "similarity", "affine", "poly2", "poly3")

EPILOG_REGISTER = """\
examples:
  skystack register lights/*.fits
  skystack register lights/*.fits --reference lights/L_012.fits -o transforms.ecsv
  skystack register lights/*.fits --model poly3 --max-fwhm 5 -o table.csv
"""


def _add_selection(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("frame selection (by the stars measured on each frame)")
    g.add_argument("--max-fwhm", type=float, metavar="PX",
                   help="skip frames whose median stellar FWHM exceeds PX pixels")
    g.add_argument("--max-ellipticity", type=float, metavar="E",
                   help="skip frames whose median ellipticity (1 - b/a) exceeds E")
    g.add_argument("--min-stars", type=int, metavar="N", help="skip frames with fewer stars")
    g.add_argument("--best-fraction", type=float, metavar="F",
                   help="keep only the sharpest fraction F (0-1] of the remaining frames")


NIGHT_ALIGN_HELP = ("auto (default): per object, each light's WCS if every light of the object "
                    "has a celestial one, else stars; wcs: the WCS (lights without one are "
                    "skipped); stars: register all lights of an object (every filter) on its "
                    "sharpest light with the most stars, whose pixel grid is the stacks' grid")


def add_align_options(p: argparse.ArgumentParser, *, default: str = "wcs",
                      align_help: str | None = None) -> None:
    """``--align`` and the selection options (for ``skystack stack``; ``night`` gives its own
    default and help)."""
    g = p.add_argument_group("alignment")
    g.add_argument("--align", default=default, choices=("wcs", "stars", "auto"),
                   help=align_help or (
                       "wcs: each frame's WCS (default); stars: register the frames on a "
                       "reference frame by their stars (--reference FILE names it and its "
                       "pixel grid becomes the output grid; default: the sharpest frame with "
                       "the most stars); auto: wcs if every frame has one, else stars"))
    g.add_argument("--align-model", default="similarity", choices=MODELS,
                   help="--align stars: transform fitted per frame (default: similarity; "
                        "poly2/poly3 for field distortion)")
    _add_selection(p)


def align_kwargs(a: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`skystack.stack` from the options of :func:`add_align_options`."""
    return dict(align=a.align, align_model=a.align_model, max_fwhm=a.max_fwhm,
                max_ellipticity=a.max_ellipticity, min_stars=a.min_stars,
                best_fraction=a.best_fraction)


def add_register_parser(sub) -> argparse.ArgumentParser:
    """Add the ``register`` subcommand to ``sub`` (an argparse subparsers object)."""
    r = sub.add_parser("register", help="measure stars and register frames on a reference "
                                        "frame; print or write the transforms as a table",
                       epilog=EPILOG_REGISTER,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("files", nargs="+", metavar="FILES",
                   help="FITS files, glob patterns or @list.txt files")
    r.add_argument("--reference", metavar="FILE",
                   help="reference frame (default: the sharpest frame with the most stars)")
    r.add_argument("--model", default="similarity", choices=MODELS,
                   help="transform fitted per frame (default: similarity)")
    r.add_argument("-o", "--output", metavar="TABLE",
                   help="write the table to TABLE (.csv or .ecsv)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing table")
    r.add_argument("--hdu", help="HDU index or EXTNAME (default: first image HDU)")
    r.add_argument("--threads", type=int, help="frames measured at once (default: 2)")
    add_header_selection(r)
    _add_selection(r)
    r.add_argument("-q", "--quiet", action="store_true", help="no table on the terminal")
    r.add_argument("-v", "--verbose", action="store_true", help="log details")
    return r


def run_register(a: argparse.Namespace) -> int:
    """Run ``skystack register``; returns the exit code (see module docstring)."""
    import os

    from .errors import SkystackError
    from .io.atomic import atomic_write
    from .io.inputs import load_frames, load_selected_frames
    from .io.selection import selection_from
    from .register import format_register_table, register_frames, register_table, select_frames

    if a.output is not None:
        ext = os.path.splitext(a.output)[1].lower()
        if ext not in (".csv", ".ecsv"):
            raise SkystackError(f"{a.output}: table must end in .csv or .ecsv")
        if os.path.exists(a.output) and not a.overwrite:
            raise SkystackError(f"{a.output}: output exists (use --overwrite to replace it)")
    hdu = int(a.hdu) if a.hdu is not None and a.hdu.lstrip("-").isdigit() else a.hdu
    frames, _ = load_selected_frames(a.files, hdu=hdu,
                                     selection=selection_from(a.where, a.exclude))
    reference = load_frames([a.reference], hdu=hdu)[0] if a.reference else None
    result = register_frames(frames, reference=reference, model=a.model, threads=a.threads)
    selection = select_frames(result.measurements, max_fwhm=a.max_fwhm,
                              max_ellipticity=a.max_ellipticity, min_stars=a.min_stars,
                              best_fraction=a.best_fraction,
                              registrations=result.registrations)
    if not a.quiet:
        print(format_register_table(result, selection))
    if a.output is not None:
        table = register_table(result, selection)
        fmt = "ascii.ecsv" if a.output.lower().endswith(".ecsv") else "ascii.csv"
        try:
            with atomic_write(a.output, overwrite=a.overwrite) as tmp:
                table.write(tmp, format=fmt, overwrite=True)
        except OSError as exc:
            raise SkystackError(f"{a.output}: cannot write ({exc.strerror or exc})") from None
        if not a.quiet:
            print(f"wrote {a.output}")
    return 0 if all(result.ok) else 1
