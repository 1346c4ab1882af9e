"""Building one stack of a night: align, choose the frames, choose the grid, stack.

All lights of an object (every filter) are aligned together, once
(:func:`skystack.register.plan.align_frames`), so that its stacks share one grid; each
filter's stack then keeps its frames that could be placed and pass the selection
(:func:`skystack.register.plan.choose_frames`), on the grid of the reference light (by stars)
or of the object's grid light (by WCS; its first light when that one has no usable WCS).
Lights that cannot be placed, are not selected, or miss the grid are skipped with the reason
in their :class:`~skystack.night.summary.FrameRecord`.

A mosaic camera's stacks hold every CCD image of the object and filter; aligned by WCS, their
grid is the union of the object's CCD images (:func:`skystack.night.ccds.union_grid`, oriented
as the grid light), and the CCD-to-CCD consistency in the overlaps is measured
(:func:`skystack.night.ccds.ccd_consistency`, in ``summary.json``; a CCD off by more than 2 %
is a warning in the product's notes).
"""

from __future__ import annotations

import os
import time

from astropy.io import fits

from ..colour.debayer import plane_cards
from ..errors import SkystackError
from ..register.plan import (
    NO_WCS,
    NOT_SELECTED,
    OFF_GRID,
    align_frames,
    alignment_cards,
    choose_frames,
    gridref_card,
    registration_grid,
)
from .ccds import ccd_consistency, consistency_warnings, frame_ccd, is_mosaic, union_grid
from .colour import green_frames, plane_frame
from .plan import Camera, StackJob
from .products import atomic_path
from .summary import Product, measurement_dict, registration_dict

__all__ = ["build_stack", "object_alignment"]


def object_alignment(night, obj: str, camera: Camera):
    """The :class:`~skystack.register.plan.Alignment` of all lights of an object (every
    filter) that could be calibrated, made once; None when none could (``night``: a
    :class:`skystack.night.build.NightBuild`)."""
    key = (obj, camera)
    if key in night.alignments:
        return night.alignments[key]
    lights = []
    for f in night.plan.object_lights[key]:
        try:
            lights.append(night.light(f))
        except SkystackError:
            continue  # reported by its stack's frames_for
    alignment = None
    if lights:
        t0 = time.perf_counter()
        alignment = align_frames(green_frames(lights, night.debayer), night.align,
                                 model=night.align_model, threads=night.threads)
        if alignment.mode == "stars":
            result = alignment.result
            ref = lights[result.reference_index] if result.reference_index is not None \
                else lights[0]
            night.log(f"align   stars   {obj}: {len(lights)} lights measured and registered on "
                      f"{os.path.basename(ref.path)} ({result.reference_reason}) "
                      f"{time.perf_counter() - t0:6.2f} s")
    night.alignments[key] = alignment
    return alignment


def _skip_reason(stage: str, reason: str) -> str:
    """A skipped light's reason in the summary (the registration's already says so)."""
    if stage == NO_WCS:
        return f"{reason} (no alignment possible without a WCS)"
    if stage == NOT_SELECTED:
        return f"not selected: {reason}"
    return reason


def _aligned(night, pairs: list, alignment) -> tuple[list, list, list]:
    """(frames, their WCS, their records) of ``pairs`` (record, calibrated light) that are
    placed and selected; the others' records get the reason, and the star measurements and
    registrations made go into the records."""
    # By file and HDU: the CCDs of a mosaic exposure share one file.
    index = {(os.path.abspath(f.path), f.hdu_index): k for k, f in enumerate(alignment.frames)} \
        if alignment is not None else {}
    found = []
    for rec, f in pairs:
        k = index.get((os.path.abspath(f.path), f.hdu_index))
        if k is None:
            rec.reason = "not measured (could not be read for registration)"
            continue
        found.append((k, rec, f))
    if not found:
        return [], [], []
    choice = choose_frames(alignment, [k for k, _, _ in found], selection=night.selection,
                           threads=night.threads)
    by_index = {k: (rec, f) for k, rec, f in found}
    result = alignment.result
    for k, (rec, _) in by_index.items():
        if k in choice.measurements:
            rec.stars = measurement_dict(choice.measurements[k])
        if result is not None:
            rec.registration = registration_dict(result.registrations[k],
                                                 k == result.reference_index)
    for skip in choice.skipped:
        by_index[skip.index][0].reason = _skip_reason(skip.stage, skip.reason)
    return ([by_index[k][1] for k in choice.kept], [alignment.wcs[k] for k in choice.kept],
            [by_index[k][0] for k in choice.kept])


def _grid(night, job: StackJob, alignment, usable: list, wcs_list: list) -> tuple:
    """(the light whose grid the stack takes, the Grid)."""
    from ..stacking import Grid

    if alignment.mode == "stars":
        result = alignment.result
        k = result.reference_index if result.reference_index is not None else 0
        return alignment.frames[k], registration_grid(result)
    try:
        ref = night.light(night.plan.grid_refs[(job.object, job.camera)])
    except SkystackError:
        ref = None
    # By file and HDU: colour lights are aligned on their green planes (night.colour).
    k = next((k for k, f in enumerate(alignment.frames) if ref is not None and (
        f is ref or (f.path, f.hdu_index) == (ref.path, ref.hdu_index))), None)
    wcs = alignment.wcs[k] if k is not None else None
    if is_mosaic(job.frames):
        # Every CCD image of the object (every filter: its stacks share the grid).
        placed = [(f, w) for f, w in zip(alignment.frames, alignment.wcs)
                  if not isinstance(w, SkystackError)]
        return ref if ref is not None else usable[0], union_grid(
            [f for f, _ in placed], [w for _, w in placed],
            None if isinstance(wcs, SkystackError) else wcs)
    if k is None or isinstance(wcs, SkystackError):
        # The object's grid light has no usable WCS: this group's first light's grid.
        return usable[0], Grid(wcs_list[0], usable[0].shape)
    return ref, Grid(wcs, ref.shape)


def _on_grid(usable: list, wcs_list: list, used_records: list, grid) -> tuple[list, list, list]:
    """The lights whose footprint overlaps the stack's grid; the others get their reason (they
    would contribute no pixel, and must not be counted as used)."""
    from ..stacking import frames_off_grid

    off = set(frames_off_grid(wcs_list, [f.shape for f in usable], grid))
    for k in off:
        used_records[k].reason = f"{OFF_GRID} (GRIDREF)"
    keep = [k for k in range(len(usable)) if k not in off]
    return ([usable[k] for k in keep], [wcs_list[k] for k in keep],
            [used_records[k] for k in keep])


def build_stack(night, job: StackJob, product: Product, header: fits.Header,
                state: str) -> bool:
    """Build (or reuse) the stack of ``job`` (``night``: a
    :class:`skystack.night.build.NightBuild`); False when no light can be stacked."""
    from ..api_reproject import stack_to_file

    if state == "reuse":
        return night.reuse(job, product, "light")
    pairs = night.frames_for(job, "light")
    alignment = object_alignment(night, job.object, job.camera)
    usable, wcs_list, used_records = _aligned(night, pairs, alignment)
    by_stars = alignment is not None and alignment.mode == "stars"
    if not usable:
        product.status = "failed"
        product.notes.append("no light frame could be aligned" if by_stars or not pairs
                             else "no light frame with a celestial WCS")
        return False
    header.extend(alignment_cards(alignment, on_gridref=True))
    ref, grid = _grid(night, job, alignment, usable, wcs_list)
    usable, wcs_list, used_records = _on_grid(usable, wcs_list, used_records, grid)
    if not usable:
        product.status = "failed"
        product.notes.append("no light frame overlaps the grid of "
                             f"{os.path.basename(ref.path or ref.label)}")
        return False
    n_skipped = len(job.frames) - len(usable)
    if n_skipped:
        product.notes.append(f"{n_skipped} light{'s' * (n_skipped != 1)} skipped")
    header["SKYGROUP"] = (job.group, "object / filter group")
    mosaic = is_mosaic(job.frames) and not by_stars
    if mosaic:
        header["GRIDREF"] = (f"union of {len(night.plan.object_lights[(job.object, job.camera)])}"
                             " CCD images", "grid: covers every CCD image of the object")
    else:
        header["GRIDREF"] = gridref_card(os.path.basename(ref.path or ref.label))
    if job.channel is not None:  # colour lights: this stack's plane, debayered after calibration
        usable = [plane_frame(f, job.channel, night.debayer) for f in usable]
        header.extend(plane_cards(job.channel, night.debayer), update=True)
    for line in night.stack_history:  # e.g. drizzle without rejection (night.options)
        header.add_history(line)
    with atomic_path(job.path, overwrite=True, stable=night.cluster is not None) as tmp:
        stack_to_file(usable, tmp, grid=grid, extra_header=header, overwrite=True,
                      wcs_list=wcs_list, **night.stack_options, **night.common())
    for rec in used_records:
        rec.used = True
    if mosaic:
        _check_ccds(night, product, usable, wcs_list)
    if night.save_calibrated:
        night.save_calibrated_lights(usable, [rec.file for rec in used_records])
    product.status = "built"
    return True


def _check_ccds(night, product: Product, usable: list, wcs_list: list) -> None:
    """The CCD-to-CCD consistency of a mosaic stack's CCD images, in its product (and a
    warning per CCD off by more than the threshold)."""
    ccds = [frame_ccd(f) for f in usable]
    if len(set(ccds)) < 2:
        return
    check = ccd_consistency(usable, wcs_list, ccds)
    product.ccd_consistency = check
    for line in consistency_warnings(check):
        product.notes.append(f"warning: {line}")
        night.log(f"warning {os.path.relpath(product.path, night.out)}: {line}")
