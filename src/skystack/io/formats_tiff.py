"""TIFF inputs (read with ``tifffile``): one grey 2-D image per file, 8/16/32-bit integer or
16/32/64-bit float, either byte order.

* Uncompressed images stored contiguously stream by tile (:class:`PlaneSource` at the data
  offset tifffile reports, the same offset ``tifffile.memmap`` maps): a tile reads its own bytes.
  Compressed (or strip-scattered) images are decoded whole once per frame
  (:class:`DecodedSource`).
* Multi-page files and RGB/multi-sample images are refused with a one-line error: which page
  or channel is meant cannot be guessed, and mixing colours would be silently wrong.
* Header: ``ImageDescription`` holding FITS cards (``KEY = value / comment`` a line, as some
  capture programs write) becomes the header; the ``ExposureTime`` tag (main or EXIF IFD)
  gives ``EXPTIME`` when no card does. The TIFF ``DateTime`` (when the file was written, camera
  clock, no time zone) is kept as ``TIFFDATE``, never as ``DATE-OBS``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from astropy.io import fits

from ..errors import SkystackError
from .plane_source import DecodedSource, PlaneSource
from .reader import HandlePool

__all__ = ["TIFF_SUFFIXES", "is_tiff", "read_tiff", "decode_tiff"]

TIFF_SUFFIXES = (".tif", ".tiff")
_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF, both byte orders


def is_tiff(path: str) -> bool:
    """Whether ``path`` starts like a TIFF file."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in _MAGIC
    except OSError:
        return False


def _rational(value) -> float | None:
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1] if value[1] else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _header(page) -> fits.Header:
    """The frame's FITS header from the page's tags (module docstring)."""
    header = fits.Header()
    tags = page.tags
    desc = tags.get("ImageDescription")
    if desc is not None and "=" in str(desc.value):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = fits.Header.fromstring(str(desc.value).strip(), sep="\n")
                for card in parsed.cards:
                    card.verify("exception")
                header = parsed
        except Exception:  # a free-text description: not a header
            header = fits.Header()
    if "EXPTIME" not in header and "EXPOSURE" not in header:
        exif = tags.get("ExifTag")
        exposure = tags.get("ExposureTime")
        value = exposure.value if exposure is not None else (
            exif.value.get("ExposureTime") if exif is not None and isinstance(exif.value, dict)
            else None)
        seconds = _rational(value) if value is not None else None
        if seconds is not None:
            header["EXPTIME"] = (seconds, "[s] TIFF ExposureTime tag")
    written = tags.get("DateTime")
    if written is not None:
        header["TIFFDATE"] = (str(written.value)[:68], "TIFF DateTime (file, not DATE-OBS)")
    return header


def _open(path: str):
    import tifffile

    try:
        return tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises its own TiffFileError and others
        raise SkystackError(f"{path}: not a readable TIFF file "
                            f"({' '.join(str(exc).split()) or type(exc).__name__})") from None


def read_tiff(path: str, pool: HandlePool | None = None, hdu=None
              ) -> tuple[fits.Header, tuple[int, int], object]:
    """Header, (rows, cols) and pixel source of a grey TIFF image (module docstring); a
    multi-page, RGB or non-numeric TIFF is a one-line :class:`SkystackError`."""
    if hdu not in (None, 0):
        raise SkystackError(f"{path}: a TIFF file has one image (no HDU {hdu!r})")
    with _open(path) as tif:
        pages = len(tif.pages)
        if pages != 1:
            raise SkystackError(f"{path}: multi-page TIFF ({pages} pages); skystack reads one "
                                "grey 2-D image per file")
        page = tif.pages[0]
        series = tif.series[0]
        if page.samplesperpixel != 1 or len(series.shape) != 2:
            raise SkystackError(f"{path}: RGB or multi-sample TIFF ({page.samplesperpixel} "
                                f"samples per pixel, shape {series.shape}); give grey images "
                                "(one channel per file)")
        dtype = np.dtype(series.dtype)
        if dtype.kind not in "uif":
            raise SkystackError(f"{path}: unsupported TIFF sample type {dtype}")
        shape = (int(series.shape[0]), int(series.shape[1]))
        header = _header(page)
        header["PIXTYPE"] = (dtype.name, "TIFF sample type (skystack info)")
        offset = series.dataoffset
        if page.compression == 1 and offset is not None:
            if offset + shape[0] * shape[1] * dtype.itemsize > os.path.getsize(path):
                raise SkystackError(f"{path}: truncated data (file ends inside the image)")
            source = PlaneSource(path, offset, shape, dtype.newbyteorder(tif.byteorder),
                                 pool=pool)
        else:
            source = DecodedSource(path, "TIFF", shape, decode_tiff)
    return header, shape, source


def decode_tiff(path: str) -> np.ndarray:
    """The whole image of a (compressed) TIFF file, as stored."""
    import tifffile

    return tifffile.imread(path)
