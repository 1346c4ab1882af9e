"""The inputs' own uncertainties, read tile by tile for ``--uncertainty propagate``.

A frame's sigma comes from a CCDData's ``uncertainty`` (kept in :attr:`Frame.uncertainty` when
the frame is loaded) or, for a FITS file read as it is stored (not calibrated on the fly by the
night), from its ``UNCERT`` image extension as :meth:`CCDData.write` makes it: ``UTYPE``
``StdDevUncertainty`` (the default when absent), ``VarianceUncertainty`` or
``InverseVariance``. Sources return the standard deviation, float32, NaN where unknown.

:func:`resolve_uncertainty` decides which UNCERT a run of given inputs gets (``auto``) and
checks that they support the one asked for.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from astropy.io import fits

from ..config import CombineOptions
from ..errors import SkystackError
from ..rejection_noise import resolve_ccd_noise
from ..uncertainty import frame_noise, raw_with_bias
from .reader import BITPIX_DTYPES, RawFitsSource, Tile

__all__ = ["SigmaSource", "sigma_source", "ccd_sigma", "TileSigma", "ResampledSigma",
           "resolve_uncertainty"]

_KINDS = {"STDDEVUNCERTAINTY": "std", "VARIANCEUNCERTAINTY": "var", "INVERSEVARIANCE": "ivar"}


class SigmaSource:
    """Standard deviations from a source of std, variance or inverse variance values."""

    def __init__(self, inner, kind: str = "std") -> None:
        self.inner = inner
        self.kind = kind
        self.shape = inner.shape

    def read(self, tile: Tile, out: np.ndarray) -> None:
        self.inner.read(tile, out)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.kind == "var":
                np.sqrt(out, out=out)
            elif self.kind == "ivar":
                np.divide(1.0, np.sqrt(out), out=out)


def ccd_sigma(ccd):
    """A CCDData's uncertainty as a standard-deviation array, or None."""
    if ccd.uncertainty is None:
        return None
    from astropy.nddata import StdDevUncertainty

    return np.asarray(ccd.uncertainty.represent_as(StdDevUncertainty).array)


def _file_sigma(frame) -> SigmaSource | None:
    source = frame.source
    if not isinstance(source, RawFitsSource) or frame.path is None:
        return None  # compressed, or calibrated on the fly: the file's UNCERT does not apply
    try:
        with fits.open(frame.path, memmap=False, lazy_load_hdus=True) as hdul:
            for i, h in enumerate(hdul):
                if i == frame.hdu_index or str(h.header.get("EXTNAME", "")).upper() != "UNCERT":
                    continue
                hdr = h.header
                bitpix = hdr.get("BITPIX")
                shape = (hdr.get("NAXIS2"), hdr.get("NAXIS1"))
                if (isinstance(h, fits.CompImageHDU) or hdr.get("NAXIS") != 2
                        or shape != tuple(frame.shape) or bitpix not in BITPIX_DTYPES):
                    raise SkystackError(f"{frame.label}: UNCERT extension is not an "
                                        f"uncompressed {frame.shape[0]}x{frame.shape[1]} image")
                utype = str(hdr.get("UTYPE", "StdDevUncertainty")).upper()
                if utype not in _KINDS:
                    raise SkystackError(f"{frame.label}: UNCERT has unknown UTYPE {utype!r}")
                raw = RawFitsSource(frame.path, hdul.fileinfo(i)["datLoc"], shape, bitpix,
                                    bscale=hdr.get("BSCALE", 1.0), bzero=hdr.get("BZERO", 0.0),
                                    pool=source.pool)
                return SigmaSource(raw, _KINDS[utype])
    except OSError as exc:
        raise SkystackError(f"{frame.label}: cannot read its UNCERT extension ({exc})") from None
    return None


def sigma_source(frame):
    """The frame's sigma source (see module docstring), or None when it has none."""
    if getattr(frame, "uncertainty", None) is not None:
        return frame.uncertainty
    return _file_sigma(frame)


class TileSigma:
    """``read(tile)``: the sigma of every frame on ``tile``, ``(n_frames, rows, cols)``.

    Read in the calling thread (no pool to shut down: the sink that uses it has no close)."""

    def __init__(self, sources: list) -> None:
        self.sources = sources

    def read(self, tile: Tile) -> np.ndarray:
        block = np.empty((len(self.sources), *tile.shape), np.float32)
        for k, src in enumerate(self.sources):
            src.read(tile, block[k])
        return block


class ResampledSigma:
    """``read(tile)``: every frame's sigma resampled onto ``tile`` of a stack's grid, as the
    frame's data is (same WCS, interpolation and flux scaling; NaN outside the frame)."""

    def __init__(self, frames, sources, wcs_list, grid, interp: str, conserve_flux: bool,
                 step: int) -> None:
        from ..core.stack_loop import FrameResampler

        self.resamplers = [
            FrameResampler(replace(f, source=src), w, grid, interp, conserve_flux, step)
            for f, src, w in zip(frames, sources, wcs_list)]

    def read(self, tile: Tile) -> np.ndarray:
        block = np.empty((len(self.resamplers), *tile.shape), np.float32)
        for k, r in enumerate(self.resamplers):
            r.fill(tile, block[k])
        return block


def resolve_uncertainty(frames, options: CombineOptions) -> CombineOptions:
    """``options`` with ``uncertainty`` made concrete (``auto`` decided from the inputs' headers,
    :mod:`skystack.uncertainty`), after checking that the inputs support it (one-line error
    naming the first frame that does not; ``propagate`` needs a :func:`sigma_source`). Also
    resolves ccdclip's gain and read noise (:mod:`skystack.rejection_noise`)."""
    options = resolve_ccd_noise(frames, options)
    mode = options.uncertainty
    if mode == "auto":
        ok = all(None not in frame_noise(f) and not raw_with_bias(f) for f in frames)
        mode = "model" if ok else "scatter"
    elif mode == "model":
        for f in frames:
            gain, rdnoise = frame_noise(f, strict=True)
            if gain is None or rdnoise is None:
                missing = "GAIN (e-/ADU)" if gain is None else "RDNOISE (e-)"
                raise SkystackError(f"{f.label}: no {missing} in the header "
                                    "(--uncertainty model needs GAIN and RDNOISE)")
    elif mode == "propagate":
        for f in frames:
            if sigma_source(f) is None:
                raise SkystackError(
                    f"{f.label}: no uncertainty to propagate (--uncertainty propagate needs a "
                    "CCDData uncertainty or an uncompressed UNCERT image extension)")
    return options if mode == options.uncertainty else replace(options, uncertainty=mode)
