"""Alignment and frame selection: which frames, which WCS, which grid.

One decision for ``skystack stack`` (:func:`plan_stack`) and ``skystack night``:
:func:`align_frames` chooses the mode (``auto``: by WCS or by stars) and places every frame,
:func:`choose_frames` says which are stacked and why the others are not, and
:func:`alignment_cards` writes the ALIGN/REGMODEL/REGREF cards (GRIDREF: :func:`gridref_card`).
The night aligns all the lights of an object (every filter) at once, so that its colours share
one grid, and chooses the frames of each filter's stack; ``skystack stack`` does both for its
inputs.

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

Which frames count (one rule for ``skystack stack``; the night skips such a light with the
reason instead): a frame whose WCS cannot place it (not celestial, a WCS keyword
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

__all__ = ["ALIGNS", "NOT_REGISTERED", "NOT_SELECTED", "NO_WCS", "OFF_GRID", "Alignment",
           "FrameChoice", "Skip", "StackPlan", "align_frames", "alignment_cards",
           "choose_frames", "gridref_card", "keep_frames_on_grid", "plan_stack",
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
    from ..core.grid import Grid
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
    from ..core.grid import frames_off_grid

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


def _check_align(align: str) -> None:
    if align not in ALIGNS:
        raise SkystackError(f"invalid --align {align!r}: choose from {', '.join(ALIGNS)}")


def _own_wcs(frame):
    """The frame's celestial WCS from its header, or the SkystackError saying why not."""
    from ..core.grid import frame_wcs

    try:
        return frame_wcs(frame)
    except SkystackError as exc:
        return exc


def _reference_frame(reference, hdu):
    """A Frame for ``reference`` (a Frame, a path, or anything :func:`load_frames` takes)."""
    from ..io.inputs import Frame, load_frames

    if isinstance(reference, Frame):
        return reference
    return load_frames([os.fspath(reference) if isinstance(reference, os.PathLike)
                        else reference], hdu=hdu)[0]


@dataclass
class Alignment:
    """How a set of frames is aligned: the one decision behind ``skystack stack`` and
    ``skystack night`` (:func:`align_frames`).

    ``mode`` is ``"wcs"`` or ``"stars"`` (``auto`` resolved) and ``why`` says why. ``wcs[k]``
    places ``frames[k]``: by WCS its own celestial WCS, or the :class:`SkystackError` saying
    why it has none; by stars its registered WCS, or None when it could not be registered
    (``result``, the :class:`~.align.RegistrationResult`, says why)."""

    frames: list
    mode: str
    why: str
    model: str
    wcs: list
    result: RegistrationResult | None = None


def align_frames(frames: list, align: str = "auto", *, model: str = "similarity",
                 reference=None, hdu=None, wcs: list | None = None,
                 threads: int | None = None) -> Alignment:
    """Decide how ``frames`` are aligned, and place each one (see :class:`Alignment`).

    ``align``: ``"wcs"``, ``"stars"``, or ``"auto"``: by WCS when every frame has a celestial
    WCS, else by stars. ``wcs``: each frame's own WCS (or the SkystackError saying why it has
    none) when the caller already has them. By stars the frames are registered
    (:func:`~.align.register_frames`, transform ``model``) on ``reference`` (a Frame or a
    file, read only then) or, when None, on the frame chosen by
    :func:`~.align.choose_reference`. Nothing raises for a frame without WCS or stars: the
    caller decides (:func:`choose_frames`)."""
    _check_align(align)
    own = None
    if align != "stars":
        own = list(wcs) if wcs is not None else [_own_wcs(f) for f in frames]
    why = f"align={align}"
    if align == "auto":
        missing = next((w for w in own if isinstance(w, SkystackError)), None)
        align = "wcs" if missing is None else "stars"
        why = "every frame has a celestial WCS" if missing is None else f"{missing}"
    if align == "wcs":
        return Alignment(frames, "wcs", why, model, own)
    ref = _reference_frame(reference, hdu) if reference is not None else None
    result = register_frames(frames, reference=ref, model=model, threads=threads)
    return Alignment(frames, "stars", why, model, list(result.wcs), result)


#: Why a frame is not stacked (:attr:`Skip.stage`): it has no WCS (aligned by WCS), it could
#: not be registered (by stars), or the frame selection left it out.
NO_WCS, NOT_REGISTERED, NOT_SELECTED = "wcs", "registration", "selection"


@dataclass(frozen=True)
class Skip:
    """A frame not stacked: its index in :attr:`Alignment.frames`, the ``stage`` that left it
    out (:data:`NO_WCS`, :data:`NOT_REGISTERED`, :data:`NOT_SELECTED`) and the reason (one
    line, as :func:`~.align.select_frames` or :func:`skystack.stacking.frame_wcs` words it)."""

    index: int
    stage: str
    reason: str


@dataclass
class FrameChoice:
    """Which frames of an :class:`Alignment` are stacked (:func:`choose_frames`).

    ``kept`` and ``skipped`` follow the order of the indices given; ``measurements`` maps an
    index to its star measurement (every frame by stars; the frames placed by WCS when a
    selection measured them); ``selection`` is :func:`~.align.select_frames`' decision for each
    frame it judged (every frame by stars; the placed ones by WCS, None without selection)."""

    kept: list[int]
    skipped: list[Skip]
    measurements: dict = field(default_factory=dict)
    selection: list[Selection] | None = None


def choose_frames(alignment: Alignment, indices: list[int] | None = None, *,
                  selection: dict | None = None, threads: int | None = None) -> FrameChoice:
    """The frames among ``indices`` (default: all) of ``alignment`` that are stacked.

    By WCS a frame without one is skipped; by stars, one that could not be registered. Then
    ``selection`` (keywords of :func:`~.align.select_frames`; None values ignored) judges the
    rest by their stars, measured here when aligned by WCS (``threads`` frames at a time).
    ``best_fraction`` ranks only the frames given: a caller that stacks subsets (a night's
    filters) chooses within each."""
    indices = list(range(len(alignment.frames))) if indices is None else list(indices)
    thresholds = {k: v for k, v in (selection or {}).items() if v is not None}
    skipped: list[Skip] = []
    if alignment.mode == "stars":
        result = alignment.result
        judged = indices
        measurements = {k: result.measurements[k] for k in indices}
        decisions = select_frames([result.measurements[k] for k in indices],
                                  registrations=[result.registrations[k] for k in indices],
                                  **thresholds)
        stages = [NOT_SELECTED if result.registrations[k].ok else NOT_REGISTERED
                  for k in indices]
    else:
        judged = [k for k in indices if not isinstance(alignment.wcs[k], SkystackError)]
        skipped = [Skip(k, NO_WCS, str(alignment.wcs[k])) for k in indices if k not in judged]
        measurements, decisions = {}, None
        if thresholds and judged:
            meas = measure_frames([alignment.frames[k] for k in judged], threads=threads)
            measurements = dict(zip(judged, meas))
            decisions = select_frames(meas, **thresholds)
        stages = [NOT_SELECTED] * len(judged)
    kept = list(judged)
    if decisions is not None:
        kept = [k for k, d in zip(judged, decisions) if d.keep]
        skipped += [Skip(k, stage, d.reason) for k, d, stage in zip(judged, decisions, stages)
                    if not d.keep]
    order = {k: n for n, k in enumerate(indices)}
    skipped.sort(key=lambda s: order[s.index])
    return FrameChoice(kept, skipped, measurements, decisions)


def alignment_cards(alignment: Alignment, *, on_gridref: bool = False) -> fits.Header:
    """The header cards saying how a stack's frames were aligned: ALIGN and, by stars,
    REGMODEL and REGREF (the registration reference).

    ``on_gridref``: the stack is on the pixel grid of one of its lights, named by GRIDREF
    (:func:`gridref_card`; ``skystack night``), which is also the registration reference: no
    REGREF, and the comments refer to GRIDREF."""
    header = fits.Header()
    stars = alignment.mode == "stars"
    if not on_gridref:
        header["ALIGN"] = (alignment.mode, "frames aligned by their WCS or by their stars")
        if stars:
            header["REGREF"] = (fits_label(alignment.result.reference_label)[-68:],
                                "registration reference frame")
            header["REGMODEL"] = (alignment.model, "registration model, frame px -> reference px")
    elif stars:
        header["ALIGN"] = ("stars", "frames registered on GRIDREF by their stars")
        header["REGMODEL"] = (alignment.model, "registration model")
    else:
        header["ALIGN"] = ("wcs", "frames aligned by their WCS")
    return header


def gridref_card(name: str) -> tuple[str, str]:
    """GRIDREF: the light (file name) whose WCS and shape are the stack's grid."""
    return fits_label(name), "grid: WCS and shape of this light"


def plan_stack(frames: list, *, align: str = "wcs", reference=None, grid_header=None,
               crop: str = "union", model: str = "similarity", max_fwhm: float | None = None,
               max_ellipticity: float | None = None, min_stars: int | None = None,
               best_fraction: float | None = None, hdu=None,
               threads: int | None = None) -> StackPlan:
    """Decide frames, WCS and (for star alignment) grid of a stack (see module docstring)."""
    from ..regrid.grid import optimal_grid

    _check_align(align)
    if reference is not None and grid_header is not None:
        raise SkystackError("give --reference or --grid-header, not both")
    alignment = align_frames(frames, align, model=model, reference=reference, hdu=hdu,
                             threads=threads)
    header = alignment_cards(alignment)
    result = alignment.result
    grid = None
    grid_reference = reference
    if alignment.mode == "wcs":
        no_wcs = next((w for w in alignment.wcs if isinstance(w, SkystackError)), None)
        if no_wcs is not None:  # a frame that --align wcs cannot place is an error
            raise no_wcs
    else:
        grid_reference = None
        if not result.has_sky and grid_header is not None:
            raise SkystackError(
                f"--grid-header needs sky coordinates, and the frames were aligned by their "
                f"stars on {result.reference_label}, which has no usable WCS "
                f"({result.reference_wcs_source})")
        if reference is not None:
            grid = registration_grid(result)
    choice = choose_frames(alignment, selection=dict(
        max_fwhm=max_fwhm, max_ellipticity=max_ellipticity, min_stars=min_stars,
        best_fraction=best_fraction), threads=threads)
    skipped = [s for s in (choice.selection or []) if not s.keep]
    record_skipped(header, [(s.label, s.reason) for s in skipped])
    if not choice.kept:
        first = "; ".join(f"{s.label}: {s.reason}" for s in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise SkystackError(f"no frame left to stack: {first}{more}")
    kept = [frames[k] for k in choice.kept]
    wcs_list = [alignment.wcs[k] for k in choice.kept]
    if alignment.mode == "stars" and grid is None and grid_header is None:
        # Without sky coordinates the grid shares the reference's tangent point, so that its
        # pixels map linearly onto the reference's (the product's pixel-only WCS).
        tangent = None if result.has_sky else tuple(result.reference_wcs.wcs.crval)
        grid = registration_grid(result, *optimal_grid(
            [(w, f.shape) for w, f in zip(wcs_list, kept)], reference=result.reference_wcs,
            crop=crop, labels=[f.label for f in kept], tangent=tangent))
    return StackPlan(kept, wcs_list, grid, grid_reference, alignment.mode, header, result,
                     choice.selection)
