"""Calibration of raw frames inside the tile loop: no calibrated copy is ever written.

A :class:`CalibratedSource` wraps a raw frame's pixel source and the master frames' sources. When
the tile loop asks it for a tile it reads the raw tile and the same tile of each master and
returns, in float32 ADU::

    calibrated = (raw - overscan_row_level - bias - dark_scale * dark) / flat

with pixels flagged in the bad-pixel mask, pixels where the flat is not positive and finite,
NaN/BLANK raw pixels and raw pixels at or above ``Calibration.saturation`` (ADU, compared before
anything is subtracted: :mod:`skystack.io.saturation`) set to NaN (= no data, ignored by every
combine). With ``Calibration.cosmetic = "interpolate"`` the bad-pixel mask's pixels get values
interpolated from their good neighbours instead (:mod:`skystack.cosmetics.interpolate`; the
others stay NaN). Memory: one tile of each master per reading thread, independent of the number
of frames.

Conventions
-----------
* Sections (``BIASSEC``, ``TRIMSEC``, options) use IRAF/FITS notation ``[x1:x2,y1:y2]``: 1-based,
  inclusive, x = column (NAXIS1) first. They become 0-based half-open :class:`Section` objects in
  NumPy order (rows, cols).
* Overscan: the median of each row's overscan pixels is subtracted from that row (ccdproc's
  ``subtract_overscan(median=True, overscan_axis=1)`` without a model fit). An overscan given
  by rows (``overscan_axis=0``: the section spans every column) is subtracted per column.
* Trimming: the calibrated frame is the ``TRIMSEC`` part of the raw frame; its WCS reference
  pixel (``CRPIX``) is shifted so that sky positions are unchanged, and ``LTV1/2`` record the
  offset (IRAF convention).
* The dark master is bias-subtracted (ADU in its own exposure time ``t_dark``); it is scaled by
  ``dark_scale = t_light / t_dark`` (1 when exposures match).
* Gain normalisation (``Calibration.gain``, the night's ``--gain-normalise``): the calibrated
  pixels are then multiplied by the CCD's ``GAIN`` (e-/ADU), so they are in electrons; the
  header says ``BUNIT = 'electron'``, ``GAIN = 1`` and ``GAINNORM`` = the factor applied (the
  noise model, :mod:`skystack.uncertainty`, then works in electrons; ``RDNOISE`` is in
  electrons already).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from numba import njit

from ..cosmetics.interpolate import MARGIN, interpolate_bad, mark_interpolated
from ..errors import SkystackError
from ..io.inputs import Frame
from ..io.reader import NATIVE_F32, CompressedSpec, HandlePool, RawSpec, StageSpec, Tile
from ..io.saturation import mark_masked

__all__ = ["Section", "section_text", "parse_section", "Calibration", "CalibratedSource",
           "calibrated_frame", "InMemoryMaster", "MasterSpec", "CalibratedSpec"]

_NATIVE = StageSpec(NATIVE_F32, 4)
_SECTION = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")


# A section is the same rectangle the tile loop reads: rows [r0, r1), columns [c0, c1).
Section = Tile


def section_text(section: Section) -> str:
    """The section in FITS notation ``[x1:x2,y1:y2]`` (1-based, inclusive)."""
    return f"[{section.c0 + 1}:{section.c1},{section.r0 + 1}:{section.r1}]"


def parse_section(text: str, shape: tuple[int, int], what: str = "section") -> Section:
    """``[x1:x2,y1:y2]`` (1-based inclusive, either order) → :class:`Section`, checked against
    ``shape`` (rows, cols); one-line :class:`SkystackError` otherwise."""
    m = _SECTION.match(str(text))
    if not m:
        raise SkystackError(f"{what} {text!r} is not of the form [x1:x2,y1:y2]")
    x1, x2, y1, y2 = (int(v) for v in m.groups())
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    rows, cols = shape
    if x1 < 1 or y1 < 1 or x2 > cols or y2 > rows:
        raise SkystackError(f"{what} {text!r} lies outside the {rows}x{cols} image")
    return Section(y1 - 1, y2, x1 - 1, x2)


@dataclass(frozen=True)
class Calibration:
    """What to apply to a raw frame. Masters are :class:`Frame` objects (their sources are read
    tile by tile) of the calibrated frame's shape; any of them may be None."""

    overscan: Section | None = None
    trim: Section | None = None
    bias: Frame | None = None
    dark: Frame | None = None
    dark_scale: float = 1.0
    flat: Frame | None = None
    badpix: Frame | None = None
    gain: float | None = None  # e-/ADU: the calibrated pixels multiplied by it (electrons)
    # The flat's level relative to its mosaic's (a CCD's quantum efficiency, see
    # skystack.night.build.NightBuild.flat_scale): the pixels are also divided by it.
    flat_scale: float = 1.0
    # Raw ADU at/above which pixels are saturated (NaN); None: no saturation masking.
    saturation: float | None = None
    # "interpolate": bad-pixel-map pixels get values from their good neighbours instead of NaN
    # (skystack.cosmetics.interpolate); cfa_step 2 uses same-colour photosites (BAYERPAT).
    cosmetic: str = "mask"
    cfa_step: int = 1

    def describe(self) -> list[str]:
        """Human-readable steps, for HISTORY cards and the night's summary."""
        steps = []
        if self.saturation is not None:
            steps.append(f"raw pixels >= {self.saturation:g} ADU masked (saturated)")
        if self.overscan is not None:
            steps.append(f"overscan {section_text(self.overscan)} subtracted (median per line)")
        if self.trim is not None:
            steps.append(f"trimmed to {section_text(self.trim)}")
        if self.bias is not None:
            steps.append(f"bias {self.bias.label} subtracted")
        if self.dark is not None:
            steps.append(f"dark {self.dark.label} x {self.dark_scale:.6g} subtracted")
        if self.flat is not None:
            steps.append(f"divided by flat {self.flat.label}")
            if self.flat_scale != 1.0:
                steps.append(f"divided by {self.flat_scale:.6g}, the flat's level relative to "
                             "the mosaic's")
        if self.badpix is not None and self.cosmetic == "interpolate":
            steps.append(f"bad pixels of {self.badpix.label} interpolated from their good "
                         f"neighbours{' of the same colour' if self.cfa_step == 2 else ''} "
                         "(not measurements)")
        elif self.badpix is not None:
            steps.append(f"bad pixels of {self.badpix.label} masked")
        if self.gain is not None:
            steps.append(f"multiplied by GAIN {self.gain:.6g} e-/ADU (electrons)")
        return steps


_BUFFERS = threading.local()


def _scratch(name: str, shape: tuple[int, int]) -> np.ndarray:
    """A float32 buffer per reading thread and purpose, reused across tiles and frames."""
    key = f"buf_{name}"
    buf = getattr(_BUFFERS, key, None)
    size = shape[0] * shape[1]
    if buf is None or buf.size < size:
        buf = np.empty(size, np.float32)
        setattr(_BUFFERS, key, buf)
    return buf[:size].reshape(shape)


class InMemoryMaster:
    """A master frame's pixels decoded once into memory (native float32), read by slicing.

    Every light reads the same masters, tile after tile: holding them (when they fit the memory
    budget) saves decoding each master again for every light and lets the calibration use
    views. ``file_source`` is kept for processes that must reopen the file (Dask workers)."""

    def __init__(self, file_source, shape: tuple[int, int]) -> None:
        self.file_source = file_source
        self.shape = tuple(shape)
        self.data = np.empty(self.shape, np.float32)
        file_source.read(Tile(0, self.shape[0], 0, self.shape[1]), self.data)

    def read(self, tile: Tile, out: np.ndarray) -> None:
        np.copyto(out, self.data[tile.r0:tile.r1, tile.c0:tile.c1])

    def stage_spec(self) -> StageSpec:
        return _NATIVE

    def read_staged(self, tile: Tile, dest: np.ndarray) -> None:
        self.read(tile, dest[: tile.shape[0] * tile.shape[1] * 4].view(np.float32)
                  .reshape(tile.shape))

    def to_spec(self, label: str):
        """Reopened elsewhere from its file (:attr:`file_source`)."""
        return self.file_source.to_spec(label)


def hold_in_memory(frame: Frame) -> Frame:
    """``frame`` with its pixels held decoded in memory (see :class:`InMemoryMaster`)."""
    return Frame(frame.label, frame.shape, frame.header,
                 InMemoryMaster(frame.source, frame.shape), frame.path, frame.hdu_index)


_NONE = np.zeros((1, 1), np.float32)


@njit(nogil=True, cache=True)
def _calibrate_tile(out, bias, use_bias, dark, dark_scale, use_dark, flat, use_flat, bad,
                    use_bad):  # pragma: no cover - compiled
    """(out - bias - dark * dark_scale) / flat in one pass, float32 arithmetic in that order;
    NaN where the flat is not positive and finite, or ``bad`` is nonzero."""
    nan = np.float32(np.nan)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            v = out[i, j]
            if use_bias:
                v = v - bias[i, j]
            if use_dark:
                v = v - dark[i, j] * dark_scale
            if use_flat:
                f = flat[i, j]
                v = v / f if (f > 0 and f - f == 0) else nan
            if use_bad and bad[i, j] != 0:
                v = nan
            out[i, j] = v


class CalibratedSource:
    """Pixel source of a calibrated frame (see module docstring); thread-safe like the raw
    sources: each thread reads into its own scratch buffers."""

    def __init__(self, raw, raw_shape: tuple[int, int], calibration: Calibration,
                 label: str) -> None:
        self.raw = raw
        self.raw_shape = raw_shape
        self.cal = calibration
        self.label = label
        trim = calibration.trim or Section(0, raw_shape[0], 0, raw_shape[1])
        self.offset = (trim.r0, trim.c0)
        self.shape = trim.shape
        for master in (calibration.bias, calibration.dark, calibration.flat,
                       calibration.badpix):
            if master is not None and master.shape != self.shape:
                raise SkystackError(
                    f"{label}: master {master.label} is {master.shape[0]}x{master.shape[1]}, "
                    f"the calibrated frame {self.shape[0]}x{self.shape[1]}")
        os_ = calibration.overscan
        if os_ is not None:
            full_rows = os_.r0 == 0 and os_.r1 == raw_shape[0]
            full_cols = os_.c0 == 0 and os_.c1 == raw_shape[1]
            # Columns at the side of the image (the usual case): one level per row.
            self.overscan_axis = 1 if full_rows or not full_cols else 0

    def _overscan_levels(self, raw_tile: Tile) -> np.ndarray:
        """Median overscan level per row (axis 1) or per column (axis 0) of ``raw_tile``."""
        os_ = self.cal.overscan
        if self.overscan_axis == 1:
            region = Tile(raw_tile.r0, raw_tile.r1, os_.c0, os_.c1)
            buf = _scratch("overscan", region.shape)
            self.raw.read(region, buf)
            return np.nanmedian(buf, axis=1)[:, None].astype(np.float32)
        region = Tile(os_.r0, os_.r1, raw_tile.c0, raw_tile.c1)
        buf = _scratch("overscan", region.shape)
        self.raw.read(region, buf)
        return np.nanmedian(buf, axis=0)[None, :].astype(np.float32)

    def read(self, tile: Tile, out: np.ndarray) -> None:
        """Write the calibrated pixels of ``tile`` (calibrated-frame coordinates) into ``out``."""
        if self.cal.cosmetic == "interpolate" and self.cal.badpix is not None:
            self._read_interpolated(tile, out)
        else:
            self._read_masked(tile, out)

    def _read_interpolated(self, tile: Tile, out: np.ndarray) -> None:
        """The tile with its bad-pixel-map pixels interpolated: calibrated with
        :data:`~skystack.cosmetics.interpolate.MARGIN` pixels of context on each side, so that
        the values do not depend on the tiling."""
        m = MARGIN
        big = Tile(max(0, tile.r0 - m), min(self.shape[0], tile.r1 + m), max(0, tile.c0 - m),
                   min(self.shape[1], tile.c1 + m))
        block = np.empty(big.shape, np.float32)
        self._read_masked(big, block)
        bad = self._master_tile(self.cal.badpix, big, "bad") != 0
        interpolate_bad(block, bad, self.cal.cfa_step)
        out[...] = block[tile.r0 - big.r0:tile.r1 - big.r0, tile.c0 - big.c0:tile.c1 - big.c0]

    def _read_masked(self, tile: Tile, out: np.ndarray) -> None:
        """The calibrated pixels, NaN at bad pixels (see module docstring)."""
        dr, dc = self.offset
        raw_tile = Tile(tile.r0 + dr, tile.r1 + dr, tile.c0 + dc, tile.c1 + dc)
        cal = self.cal
        levels = None
        if cal.overscan is not None:
            levels = self._overscan_levels(raw_tile)  # uses the scratch before the raw read
        self.raw.read(raw_tile, out)
        # Saturation is a raw level: decided before anything is subtracted.
        saturated = out >= np.float32(cal.saturation) if cal.saturation is not None else None
        if levels is not None:
            out -= levels
        bias, dark, flat, bad = (self._master_tile(m, tile, name) for m, name in (
            (cal.bias, "bias"), (cal.dark, "dark"), (cal.flat, "flat"), (cal.badpix, "bad")))
        _calibrate_tile(out, bias, cal.bias is not None, dark, np.float32(cal.dark_scale),
                        cal.dark is not None, flat, cal.flat is not None, bad,
                        cal.badpix is not None)
        factor = (1.0 if cal.gain is None else cal.gain) / (
            cal.flat_scale if cal.flat is not None else 1.0)
        if factor != 1.0:
            out *= np.float32(factor)
        if saturated is not None:
            out[saturated] = np.nan

    @staticmethod
    def _master_tile(master: Frame | None, tile: Tile, name: str) -> np.ndarray:
        """A master's pixels on ``tile``: a view when held in memory, else read into a
        scratch buffer of this thread."""
        if master is None:
            return _NONE
        if isinstance(master.source, InMemoryMaster):
            return master.source.data[tile.r0:tile.r1, tile.c0:tile.c1]
        buf = _scratch(name, tile.shape)
        master.source.read(tile, buf)
        return buf

    def stage_spec(self) -> StageSpec:
        """Calibrated pixels are computed on the host and shipped as float32."""
        return _NATIVE

    def read_staged(self, tile: Tile, dest: np.ndarray) -> None:
        self.read(tile, dest[: tile.shape[0] * tile.shape[1] * 4].view(np.float32)
                  .reshape(tile.shape))

    def to_spec(self, label: str) -> CalibratedSpec:
        """The picklable description that rebuilds this source elsewhere: the raw frame's spec
        and the masters', by path (:class:`CalibratedSpec`)."""
        cal = self.cal

        def master(frame: Frame | None) -> MasterSpec | None:
            if frame is None:
                return None
            return MasterSpec(frame.label, tuple(frame.shape), frame.source.to_spec(label))

        return CalibratedSpec(self.raw.to_spec(label), tuple(self.raw_shape), self.label,
                              cal.overscan, cal.trim, master(cal.bias), master(cal.dark),
                              float(cal.dark_scale), master(cal.flat), master(cal.badpix),
                              cal.gain, float(cal.flat_scale), cal.saturation, cal.cosmetic,
                              cal.cfa_step)


@dataclass(frozen=True)
class MasterSpec:
    """A master frame of a calibration: its label (for messages), shape and source's spec."""

    label: str
    shape: tuple[int, int]
    source: RawSpec | CompressedSpec

    def open(self, pool: HandlePool) -> Frame:
        """The master as a frame whose source reads its file (``pool`` holds the files)."""
        return Frame(self.label, self.shape, fits.Header(), self.source.open(pool))


@dataclass(frozen=True)
class CalibratedSpec:
    """A raw frame calibrated on the fly (:class:`CalibratedSource`), reopened by path."""

    raw: RawSpec | CompressedSpec
    raw_shape: tuple[int, int]
    label: str
    overscan: Tile | None = None
    trim: Tile | None = None
    bias: MasterSpec | None = None
    dark: MasterSpec | None = None
    dark_scale: float = 1.0
    flat: MasterSpec | None = None
    badpix: MasterSpec | None = None
    gain: float | None = None
    flat_scale: float = 1.0
    saturation: float | None = None
    cosmetic: str = "mask"
    cfa_step: int = 1

    def _masters(self) -> tuple[MasterSpec | None, ...]:
        return (self.bias, self.dark, self.flat, self.badpix)

    def open(self, pool: HandlePool) -> CalibratedSource:
        """The calibrated source this spec describes, its files in ``pool``."""
        bias, dark, flat, badpix = (m.open(pool) if m is not None else None
                                    for m in self._masters())
        cal = Calibration(overscan=self.overscan, trim=self.trim, bias=bias, dark=dark,
                          dark_scale=self.dark_scale, flat=flat, badpix=badpix, gain=self.gain,
                          flat_scale=self.flat_scale, saturation=self.saturation,
                          cosmetic=self.cosmetic, cfa_step=self.cfa_step)
        return CalibratedSource(self.raw.open(pool), self.raw_shape, cal, self.label)

    def files(self) -> list[str]:
        """Every file the source reads: the raw frame's, then the masters'."""
        files = self.raw.files()
        for m in self._masters():
            if m is not None:
                files += m.source.files()
        return files


def _shift_wcs(header: fits.Header, trim: Section) -> None:
    """Keep sky positions when the frame is cut to ``trim`` (CRPIX and IRAF LTV)."""
    if trim.r0 == 0 and trim.c0 == 0:
        return
    for axis, delta in ((1, trim.c0), (2, trim.r0)):
        if f"CRPIX{axis}" in header:
            header[f"CRPIX{axis}"] = float(header[f"CRPIX{axis}"]) - delta
        header[f"LTV{axis}"] = (float(header.get(f"LTV{axis}", 0.0)) - delta,
                                "offset from the raw frame (trimmed)")


def shift_cfa_cards(header: fits.Header, trim: Section, shape: tuple[int, int],
                    new_shape: tuple[int, int], label: str) -> None:
    """Keep every photosite's colour when a colour (Bayer) frame of ``shape`` is cut to
    ``trim``: an odd first row or column moves the pattern (``XBAYROFF``/``YBAYROFF``)."""
    from ..colour.cfa import cfa_pattern

    pattern = cfa_pattern(header, label)
    if pattern is not None:
        for key, value, comment in pattern.cropped(trim.r0, trim.c0, shape, new_shape).cards():
            header[key] = (value, comment)


def calibrated_frame(frame: Frame, calibration: Calibration) -> Frame:
    """``frame`` as the tile loop should see it once calibrated (shape trimmed, WCS shifted,
    ``HISTORY`` cards for each step); pixels are calibrated lazily, tile by tile."""
    source = CalibratedSource(frame.source, frame.shape, calibration, frame.label)
    header = frame.header.copy()
    if calibration.trim is not None:
        _shift_wcs(header, calibration.trim)
        shift_cfa_cards(header, calibration.trim, frame.shape, source.shape, frame.label)
        for key in ("TRIMSEC", "BIASSEC", "DATASEC"):
            header.remove(key, ignore_missing=True)
    header["NAXIS1"], header["NAXIS2"] = source.shape[1], source.shape[0]
    for step in calibration.describe():
        header.add_history(f"skystack: {step}")
    if calibration.bias is not None or calibration.overscan is not None:
        # Its pixels no longer hold the bias level (skystack.uncertainty's noise model).
        header["BIASSUB"] = (True, "bias level subtracted")
    if calibration.saturation is not None:
        mark_masked(header, calibration.saturation)
    if calibration.badpix is not None and calibration.cosmetic == "interpolate":
        mark_interpolated(header)
    if calibration.gain is not None:
        header["BUNIT"] = ("electron", "calibrated and multiplied by GAINNORM")
        header["GAIN"] = (1.0, "e-/ADU: pixels in electrons")
        header["GAINNORM"] = (calibration.gain, "e-/ADU: the raw GAIN the pixels were scaled by")
    return Frame(frame.label, source.shape, header, source, frame.path, frame.hdu_index)
