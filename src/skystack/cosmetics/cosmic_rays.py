"""Single-frame cosmic-ray detection with LA Cosmic (van Dokkum 2001, through ``astroscrappy``),
for stacks too small for rejection to work (sigma clipping needs about five frames or more: with
two or three, a cosmic ray inflates the spread that should reject it).

``--cosmic-rays lacosmic`` (``cosmic_rays="lacosmic"``; default ``none``, only when asked: LA
Cosmic can take the cores of undersampled stars and costs about a second per megapixel) runs
``astroscrappy.detect_cosmics`` on every input frame before the combination, with:

* ``gain`` (e-/ADU) and ``readnoise`` (e-) from the frame's header (``GAIN``, ``RDNOISE``, as
  :func:`skystack.uncertainty.frame_noise` reads them): a frame without them is a one-line
  error (default values would set a wrong noise model, hence wrong detections);
* ``sigclip`` (``--cr-sigclip``, default 4.5) and ``objlim`` (``--cr-objlim``, default 5.0),
  astroscrappy's other parameters at their defaults; pixels that are NaN (no data, masked bad
  or saturated pixels) are given to it as its input mask (and filled with the frame's median),
  and ``satlevel`` is effectively infinite (saturation is :mod:`skystack.io.saturation`'s);
* the frame's values as the combination reads them: for the night, the calibrated light
  (sky included, as LA Cosmic's noise model needs), before resampling.

The pixels found become NaN (no data): they are left out of the combination, never replaced by
interpolated values. Memory: astroscrappy works on a whole frame, so each frame is read whole,
one frame at a time (about ten float32 copies of one frame at the peak); only the positions of
the pixels found are kept (:class:`CosmicRayMaskedSource`), so a stack of many frames holds a
few bytes per cosmic-ray pixel, not a mask per frame.

Provenance: each cleaned frame's header copy gets ``CRMASKED`` (pixels masked), ``CRSIGCLP``
and ``CROBJLIM``; the product header (:func:`cosmic_ray_cards`) ``CRMETHOD``, ``CRSIGCLP``,
``CROBJLIM``, ``CRFRAMES``
(frames cleaned), ``CRNPIX`` (pixels masked in all) and a ``HISTORY`` line per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from astropy.io import fits

from ..core.tiles import Tile
from ..errors import SkystackError
from ..io.reader import NATIVE_F32, HandlePool, StageSpec
from ..io.sigma import sigma_source
from ..uncertainty import frame_noise

__all__ = ["COSMIC_RAY_METHODS", "OPTION_NAMES", "CosmicRayOptions", "split_options", "detect",
           "CosmicRayMaskedSource", "CosmicRaySpec", "clean_frames", "cosmic_ray_cards",
           "COUNT_KEY"]

COSMIC_RAY_METHODS = ("none", "lacosmic")
COUNT_KEY = "CRMASKED"  # on a cleaned frame's header: cosmic-ray pixels masked
# Above any value a float32 frame holds: saturation is masked elsewhere (io.saturation).
_NO_SATURATION = float(np.finfo(np.float32).max)
_NATIVE = StageSpec(NATIVE_F32, 4)


@dataclass(frozen=True)
class CosmicRayOptions:
    """``method`` (:data:`COSMIC_RAY_METHODS`), LA Cosmic's ``sigclip`` (Laplacian-to-noise
    limit) and ``objlim`` (contrast limit between the Laplacian and the fine structure)."""

    method: str = "none"
    sigclip: float = 4.5
    objlim: float = 5.0

    def validated(self) -> CosmicRayOptions:
        """Self, or a one-line :class:`SkystackError` naming the bad option."""
        if self.method not in COSMIC_RAY_METHODS:
            raise SkystackError(f"invalid --cosmic-rays {self.method!r}: choose from "
                                f"{', '.join(COSMIC_RAY_METHODS)}")
        for name, value in (("--cr-sigclip", self.sigclip), ("--cr-objlim", self.objlim)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SkystackError(f"invalid {name} {value!r}: must be a positive number")
        return self

    @property
    def active(self) -> bool:
        return self.method != "none"


OPTION_NAMES = ("cosmic_rays", "cr_sigclip", "cr_objlim")  # keyword options of the API


def split_options(options: dict) -> tuple[CosmicRayOptions, dict]:
    """The validated cosmic-ray options among keyword ``options`` (:data:`OPTION_NAMES`;
    None = default) and the other options, in a new dict."""
    rest = dict(options)
    given = [rest.pop(name, None) for name in OPTION_NAMES]
    d = CosmicRayOptions()
    method, sigclip, objlim = (d.method if given[0] is None else given[0],
                               d.sigclip if given[1] is None else given[1],
                               d.objlim if given[2] is None else given[2])
    return CosmicRayOptions(method, sigclip, objlim).validated(), rest


def detect(data: np.ndarray, gain: float, readnoise: float,
           options: CosmicRayOptions) -> np.ndarray:
    """Boolean ``(rows, cols)`` mask of the cosmic-ray pixels of one whole frame (ADU, sky
    included); NaN pixels are never flagged (see the module docstring)."""
    import astroscrappy

    data = np.asarray(data, np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        data = data.copy()
        data[bad] = np.median(data[~bad]) if (~bad).any() else 0.0
    crmask, _ = astroscrappy.detect_cosmics(
        data, inmask=bad, sigclip=float(options.sigclip), objlim=float(options.objlim),
        gain=float(gain), readnoise=float(readnoise), satlevel=_NO_SATURATION)
    return np.asarray(crmask, bool) & ~bad


class CosmicRayMaskedSource:
    """A pixel source whose cosmic-ray pixels (``rows``, ``cols``: their positions) read as NaN;
    the wrapped source is unchanged. Thread-safe as the wrapped source is."""

    def __init__(self, inner, rows: np.ndarray, cols: np.ndarray) -> None:
        self.inner = inner
        self.shape = inner.shape
        self.rows = np.asarray(rows, np.int32)
        self.cols = np.asarray(cols, np.int32)

    def read(self, tile: Tile, out: np.ndarray) -> None:
        """The tile's pixels, NaN at the cosmic-ray pixels inside it."""
        self.inner.read(tile, out)
        inside = ((self.rows >= tile.r0) & (self.rows < tile.r1) & (self.cols >= tile.c0)
                  & (self.cols < tile.c1))
        out[self.rows[inside] - tile.r0, self.cols[inside] - tile.c0] = np.nan

    def stage_spec(self) -> StageSpec:
        return _NATIVE

    def read_staged(self, tile: Tile, dest: np.ndarray) -> None:
        self.read(tile, dest[: tile.shape[0] * tile.shape[1] * 4].view(np.float32)
                  .reshape(tile.shape))

    def to_spec(self, label: str) -> CosmicRaySpec:
        """Reopened elsewhere: the wrapped source's spec and the positions found here."""
        return CosmicRaySpec(self.inner.to_spec(label), self.rows, self.cols)


@dataclass(frozen=True)
class CosmicRaySpec:
    """A :class:`CosmicRayMaskedSource` described for another process."""

    inner: object
    rows: np.ndarray
    cols: np.ndarray

    def open(self, pool: HandlePool) -> CosmicRayMaskedSource:
        """The masked source, its files in ``pool``."""
        return CosmicRayMaskedSource(self.inner.open(pool), self.rows, self.cols)

    def files(self) -> list[str]:
        """Every file the source reads."""
        return self.inner.files()


def _noise(frame) -> tuple[float, float]:
    gain, readnoise = frame_noise(frame)
    if gain is None or readnoise is None:
        raise SkystackError(f"{frame.label}: --cosmic-rays lacosmic needs GAIN (e-/ADU) and "
                            "RDNOISE (e-) in the header (LA Cosmic's noise model)")
    return gain, readnoise


def clean_frames(frames: list, options: CosmicRayOptions, log=None) -> list:
    """``frames`` with their cosmic-ray pixels masked (:class:`CosmicRayMaskedSource`; header
    copy with ``CRMASKED``, ``CRSIGCLP``, ``CROBJLIM``); unchanged when ``options.method`` is
    ``none``. Each frame is read whole, one at a time."""
    options = options.validated()
    if not options.active:
        return frames
    noise = [_noise(f) for f in frames]  # every header checked before any pixel is read
    out = []
    for frame, (gain, readnoise) in zip(frames, noise):
        data = np.empty(tuple(frame.shape), np.float32)
        frame.source.read(Tile(0, frame.shape[0], 0, frame.shape[1]), data)
        rows, cols = np.nonzero(detect(data, gain, readnoise, options))
        del data
        header = frame.header.copy() if frame.header is not None else fits.Header()
        header[COUNT_KEY] = (int(rows.size), "cosmic-ray pixels masked (LA Cosmic)")
        header["CRSIGCLP"] = (float(options.sigclip), "LA Cosmic sigclip")
        header["CROBJLIM"] = (float(options.objlim), "LA Cosmic objlim")
        if log is not None:
            log(f"cosmic  {frame.label}: {rows.size} pixels masked (LA Cosmic)")
        sigma = sigma_source(frame)  # the file's UNCERT, found from the unwrapped source
        out.append(replace(frame, header=header, uncertainty=sigma,
                           source=CosmicRayMaskedSource(frame.source, rows, cols)))
    return out


def cosmic_ray_cards(header: fits.Header, frames: list) -> None:
    """The product's cosmic-ray provenance from its frames' headers (module docstring);
    nothing when no frame was cleaned."""
    cleaned = [f for f in frames if f.header is not None and COUNT_KEY in f.header]
    if not cleaned:
        return
    first = cleaned[0].header
    header["CRMETHOD"] = ("lacosmic", "single-frame cosmic-ray masking (astroscrappy)")
    header["CRSIGCLP"] = (float(first["CRSIGCLP"]), "LA Cosmic sigclip")
    header["CROBJLIM"] = (float(first["CROBJLIM"]), "LA Cosmic objlim")
    header["CRFRAMES"] = (len(cleaned), "frames cleaned of cosmic rays")
    header["CRNPIX"] = (sum(int(f.header[COUNT_KEY]) for f in cleaned),
                        "cosmic-ray pixels masked, all frames")
    for f in cleaned:
        header.add_history(f"skystack: {f.label}: {int(f.header[COUNT_KEY])} cosmic-ray "
                           "pixels masked (LA Cosmic)")
