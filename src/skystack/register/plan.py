"""``--align`` and frame selection for ``skystack stack``: which frames, which WCS, which grid.

``align``:

* ``"wcs"``: each frame's own celestial WCS (header); the grid as before (``reference``,
  ``grid_header`` or the optimal grid).
* ``"stars"``: frames registered on a reference frame by their stars
  (:func:`~.align.register_frames`); ``reference`` (a file or Frame) names that frame and the
  output grid is then its pixel grid (shape and linear WCS; synthetic when it has none).
  Without ``reference`` the reference is chosen automatically and the grid is the optimal grid
  (``crop``) oriented like the reference frame's pixel axes. When the reference has no usable
  WCS the grid carries a pixel-only product WCS (:func:`registration_grid`): the product has
  no sky coordinates, and ``grid_header`` (a sky grid) is refused.
* ``"auto"``: ``"wcs"`` when every frame has a celestial WCS, else ``"stars"``.

Selection options (``max_fwhm``, ``max_ellipticity``, ``min_stars``, ``best_fraction``) measure
the stars of every frame in any mode. Skipped frames are logged (one line each, with the reason)
and listed in the output header's HISTORY (:func:`record_skipped`), as are frames whose footprint
misses the output grid once it is chosen (:func:`keep_frames_on_grid`).

Which frames count (one rule): a frame whose WCS cannot place it (not celestial, a WCS keyword
that is not a number, a singular matrix: :func:`skystack.stacking.frame_wcs`) is an error naming
it, as is a union grid stretched by a far-off frame (:func:`skystack.regrid.grid.optimal_grid`);
a frame that is placed but misses a grid the user fixed is skipped with its reason. Only the
frames stacked are counted in the provenance (NCOMBINE, IMCMB, EXPTIME, DATE-OBS).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from astropy.io import fits
from astropy.wcs import WCS

from ..errors import SkystackError
from ..io.labels import fits_label
from .align import RegistrationResult, Selection, measure_frames, register_frames, select_frames

__all__ = ["ALIGNS", "OFF_GRID", "StackPlan", "keep_frames_on_grid", "plan_stack",
           "record_skipped", "registration_grid"]

ALIGNS = ("wcs", "stars", "auto")
log = logging.getLogger("skystack")


@dataclass
class StackPlan:
    """Frames to stack with their WCS; ``grid`` is set when alignment fixes it (else None: the
    caller chooses it with ``grid_reference``); ``header`` holds cards for the output."""

    frames: list
    wcs_list: list[WCS]
    grid: object | None
    grid_reference: object | None
    align: str
    header: fits.Header = field(default_factory=fits.Header)
    result: RegistrationResult | None = None
    selection: list[Selection] | None = None

    def merged_header(self, extra: fits.Header | None) -> fits.Header:
        """The plan's cards followed by ``extra`` (which wins on repeated keywords)."""
        out = self.header.copy()
        if extra is not None:
            out.extend(extra, update=True)
        return out


def registration_grid(result: RegistrationResult, wcs: WCS | None = None,
                      shape: tuple[int, int] | None = None):
    """The :class:`~skystack.stacking.Grid` of a stack of frames registered in ``result``: the
    reference's pixel grid, or ``wcs``/``shape`` (a grid on the reference's tangent point when
    it has no sky coordinates). When the reference has no real WCS (``result.has_sky`` False)
    the grid carries a pixel-only ``product_wcs`` (:func:`~.wcs.pixel_wcs`): a product must
    not claim sky coordinates it does not have."""
    from ..stacking import Grid
    from .wcs import pixel_wcs

    if wcs is None:
        wcs, shape = result.reference_wcs, tuple(result.reference_shape)
    product = None if result.has_sky else pixel_wcs(wcs, result.reference_wcs)
    return Grid(wcs, tuple(shape), product)


def record_skipped(header: fits.Header, skipped: list[tuple[str, str]]) -> None:
    """Log each skipped frame (label, reason) on one line and list it in ``header``: a HISTORY
    card each and NSKIPPED (added to any count already there)."""
    for label, reason in skipped:
        log.warning("%s: skipped (%s)", label, reason)
        header.add_history(fits_label(f"skipped {label}: {reason}")[:72])
    if skipped:
        header["NSKIPPED"] = (int(header.get("NSKIPPED", 0)) + len(skipped),
                              "input frames not stacked (see HISTORY)")


OFF_GRID = "its footprint does not overlap the output grid"


def keep_frames_on_grid(frames: list, wcs_list: list, grid,
                        header: fits.Header | None) -> tuple[list, list, fits.Header]:
    """The frames (and their WCS) whose footprint overlaps ``grid`` (a
    :class:`~skystack.stacking.Grid`), and ``header`` (a copy, when frames were skipped) with
    the others recorded (:func:`record_skipped`); a one-line error when none overlaps.

    A frame that misses the grid would contribute no pixel: it is neither resampled nor
    counted in NCOMBINE/IMCMB/EXPTIME."""
    from ..stacking import frames_off_grid

    header = header if header is not None else fits.Header()
    off = set(frames_off_grid(wcs_list, [f.shape for f in frames], grid))
    if not off:
        return frames, wcs_list, header
    if len(off) == len(frames):
        names = ", ".join(frames[k].label for k in sorted(off)[:3])
        more = f" (and {len(off) - 3} more)" if len(off) > 3 else ""
        raise SkystackError(f"no frame overlaps the output grid: {names}{more}")
    header = header.copy()
    record_skipped(header, [(frames[k].label, OFF_GRID) for k in sorted(off)])
    keep = [k for k in range(len(frames)) if k not in off]
    return [frames[k] for k in keep], [wcs_list[k] for k in keep], header


def _has_celestial(frame) -> bool:
    from ..stacking import frame_wcs

    try:
        frame_wcs(frame)
        return True
    except SkystackError:
        return False


def _reference_frame(reference, hdu):
    """A Frame for ``reference`` (a Frame, a path, or anything :func:`load_frames` takes)."""
    from ..io.inputs import Frame, load_frames

    if isinstance(reference, Frame):
        return reference
    return load_frames([os.fspath(reference) if isinstance(reference, os.PathLike)
                        else reference], hdu=hdu)[0]


def plan_stack(frames: list, *, align: str = "wcs", reference=None, grid_header=None,
               crop: str = "union", model: str = "similarity", max_fwhm: float | None = None,
               max_ellipticity: float | None = None, min_stars: int | None = None,
               best_fraction: float | None = None, hdu=None,
               threads: int | None = None) -> StackPlan:
    """Decide frames, WCS and (for star alignment) grid of a stack (see module docstring)."""
    from ..regrid.grid import optimal_grid
    from ..stacking import frame_wcs

    if align not in ALIGNS:
        raise SkystackError(f"invalid --align {align!r}: choose from {', '.join(ALIGNS)}")
    if reference is not None and grid_header is not None:
        raise SkystackError("give --reference or --grid-header, not both")
    selecting = any(v is not None for v in (max_fwhm, max_ellipticity, min_stars,
                                            best_fraction))
    if align == "auto":
        align = "wcs" if all(_has_celestial(f) for f in frames) else "stars"
    header = fits.Header()
    header["ALIGN"] = (align, "frames aligned by their WCS or by their stars")
    result = None
    selection = None
    grid = None
    grid_reference = reference
    if align == "wcs":
        wcs_all = [frame_wcs(f) for f in frames]
        if selecting:
            selection = select_frames(measure_frames(frames, threads=threads),
                                      max_fwhm=max_fwhm, max_ellipticity=max_ellipticity,
                                      min_stars=min_stars, best_fraction=best_fraction)
    else:
        grid_reference = None
        ref = _reference_frame(reference, hdu) if reference is not None else None
        result = register_frames(frames, reference=ref, model=model, threads=threads)
        selection = select_frames(result.measurements, max_fwhm=max_fwhm,
                                  max_ellipticity=max_ellipticity, min_stars=min_stars,
                                  best_fraction=best_fraction,
                                  registrations=result.registrations)
        wcs_all = result.wcs
        header["REGREF"] = (fits_label(result.reference_label)[-68:],
                            "registration reference frame")
        header["REGMODEL"] = (model, "registration model, frame px -> reference px")
        if not result.has_sky and grid_header is not None:
            raise SkystackError(
                f"--grid-header needs sky coordinates, and the frames were aligned by their "
                f"stars on {result.reference_label}, which has no usable WCS "
                f"({result.reference_wcs_source})")
        if ref is not None:
            grid = registration_grid(result)
    keep = [k for k in range(len(frames)) if selection is None or selection[k].keep]
    skipped = [s for s in (selection or []) if not s.keep]
    record_skipped(header, [(s.label, s.reason) for s in skipped])
    if not keep:
        first = "; ".join(f"{s.label}: {s.reason}" for s in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise SkystackError(f"no frame left to stack: {first}{more}")
    kept = [frames[k] for k in keep]
    wcs_list = [wcs_all[k] for k in keep]
    if align == "stars" and grid is None and grid_header is None:
        # Without sky coordinates the grid shares the reference's tangent point, so that its
        # pixels map linearly onto the reference's (the product's pixel-only WCS).
        tangent = None if result.has_sky else tuple(result.reference_wcs.wcs.crval)
        grid = registration_grid(result, *optimal_grid(
            [(w, f.shape) for w, f in zip(wcs_list, kept)], reference=result.reference_wcs,
            crop=crop, labels=[f.label for f in kept], tangent=tangent))
    return StackPlan(kept, wcs_list, grid, grid_reference, align, header, result, selection)
