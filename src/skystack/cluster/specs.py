"""Picklable descriptions of pixel sources, reopened by path on a worker.

The sources of :mod:`skystack.io.reader` hold open file descriptors (a :class:`HandlePool`)
and locks, which cannot travel to another process. A *spec* records only what is needed to
rebuild the source on a worker: the file's absolute path, the data offset, shape and scaling
found when the client scanned the headers (so workers never parse a FITS header again), and for
calibrated frames (``skystack night``) the raw source plus the masters, also by path.

Every path must be visible under the same name on every worker (shared storage: NFS, Lustre,
a local disk for a :class:`~distributed.LocalCluster`). In-memory inputs (arrays, HDUs, CCDData)
cannot be described: pixel data never passes through the client or the scheduler.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from astropy.io import fits

from ..errors import SkystackError
from ..io.inputs import Frame
from ..io.reader import CompressedFitsSource, HandlePool, RawFitsSource, Tile
from ..night.calibrate import CalibratedSource, Calibration

__all__ = ["RawSpec", "CompressedSpec", "MasterSpec", "CalibratedSpec", "source_spec",
           "open_source", "spec_files"]


@dataclass(frozen=True)
class RawSpec:
    """An uncompressed FITS image read by offset (:class:`RawFitsSource`)."""

    path: str
    data_offset: int
    shape: tuple[int, int]
    bitpix: int
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None
    mask: RawSpec | None = None


@dataclass(frozen=True)
class CompressedSpec:
    """A tile-compressed image HDU (:class:`CompressedFitsSource`)."""

    path: str
    hdu_index: int
    shape: tuple[int, int]


@dataclass(frozen=True)
class MasterSpec:
    """A master frame of a calibration: its label (for messages), shape and source."""

    label: str
    shape: tuple[int, int]
    source: RawSpec | CompressedSpec


@dataclass(frozen=True)
class CalibratedSpec:
    """A raw frame calibrated on the fly (:class:`CalibratedSource`)."""

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


Spec = RawSpec | CompressedSpec | CalibratedSpec


def _master_spec(frame: Frame | None, label: str) -> MasterSpec | None:
    if frame is None:
        return None
    # A master held in memory by the night (InMemoryMaster) is reopened from its file.
    source = getattr(frame.source, "file_source", frame.source)
    return MasterSpec(frame.label, tuple(frame.shape), source_spec(source, label))


def source_spec(source, label: str) -> Spec:
    """The spec of a frame's pixel source; ``label`` names the frame in the error raised for a
    source that cannot be reopened elsewhere (in-memory data)."""
    if isinstance(source, RawFitsSource):
        mask = source_spec(source.mask, label) if source.mask is not None else None
        return RawSpec(os.path.abspath(source.path), int(source.data_offset),
                       tuple(source.shape), int(source.bitpix), source.bscale, source.bzero,
                       None if source.blank is None else int(source.blank), mask)
    if isinstance(source, CompressedFitsSource):
        return CompressedSpec(os.path.abspath(source.path), int(source.hdu_index),
                              tuple(source.shape))
    if isinstance(source, CalibratedSource):
        cal = source.cal
        return CalibratedSpec(source_spec(source.raw, label), tuple(source.raw_shape),
                              source.label, cal.overscan, cal.trim,
                              _master_spec(cal.bias, label), _master_spec(cal.dark, label),
                              float(cal.dark_scale), _master_spec(cal.flat, label),
                              _master_spec(cal.badpix, label))
    raise SkystackError(
        f"{label}: in-memory input cannot run on a cluster (give FITS files on storage that "
        "every worker can read)")


def open_source(spec: Spec, pool: HandlePool):
    """Rebuild the source a spec describes, its file descriptors in ``pool`` (on the worker)."""
    if isinstance(spec, RawSpec):
        mask = open_source(spec.mask, pool) if spec.mask is not None else None
        return RawFitsSource(spec.path, spec.data_offset, spec.shape, spec.bitpix,
                             bscale=spec.bscale, bzero=spec.bzero, blank=spec.blank, mask=mask,
                             pool=pool)
    if isinstance(spec, CompressedSpec):
        return CompressedFitsSource(spec.path, spec.hdu_index, spec.shape, pool=pool)

    def master(m: MasterSpec | None) -> Frame | None:
        if m is None:
            return None
        return Frame(m.label, m.shape, fits.Header(), open_source(m.source, pool))

    cal = Calibration(overscan=spec.overscan, trim=spec.trim, bias=master(spec.bias),
                      dark=master(spec.dark), dark_scale=spec.dark_scale,
                      flat=master(spec.flat), badpix=master(spec.badpix))
    return CalibratedSource(open_source(spec.raw, pool), spec.raw_shape, cal, spec.label)


def spec_files(spec: Spec) -> list[str]:
    """Every file a spec reads (for the run's fingerprint: their sizes and mtimes)."""
    if isinstance(spec, RawSpec):
        return [spec.path] + (spec_files(spec.mask) if spec.mask is not None else [])
    if isinstance(spec, CompressedSpec):
        return [spec.path]
    files = spec_files(spec.raw)
    for m in (spec.bias, spec.dark, spec.flat, spec.badpix):
        if m is not None:
            files += spec_files(m.source)
    return files
