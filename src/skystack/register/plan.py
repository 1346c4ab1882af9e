"""``--align`` and frame selection for ``skystack stack``: which frames, which WCS, which grid.

``align``:

* ``"wcs"``: each frame's own celestial WCS (header); the grid as before (``reference``,
  ``grid_header`` or the optimal grid).
* ``"stars"``: frames registered on a reference frame by their stars
  (:func:`~.align.register_frames`); ``reference`` (a file or Frame) names that frame and the
  output grid is then its pixel grid (shape and linear WCS; synthetic when it has none).
  Without ``reference`` the reference is chosen automatically and the grid is the optimal grid
  (``crop``) oriented like the reference frame's pixel axes.
* ``"auto"``: ``"wcs"`` when every frame has a celestial WCS, else ``"stars"``.

Selection options (``max_fwhm``, ``max_ellipticity``, ``min_stars``, ``best_fraction``) measure
the stars of every frame in any mode. Skipped frames are logged (one line each, with the reason)
and listed in the output header's HISTORY.
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

__all__ = ["ALIGNS", "StackPlan", "plan_stack"]

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
    from ..stacking import Grid, frame_wcs

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
        if ref is not None:
            grid = Grid(result.reference_wcs, tuple(ref.shape))
    keep = [k for k in range(len(frames)) if selection is None or selection[k].keep]
    skipped = [s for s in (selection or []) if not s.keep]
    for s in skipped:
        log.warning("%s: skipped (%s)", s.label, s.reason)
        header.add_history(fits_label(f"skipped {s.label}: {s.reason}")[:72])
    if skipped:
        header["NSKIPPED"] = (len(skipped), "input frames not stacked (see HISTORY)")
    if not keep:
        first = "; ".join(f"{s.label}: {s.reason}" for s in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise SkystackError(f"no frame left to stack: {first}{more}")
    kept = [frames[k] for k in keep]
    wcs_list = [wcs_all[k] for k in keep]
    if align == "stars" and grid is None and grid_header is None:
        grid = Grid(*optimal_grid([(w, f.shape) for w, f in zip(wcs_list, kept)],
                                  reference=result.reference_wcs, crop=crop))
    return StackPlan(kept, wcs_list, grid, grid_reference, align, header, result, selection)
