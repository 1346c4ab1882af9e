"""What a night did, for people and programs: ``summary.json`` and the printed table.

:class:`FrameRecord` is one raw file's fate (role, product, masters, star measurements and
registration when made, used or why not), :class:`Product` one output file, and
:class:`NightResult` what :func:`skystack.night.run.run_night` returns. :func:`write_summary`
writes ``summary.json``; :func:`format_night_table` the table printed by ``skystack night``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from .._version import __version__
from ..text_table import text_table
from .products import atomic_path

__all__ = ["FrameRecord", "NightResult", "Product", "format_night_table", "measurement_dict",
           "night_result", "object_alignment", "registration_dict", "write_summary"]


@dataclass
class FrameRecord:
    """One raw file's fate in the night (a row of the summary)."""

    file: str
    role: str
    group: str = ""
    masters: dict = field(default_factory=dict)
    used: bool = False
    reason: str = ""
    stars: dict = field(default_factory=dict)  # star measurements, when made
    registration: dict = field(default_factory=dict)  # when aligned by stars


@dataclass
class Product:
    """One output file of the night."""

    kind: str
    path: str
    inputs: list[str]
    status: str = "planned"  # built | reused | failed
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    key: dict = field(default_factory=dict)  # raw header values it is made for (FILTER...)
    # a mosaic stack's CCD-to-CCD consistency (skystack.night.ccds.ccd_consistency)
    ccd_consistency: dict = field(default_factory=dict)


@dataclass
class NightResult:
    """What ``run_night`` did: ``products`` in build order, ``frames`` one per raw file."""

    out_dir: str
    products: list[Product]
    frames: list[FrameRecord]
    seconds: float
    backend: str

    def product(self, kind: str, name: str | None = None) -> Product | None:
        for p in self.products:
            if p.kind == kind and (name is None or os.path.basename(p.path) == name):
                return p
        return None


def night_result(out_dir: str, products: list[Product], records: dict[str, FrameRecord],
                 seconds: float, backend: str) -> NightResult:
    """The result, frames sorted by file; a frame that no product used says so."""
    frames = sorted(records.values(), key=lambda r: r.file)
    for r in frames:
        if not r.used and not r.reason:
            r.reason = "not used (no product needed it)"
    return NightResult(out_dir, products, frames, seconds, backend)


def _finite(value: float, digits: int) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def measurement_dict(m) -> dict:
    """A frame's star measurement for the summary (pixels, ADU)."""
    return {"n_stars": int(m.n_stars), "fwhm_px": _finite(m.fwhm, 3),
            "ellipticity": _finite(m.ellipticity, 3), "background": _finite(m.background, 2),
            "background_rms": _finite(m.background_rms, 3)}


def registration_dict(r, is_reference: bool) -> dict:
    """A frame's registration for the summary: status, fit quality, shift/rotation/scale."""
    d = {"status": "reference" if is_reference else r.status, "model": r.model,
         "n_matched": int(r.n_matched), "rms_px": _finite(r.rms, 4),
         "max_residual_px": _finite(r.max_residual, 4)}
    if r.reason and not is_reference:
        d["reason"] = r.reason
    if r.ok and r.transform is not None:
        for key, value in r.transform.describe().items():
            if isinstance(value, float):
                d[key] = _finite(value, 5)
    return d


def object_alignment(alignment) -> dict:
    """How an object's lights were aligned (a :class:`skystack.register.plan.Alignment`, None
    when none of them could be read): mode, whether the stacks have sky coordinates, and by
    stars the reference light and why it was chosen."""
    if alignment is None or alignment.mode != "stars":
        return {"mode": "wcs", "sky_coordinates": True}
    result = alignment.result
    k = result.reference_index if result.reference_index is not None else 0
    return {"mode": "stars", "sky_coordinates": result.has_sky,
            "reference": alignment.frames[k].path, "why": result.reference_reason}


def write_summary(result: NightResult, *, raw_dir, stack_options: dict, align: dict,
                  selection: tuple = ()) -> None:
    """Write ``summary.json`` in the result's OUT_DIR (``align``: the options and the
    per-object alignments, :func:`object_alignment`; ``selection``: the cards recording
    ``--where``/``--exclude``, :meth:`skystack.io.selection.Selection.cards`)."""
    out = result.out_dir
    doc = {
        "skystack": __version__, "raw": str(raw_dir), "out": out,
        "backend": result.backend, "seconds": round(result.seconds, 3),
        "stack_options": stack_options,
        "products": [{"kind": p.kind, "path": os.path.relpath(p.path, out),
                      "key": p.key, "inputs": p.inputs,
                      "status": p.status, "frames": len(p.inputs),
                      "seconds": round(p.seconds, 3), "notes": p.notes,
                      **({"ccd_consistency": p.ccd_consistency} if p.ccd_consistency else {})}
                     for p in result.products],
        "align": align,
        **({"selection": {k if k != "HISTORY" else "history": v for k, v, _ in selection}}
           if selection else {}),
        "frames": [{"file": r.file, "role": r.role, "group": r.group, "masters": r.masters,
                    "used": r.used, "reason": r.reason,
                    **({"stars": r.stars} if r.stars else {}),
                    **({"registration": r.registration} if r.registration else {})}
                   for r in result.frames],
    }
    with atomic_path(os.path.join(out, "summary.json"), overwrite=True) as tmp:
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)


def _calibration_text(masters: dict) -> str:
    """``bias + dark_60s x1.5 + flat_V + badpix`` (and notes such as ``no flat for filter R``)."""
    parts = []
    for key in ("bias", "dark", "flat", "badpix"):
        name = masters.get(key)
        if name is None:
            continue
        name = os.path.splitext(name)[0]
        if key == "dark" and masters.get("dark_scale", 1.0) != 1.0:
            name += f" x{masters['dark_scale']:.4g}"
        parts.append(name)
    # A scaled dark's note repeats its "x1.5"; an unscaled dark with a note (no bias) does not.
    shown = "dark" in masters and masters.get("dark_scale", 1.0) == 1.0
    parts += [v for k, v in masters.items() if k.endswith("_note") and (k != "dark_note"
                                                                         or shown)]
    return " + ".join(parts)


def format_night_table(result: NightResult) -> str:
    """The printed table: one line per raw file (file, role, product, calibration, stars and
    FWHM when measured, status)."""
    measured = any(r.stars for r in result.frames)
    rows = [("file", "role", "product", "calibration")
            + (("stars", "FWHM") if measured else ()) + ("status",)]
    for r in result.frames:
        status = "used" if r.used else f"skipped: {r.reason}"
        row = (os.path.basename(r.file), r.role, r.group, _calibration_text(r.masters))
        if measured:
            fwhm = r.stars.get("fwhm_px") if r.stars else None
            row += (str(r.stars["n_stars"]) if r.stars else "",
                    f"{fwhm:.2f}" if fwhm is not None else "")
        rows.append(row + (status,))
    return "\n".join(text_table(rows[0], rows[1:], free_last=True))
