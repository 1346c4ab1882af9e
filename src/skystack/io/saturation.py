"""Saturation masking: raw pixels at or above the detector's saturation level carry no
measurement (the true value is anywhere above it), so they become NaN (= no data) and every
combine leaves them out: a saturated star core in one frame is then taken from the frames
where it is not saturated (``COUNT`` lower there) instead of being averaged with a clipped
value; where every frame is saturated the product's ``MASK`` is 1.

The level (ADU, *raw* values as read: ``BSCALE``/``BZERO`` applied, before any calibration):

* ``--saturation LEVEL`` (:func:`saturation_level`'s ``level``) for every frame, else
* the frame's ``SATURATE`` keyword, used only while the frame is raw: not for a frame whose
  header says its bias was subtracted (``BIASSUB``) or that was already masked
  (``SATLEVEL``, written by this module on every frame it masks): after bias, dark and flat the
  raw level is lost (a flat below 1 lifts unsaturated pixels above it).

The night masks its raw frames inside the calibration, before the bias is subtracted
(:class:`skystack.night.calibrate.CalibratedSource`); ``combine`` and ``stack`` mask their
inputs with :class:`SaturationMaskedSource`. Only the pixels at or above the level are masked,
no grow: a bleed trail (blooming) is itself at full well, hence at the level; the wings of a
saturated star below it are real measurements.

Provenance (:func:`saturation_cards`): the product header's ``SATMASK`` is the number of
frames masked (0: no saturation masking was done), ``SATLEVEL`` their level when all share
one, and a ``HISTORY`` line per masked frame otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from astropy.io import fits

from ..core.tiles import Tile
from ..errors import SkystackError
from .reader import NATIVE_F32, HandlePool, StageSpec
from .sigma import sigma_source

__all__ = ["SATURATION_KEY", "DONE_KEY", "saturation_level", "check_level",
           "SaturationMaskedSource", "SaturationSpec", "mask_saturated", "mark_masked",
           "saturation_cards"]

SATURATION_KEY = "SATURATE"  # the detector's saturation level (raw ADU), a common convention
DONE_KEY = "SATLEVEL"  # written on a frame once its pixels >= this raw level are masked

_NATIVE = StageSpec(NATIVE_F32, 4)


def check_level(level: float | None, what: str = "--saturation") -> float | None:
    """``level`` as a finite float (None stays None); a one-line error otherwise."""
    if level is None:
        return None
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise SkystackError(f"{what} {level!r} is not a number") from None
    if not math.isfinite(value):
        raise SkystackError(f"{what} {level!r} is not a finite number of ADU")
    return value


def saturation_level(header: fits.Header | None, label: str,
                     level: float | None = None) -> float | None:
    """The raw level (ADU) at and above which a frame's pixels are masked, or None.

    ``level`` (the option) wins; otherwise the header's ``SATURATE`` unless the frame is no
    longer raw (``BIASSUB`` true, or ``SATLEVEL`` present: see the module docstring). A
    ``SATURATE`` that is not a finite number is a one-line error naming ``label``."""
    if level is not None:
        return check_level(level)
    if header is None or SATURATION_KEY not in header:
        return None
    if header.get("BIASSUB") is True or DONE_KEY in header:
        return None
    return check_level(header[SATURATION_KEY], f"{label}: {SATURATION_KEY}")


def mark_masked(header: fits.Header, level: float) -> None:
    """Record on a frame's header (a copy) that its raw pixels >= ``level`` were masked."""
    header[DONE_KEY] = (float(level), "raw ADU at/above which pixels were masked (NaN)")


class SaturationMaskedSource:
    """A pixel source whose values ``>= level`` read as NaN (the wrapped source is unchanged;
    thread-safe as it is). The GPU receives host-decoded float32 (the comparison is made
    here, on the values as read)."""

    def __init__(self, inner, level: float) -> None:
        self.inner = inner
        self.level = np.float32(level)
        self.shape = inner.shape

    def read(self, tile: Tile, out: np.ndarray) -> None:
        """The tile's pixels, NaN where the raw value is at or above the level."""
        self.inner.read(tile, out)
        out[out >= self.level] = np.nan

    def stage_spec(self) -> StageSpec:
        return _NATIVE

    def read_staged(self, tile: Tile, dest: np.ndarray) -> None:
        self.read(tile, dest[: tile.shape[0] * tile.shape[1] * 4].view(np.float32)
                  .reshape(tile.shape))

    def to_spec(self, label: str) -> SaturationSpec:
        """Reopened elsewhere: the wrapped source's spec and the level."""
        return SaturationSpec(self.inner.to_spec(label), float(self.level))


@dataclass(frozen=True)
class SaturationSpec:
    """A :class:`SaturationMaskedSource` described for another process."""

    inner: object
    level: float

    def open(self, pool: HandlePool) -> SaturationMaskedSource:
        """The masked source, its files in ``pool``."""
        return SaturationMaskedSource(self.inner.open(pool), self.level)

    def files(self) -> list[str]:
        """Every file the source reads."""
        return self.inner.files()


def mask_saturated(frames: list, level: float | None = None) -> list:
    """``frames`` with saturated pixels masked where a level applies (:func:`saturation_level`):
    each such frame gets a :class:`SaturationMaskedSource` and a header copy with
    ``SATLEVEL``; the others are returned as they are."""
    out = []
    for frame in frames:
        lv = saturation_level(frame.header, frame.label, level)
        if lv is None:
            out.append(frame)
            continue
        header = frame.header.copy()
        mark_masked(header, lv)
        # The file's own UNCERT (--uncertainty propagate) is found from the unwrapped source.
        sigma = sigma_source(frame)
        out.append(replace(frame, header=header, source=SaturationMaskedSource(frame.source, lv),
                           uncertainty=sigma))
    return out


def saturation_cards(header: fits.Header, frames: list) -> None:
    """Add the product's saturation provenance to ``header`` (see the module docstring)."""
    levels = []
    for f in frames:
        value = f.header.get(DONE_KEY) if f.header is not None else None
        if value is not None:
            levels.append((f.label, float(value)))
    comment = ("frames with raw pixels >= saturation masked" if levels
               else "no saturation masking was done")
    header["SATMASK"] = (len(levels), comment)
    distinct = {lv for _, lv in levels}
    if len(distinct) == 1:
        header[DONE_KEY] = (distinct.pop(), "raw ADU at/above which pixels were masked")
    else:
        for label, lv in levels:
            header.add_history(f"skystack: {label}: raw pixels >= {lv:g} ADU masked (saturated)")
