"""Registration of a list of frames onto a reference frame, frame selection, and their tables.

Frames are :class:`~skystack.io.inputs.Frame` records: their pixels are read once, whole, through
``frame.source`` (raw files, compressed files, arrays, or frames calibrated on the fly all work),
measured (:mod:`.stars`) and matched to the reference (:mod:`.match`). Each successful
registration becomes a celestial WCS on the reference's grid (:mod:`.wcs`), ready for
:func:`skystack.stacking.stack_frames`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS

from .match import MODELS, Registration, identity_transform, match_stars
from .stars import FrameMeasurement, measure_frame
from .wcs import reference_wcs, registered_wcs

__all__ = ["RegistrationResult", "Selection", "measure_frames", "choose_reference",
           "register_frames", "select_frames", "register_table", "format_register_table"]


def measure_frames(frames: Sequence, *, threads: int | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   **options) -> list[FrameMeasurement]:
    """Measure the stars of every frame (``options``: those of
    :func:`~skystack.register.stars.measure_stars`), ``threads`` frames at a time (default:
    up to 2 — each holds a whole frame in memory)."""
    workers = max(1, threads if threads is not None else min(2, os.cpu_count() or 1))
    out: list[FrameMeasurement | None] = [None] * len(frames)
    with ThreadPoolExecutor(workers, thread_name_prefix="skystack-measure") as pool:
        futures = {pool.submit(measure_frame, f, **options): k for k, f in enumerate(frames)}
        for done, fut in enumerate(futures):
            out[futures[fut]] = fut.result()
            if progress is not None:
                progress(done + 1, len(frames))
    return out  # type: ignore[return-value]


def choose_reference(measurements: Sequence[FrameMeasurement]) -> tuple[int, str]:
    """Index of the reference frame and why: the sharpest (smallest median FWHM) of the frames
    with at least half as many stars as the richest frame."""
    counts = np.array([m.n_stars for m in measurements])
    if counts.size == 0 or counts.max() == 0:
        return 0, "first frame (no frame has stars)"
    most = int(counts.max())
    fwhm = np.array([m.fwhm if math.isfinite(m.fwhm) else np.inf for m in measurements])
    rich = np.flatnonzero(counts >= 0.5 * most)
    best = int(rich[np.argmin(fwhm[rich])])
    if not math.isfinite(fwhm[best]):
        best = int(np.argmax(counts))
        return best, f"most stars ({most})"
    return best, (f"sharpest (FWHM {fwhm[best]:.2f} px) of the {rich.size} frame"
                  f"{'s' * (rich.size != 1)} with >= half the most stars ({most})")


@dataclass
class RegistrationResult:
    """Measurements and registrations of frames onto one reference.

    Lists are parallel to the frames given. ``reference_index`` is the reference's index among
    them (None when it was given separately); ``reference_reason`` says why it was chosen;
    ``reference_wcs`` is the linear celestial WCS of the reference's pixel grid and
    ``reference_wcs_source`` where it came from (``"header"`` or a synthetic TAN WCS and its
    pixel scale: ``has_sky`` is False, and the stack of such frames gets a pixel-only WCS).
    ``wcs[k]`` is frame k's registered WCS (None when not registered).
    """

    labels: list[str]
    measurements: list[FrameMeasurement]
    registrations: list[Registration]
    wcs: list[WCS | None]
    reference_label: str
    reference_index: int | None
    reference_reason: str
    reference_measurement: FrameMeasurement
    reference_wcs: WCS
    reference_wcs_source: str
    reference_shape: tuple[int, int]
    model: str = "similarity"
    seconds: dict = field(default_factory=dict)

    @property
    def ok(self) -> list[bool]:
        return [r.ok for r in self.registrations]

    @property
    def has_sky(self) -> bool:
        """Whether the reference's WCS is its header's: only then do the registered frames'
        WCS (and a stack of them) have real sky coordinates; a synthetic one is internal."""
        return self.reference_wcs_source == "header"


def _same_file(a, b) -> bool:
    if a is b:
        return True
    pa, pb = getattr(a, "path", None), getattr(b, "path", None)
    if pa and pb and getattr(a, "hdu_index", None) == getattr(b, "hdu_index", None):
        try:
            return os.path.samefile(pa, pb)
        except OSError:
            return False
    return False


def register_frames(frames: Sequence, reference=None, *, model: str = "similarity",
                    measurements: Sequence[FrameMeasurement] | None = None,
                    reference_measurement: FrameMeasurement | None = None,
                    max_stars: int = 300, tol: float = 3.0,
                    threads: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> RegistrationResult:
    """Register every frame onto a reference frame by its stars.

    Parameters
    ----------
    frames
        :class:`~skystack.io.inputs.Frame` records (any source, e.g. calibrated on the fly).
    reference
        None (choose with :func:`choose_reference`), an index into ``frames``, or a Frame (one
        of ``frames``, the same file, or another frame altogether).
    model
        ``"shift"``, ``"similarity"`` (default), ``"affine"``, ``"poly2"`` or ``"poly3"``.
    measurements, reference_measurement
        Star measurements already made (parallel to ``frames``), to avoid measuring again.
    max_stars
        Brightest stars of each frame used for matching.
    tol
        Capture radius (px) for the first match (see :func:`~.match.match_stars`).

    Returns
    -------
    RegistrationResult
        Frames that cannot be matched have ``status == "failed"`` and a reason; nothing raises
        for frames without stars.
    """
    import time

    if model not in MODELS:
        from ..errors import SkystackError

        raise SkystackError(f"invalid registration model {model!r}: choose from "
                            f"{', '.join(MODELS)}")
    frames = list(frames)
    t0 = time.perf_counter()
    if measurements is None:
        measurements = measure_frames(frames, threads=threads, progress=progress)
    measurements = list(measurements)
    t1 = time.perf_counter()
    ref_index: int | None
    if reference is None:
        ref_index, why = choose_reference(measurements)
    elif isinstance(reference, (int, np.integer)):
        ref_index, why = int(reference), "given"
    else:
        ref_index = next((k for k, f in enumerate(frames) if _same_file(f, reference)), None)
        why = "given"
    if ref_index is not None:
        ref_frame = frames[ref_index]
        ref_meas = measurements[ref_index]
    else:
        ref_frame = reference
        ref_meas = reference_measurement or measure_frame(reference)
    ref_wcs, wcs_source = reference_wcs(ref_frame)
    xr, yr = ref_meas.stars.for_matching(max_stars)
    regs: list[Registration] = []
    wcs_list: list[WCS | None] = []
    for k, (frame, meas) in enumerate(zip(frames, measurements)):
        if k == ref_index and ref_meas.n_stars < 4:
            n = ref_meas.n_stars
            reg = Registration.failed(model, f"{n} star{'s' * (n != 1)} detected (need >= 4)",
                                      n, n)
        elif k == ref_index:
            reg = Registration("ok", model, identity_transform(frame.shape, model),
                               n_matched=ref_meas.n_stars, rms=0.0, max_residual=0.0,
                               reason="reference", n_stars=ref_meas.n_stars,
                               n_reference=ref_meas.n_stars)
        else:
            xf, yf = meas.stars.for_matching(max_stars)
            reg = match_stars(xf, yf, xr, yr, frame.shape, model=model, tol=tol,
                              max_stars=max_stars)
        regs.append(reg)
        wcs_list.append(registered_wcs(reg, ref_wcs, frame.shape) if reg.ok else None)
    t2 = time.perf_counter()
    return RegistrationResult(
        labels=[f.label for f in frames], measurements=measurements, registrations=regs,
        wcs=wcs_list, reference_label=ref_frame.label, reference_index=ref_index,
        reference_reason=why, reference_measurement=ref_meas, reference_wcs=ref_wcs,
        reference_wcs_source=wcs_source, reference_shape=tuple(ref_frame.shape), model=model,
        seconds={"measure": t1 - t0, "match": t2 - t1})


@dataclass(frozen=True)
class Selection:
    """Whether a frame is stacked (``keep``) and, when not, why (``reason``, one line)."""

    label: str
    keep: bool
    reason: str = ""


def select_frames(measurements: Sequence[FrameMeasurement], *, max_fwhm: float | None = None,
                  max_ellipticity: float | None = None, min_stars: int | None = None,
                  best_fraction: float | None = None,
                  registrations: Sequence[Registration] | None = None) -> list[Selection]:
    """Keep or skip each frame, with the reason (parallel to ``measurements``).

    In order: a failed registration (when ``registrations`` are given) skips the frame; then
    fewer than ``min_stars`` stars, a median FWHM above ``max_fwhm`` px (or none measured), a
    median ellipticity above ``max_ellipticity``; finally ``best_fraction`` keeps the sharpest
    ``ceil(F × n)`` of the ``n`` frames still kept (at least one), by median FWHM.
    """
    from ..errors import SkystackError

    if best_fraction is not None and not 0.0 < best_fraction <= 1.0:
        raise SkystackError(f"invalid --best-fraction {best_fraction}: must be in (0, 1]")
    for name, value in (("max-fwhm", max_fwhm), ("max-ellipticity", max_ellipticity),
                        ("min-stars", min_stars)):
        if value is not None and not value >= 0:
            raise SkystackError(f"invalid --{name} {value}: must be >= 0")
    reasons: list[str] = []
    for k, m in enumerate(measurements):
        why = ""
        reg = registrations[k] if registrations is not None else None
        if reg is not None and not reg.ok:
            why = f"not registered: {reg.reason}"
        elif min_stars is not None and m.n_stars < min_stars:
            why = f"{m.n_stars} stars < {min_stars}"
        elif max_fwhm is not None and not m.fwhm <= max_fwhm:
            why = (f"FWHM {m.fwhm:.2f} px > {max_fwhm:g}" if math.isfinite(m.fwhm)
                   else "no FWHM measured")
        elif max_ellipticity is not None and not m.ellipticity <= max_ellipticity:
            why = (f"ellipticity {m.ellipticity:.2f} > {max_ellipticity:g}"
                   if math.isfinite(m.ellipticity) else "no ellipticity measured")
        reasons.append(why)
    if best_fraction is not None:
        alive = [k for k, r in enumerate(reasons) if not r]
        n_keep = max(1, math.ceil(best_fraction * len(alive) - 1e-9)) if alive else 0
        fwhm = [measurements[k].fwhm for k in alive]
        order = sorted(range(len(alive)), key=lambda i: (
            fwhm[i] if math.isfinite(fwhm[i]) else math.inf, -measurements[alive[i]].n_stars))
        for rank, i in enumerate(order):
            if rank >= n_keep:
                f = fwhm[i]
                reasons[alive[i]] = (f"not in the best {best_fraction:.0%} (FWHM "
                                     f"{f:.2f} px, rank {rank + 1} of {len(alive)})")
    return [Selection(m.label, not r, r) for m, r in zip(measurements, reasons)]


def _row(label, meas, reg, sel, ref_label):
    d = reg.transform.describe() if reg is not None and reg.transform is not None else {}
    coeffs = ""
    if reg is not None and reg.transform is not None:
        t = reg.transform
        coeffs = json.dumps({"origin": list(t.origin), "norm": t.norm,
                             "cx": [float(c) for c in t.cx], "cy": [float(c) for c in t.cy]})
    status = "failed" if reg is not None and not reg.ok else "ok"
    if label == ref_label and reg is not None and reg.reason == "reference":
        status = "reference"
    reason = reg.reason if reg is not None and not reg.ok else ""
    if sel is not None and not sel.keep and not reason:
        reason = sel.reason
    elif reg is not None and reg.ok and reg.reason not in ("", "reference"):
        reason = reg.reason
    nan = math.nan
    return dict(
        frame=label, status=status, keep=bool(sel.keep) if sel is not None else True,
        reason=reason, n_stars=meas.n_stars, fwhm=meas.fwhm, ellipticity=meas.ellipticity,
        background=meas.background, background_rms=meas.background_rms,
        model=reg.model if reg is not None and reg.ok else "",
        n_matched=reg.n_matched if reg is not None else 0,
        rms=reg.rms if reg is not None else nan,
        max_residual=reg.max_residual if reg is not None else nan,
        dx=d.get("dx", nan), dy=d.get("dy", nan), rotation_deg=d.get("rotation_deg", nan),
        scale=d.get("scale", nan), coeffs=coeffs)


def register_table(result: RegistrationResult, selection: Sequence[Selection] | None = None):
    """An astropy Table, one row per frame: measurements (n_stars, median FWHM px, median
    ellipticity, background and its rms), registration (status, model, n_matched, residual rms
    and max in px, shift dx/dy of the frame centre, rotation in degrees counter-clockwise in
    pixel axes, scale, and the full polynomial ``coeffs`` as JSON: reference ``x = Σ cx[k]
    u^p v^q`` with ``u = (x - origin[0]) / norm``, terms ordered 1, u, v, u², uv, v², u³, ...),
    and the selection (keep, reason). ``meta`` names the reference and why it was chosen."""
    from astropy.table import Table

    rows = [_row(lbl, m, r, selection[k] if selection is not None else None,
                 result.reference_label)
            for k, (lbl, m, r) in enumerate(zip(result.labels, result.measurements,
                                                 result.registrations))]
    names = list(_row("", result.reference_measurement, None, None, "").keys())
    table = Table(rows=[[row[n] for n in names] for row in rows] or None, names=names)
    if not rows:
        table = Table(names=names)
    table.meta["reference"] = result.reference_label
    table.meta["reference_reason"] = result.reference_reason
    table.meta["reference_wcs"] = result.reference_wcs_source
    table.meta["model"] = result.model
    for col, unit in (("fwhm", "pix"), ("rms", "pix"), ("max_residual", "pix"),
                      ("dx", "pix"), ("dy", "pix"), ("rotation_deg", "deg")):
        table[col].unit = unit
    return table


def format_register_table(result: RegistrationResult,
                          selection: Sequence[Selection] | None = None) -> str:
    """A fixed-width text table of :func:`register_table` for the terminal."""
    head = (f"{'frame':<28} {'stars':>6} {'FWHM':>6} {'ell':>5} {'match':>6} {'rms':>6} "
            f"{'dx':>8} {'dy':>8} {'rot°':>7} {'scale':>7}  status")
    lines = [f"reference: {result.reference_label} ({result.reference_reason}); "
             f"WCS: {result.reference_wcs_source}", head]

    def num(v, fmt, width):
        return f"{v:{width}{fmt}}" if v is not None and math.isfinite(v) else f"{'-':>{width}}"

    for row in register_table(result, selection):
        status = row["status"]
        if status != "failed" and not row["keep"]:
            status = "skipped"
        note = f": {row['reason']}" if row["reason"] else ""
        label = row["frame"] if len(row["frame"]) <= 28 else "…" + row["frame"][-27:]
        lines.append(
            f"{label:<28} {row['n_stars']:>6d} {num(row['fwhm'], '.2f', 6)} "
            f"{num(row['ellipticity'], '.2f', 5)} {row['n_matched']:>6d} "
            f"{num(row['rms'], '.3f', 6)} {num(row['dx'], '.2f', 8)} "
            f"{num(row['dy'], '.2f', 8)} {num(row['rotation_deg'], '.3f', 7)} "
            f"{num(row['scale'], '.5f', 7)}  {status}{note}")
    return "\n".join(lines)
