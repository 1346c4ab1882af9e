"""XISF inputs (PixInsight's format, read with the ``xisf`` package): one grey 2-D image per
file, UInt8/16/32 or Float32/64.

* An uncompressed attached data block streams by tile (:class:`PlaneSource` at the block's
  position; XISF stores pixels little-endian unless ``byteOrder="big"``). Compressed (zlib, lz4,
  zstd), inline or embedded blocks are decoded whole once per frame (:class:`DecodedSource`).
* Several images in one file, or an image of several channels (RGB), are a one-line error.
* Header: the image's ``FITSKeyword`` elements (values as FITS text: ``'DARK'`` a string,
  ``60.`` a number, ``T`` a logical); the XISF properties ``Instrument:ExposureTime`` (s) and
  ``Observation:Time:Start`` (UTC) give ``EXPTIME`` and ``DATE-OBS`` when no keyword does.
  Pixel values are used as stored (PixInsight's [0, 1] display range is not applied).
"""

from __future__ import annotations

import os
import re

import numpy as np
from astropy.io import fits

from ..errors import SkystackError
from .plane_source import DecodedSource, PlaneSource
from .reader import HandlePool

__all__ = ["XISF_SUFFIXES", "is_xisf", "read_xisf", "decode_xisf", "xisf_header"]

XISF_SUFFIXES = (".xisf",)
_MAGIC = b"XISF0100"
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8}")


def is_xisf(path: str) -> bool:
    """Whether ``path`` starts with the XISF 1.0 signature."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == _MAGIC
    except OSError:
        return False


def _fits_value(text):
    """A FITSKeyword value (FITS value text) as a Python value."""
    if not isinstance(text, str):
        return text
    text = text.strip()
    if text.startswith("'"):
        return text[1:].rsplit("'", 1)[0].replace("''", "'").rstrip()
    if text in ("T", "F"):
        return text == "T"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def xisf_header(meta: dict) -> fits.Header:
    """The FITS header of an XISF image's metadata (``xisf.XISF.get_images_metadata()[i]``;
    module docstring)."""
    header = fits.Header()
    for key, values in (meta.get("FITSKeywords") or {}).items():
        key = str(key).strip().upper()
        if not _KEYWORD.fullmatch(key):  # not a FITS keyword: not carried (no HIERARCH)
            continue
        for entry in values:
            value, comment = _fits_value(entry.get("value", "")), str(entry.get("comment", ""))
            # FITS headers are printable ASCII: 'Hα' becomes 'H?' as FITS inputs' do
            value = _NOT_PRINTABLE.sub("?", value) if isinstance(value, str) else value
            comment = _NOT_PRINTABLE.sub("?", comment)
            try:
                if key in ("COMMENT", "HISTORY"):
                    header.append((key, comment or str(value)))
                elif key and key not in header:
                    header.append(fits.Card(key, value, comment[:47]))
            except (ValueError, KeyError):  # not a valid FITS keyword or value: not carried
                continue
    props = meta.get("XISFProperties") or {}
    exposure = props.get("Instrument:ExposureTime", {}).get("value")
    if exposure is not None and "EXPTIME" not in header and "EXPOSURE" not in header:
        try:
            header["EXPTIME"] = (float(exposure), "[s] XISF Instrument:ExposureTime")
        except (TypeError, ValueError):
            pass
    start = props.get("Observation:Time:Start", {}).get("value")
    if start is not None and "DATE-OBS" not in header:
        header["DATE-OBS"] = (str(start).rstrip("Z")[:68], "XISF Observation:Time:Start (UTC)")
    return header


def _open(path: str):
    import xisf

    try:
        return xisf.XISF(path)
    except Exception as exc:  # the package raises many kinds on a bad header
        raise SkystackError(f"{path}: not a readable XISF file "
                            f"({' '.join(str(exc).split()) or type(exc).__name__})") from None


def read_xisf(path: str, pool: HandlePool | None = None, hdu=None
              ) -> tuple[fits.Header, tuple[int, int], object]:
    """Header, (rows, cols) and pixel source of a grey XISF image (module docstring); several
    images, several channels or an unsupported sample format are a one-line error."""
    images = _open(path).get_images_metadata()
    if not images:
        raise SkystackError(f"{path}: XISF file holds no image")
    if len(images) > 1:
        raise SkystackError(f"{path}: XISF file holds {len(images)} images; skystack reads one "
                            "grey 2-D image per file")
    if hdu not in (None, 0):
        raise SkystackError(f"{path}: an XISF file has one image (no HDU {hdu!r})")
    meta = images[0]
    geometry = meta.get("geometry", ())
    if len(geometry) != 3 or geometry[2] != 1:
        raise SkystackError(f"{path}: XISF image of geometry {geometry} (width, height, "
                            "channels): give grey 2-D images (one channel per file)")
    width, height = int(geometry[0]), int(geometry[1])
    dtype = np.dtype(meta["dtype"])
    if dtype.kind not in "uif":
        raise SkystackError(f"{path}: unsupported XISF sample format {meta.get('sampleFormat')}")
    shape = (height, width)
    location = meta.get("location", ())
    if location and location[0] == "attachment" and "compression" not in meta:
        order = ">" if str(meta.get("byteOrder", "little")).lower() == "big" else "<"
        nbytes = height * width * dtype.itemsize
        if location[1] + nbytes > os.path.getsize(path):
            raise SkystackError(f"{path}: truncated data (file ends inside the image)")
        source: object = PlaneSource(path, location[1], shape, dtype.newbyteorder(order),
                                     pool=pool)
    else:
        source = DecodedSource(path, "XISF", shape, decode_xisf)
    header = xisf_header(meta)
    header["PIXTYPE"] = (dtype.name, "XISF sample format (skystack info)")
    return header, shape, source


def decode_xisf(path: str) -> np.ndarray:
    """The whole (2-D) image of an XISF file, as stored."""
    return _open(path).read_image(0)[:, :, 0]
