"""Inputs → :class:`Frame` records (label, shape, header, pixel source); no pixels are read here.

Accepted inputs, normalised in :func:`load_frames`:

* paths (``str`` / ``os.PathLike``), glob patterns (``"lights/*.fits"``) and ``@list.txt`` files
  holding one path or pattern per line (blank lines and ``#`` comments ignored);
* astropy HDUs (``PrimaryHDU``, ``ImageHDU``, ``CompImageHDU``) and ``CCDData`` (its mask honoured,
  its unit written into the frame's header as ``BUNIT``);
* 2-D NumPy arrays, or one 3-D array holding a whole stack along axis 0; ``np.ma`` masked
  arrays have their masked pixels ignored, as NaN pixels are;
* :class:`Frame` records already made (e.g. calibrated frames of a night), used as given.

TIFF and XISF files (grey 2-D images) are read too, by :func:`other_format`
(:mod:`skystack.io.formats_tiff`, :mod:`skystack.io.formats_xisf`); products are always FITS.

Every file is opened once, its headers parsed once, and checked before any pixel is combined: it
exists and is readable, is FITS, has 2-D image data in the chosen HDU, is not truncated, and has
the same shape as the first frame. A problem raises :class:`SkystackError` naming the file.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from ..core.frame import Frame
from ..errors import SkystackError
from .reader import BITPIX_DTYPES, ArraySource, CompressedFitsSource, HandlePool, RawFitsSource
from .selection import Selection
from .sigma import ccd_sigma

__all__ = ["Frame", "PLANE_NAMES", "ImageHdu", "expand_paths", "extension_frames",
           "image_extensions", "load_frames", "load_selected_frames", "read_header",
           "with_primary", "collection_paths", "other_format", "select_files",
           "header_with_cards"]


def expand_paths(items: Iterable[str | os.PathLike]) -> list[str]:
    """Expand globs and ``@list`` files into paths, in the order given (globs sorted).

    A pattern that matches nothing, a missing plain path, an unreadable, binary or empty
    ``@list`` and a list that names itself (directly or through other lists) are errors
    naming them.
    """
    return _expand_paths(items, ())


def _expand_paths(items: Iterable[str | os.PathLike], within: tuple[str, ...]) -> list[str]:
    """:func:`expand_paths`; ``within`` holds the real paths of the @lists being expanded."""
    paths: list[str] = []
    for item in items:
        text = os.fspath(item)
        if text.startswith("@"):
            list_file = text[1:]
            real = os.path.realpath(list_file)
            if real in within:
                raise SkystackError(f"{list_file}: file list includes itself (through @ "
                                    "entries), which would never end")
            base = os.path.dirname(list_file)
            paths.extend(_expand_paths(
                (_relative_to(base, e) for e in _read_list_file(list_file)), (*within, real)))
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise SkystackError(f"{text}: pattern matched no files")
            paths.extend(matches)
        else:
            paths.append(text)
    return paths


def _relative_to(base: str, entry: str) -> str:
    """A list entry (path, pattern or nested ``@list``) relative to the list's directory."""
    if entry.startswith("@"):
        return "@" + _relative_to(base, entry[1:])
    return entry if os.path.isabs(entry) else os.path.join(base, entry)


def _read_list_file(list_file: str) -> list[str]:
    """The entries of an ``@list`` file: one path or pattern a line, blank lines and ``#``
    comments ignored. A binary file (e.g. ``@image.fits``) or one with no entry is an error."""
    try:
        with open(list_file, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise SkystackError(f"{list_file}: cannot read file list ({exc.strerror})") from None
    if raw.startswith(b"SIMPLE  ="):
        raise SkystackError(f"{list_file}: is a FITS file, not a file list (drop the '@')")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise SkystackError(f"{list_file}: not a text file list (binary data)")
    entries = [ln.strip() for ln in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    if not entries:
        raise SkystackError(f"{list_file}: file list is empty (no input files)")
    return entries


def _is_image(hdu) -> bool:
    return (isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
            and hdu.header.get("NAXIS", 0) >= 1 and _image_shape(hdu.header) is not None)


def _image_shape(header: fits.Header) -> tuple[int, int] | None:
    """(NAXIS2, NAXIS1) of a 2-D image, allowing extra axes of length 1; None otherwise."""
    naxis = header.get("NAXIS", 0)
    dims = [header.get(f"NAXIS{i}", 0) for i in range(1, naxis + 1)]
    if len(dims) < 2 or any(d != 1 for d in dims[2:]) or dims[0] < 1 or dims[1] < 1:
        return None
    return (int(dims[1]), int(dims[0]))


def _select_hdu(hdul: fits.HDUList, hdu: int | str | None, path: str) -> int:
    if hdu is None:
        for i, h in enumerate(hdul):
            if _is_image(h):
                return i
        raise SkystackError(f"{path}: no 2-D image data in any HDU{_truncation_hint(path)}")
    if isinstance(hdu, int) and hdu < 0:
        raise SkystackError(f"{path}: invalid HDU {hdu} (an HDU index is >= 0, 0 = primary)")
    try:
        index = hdul.index_of(hdu) if not isinstance(hdu, int) else hdu
        h = hdul[index]
    except (KeyError, IndexError):
        raise SkystackError(f"{path}: no HDU {hdu!r} (file has {len(hdul)})") from None
    if not _is_image(h):
        naxis = h.header.get("NAXIS", 0)
        what = "no image data" if naxis == 0 or not isinstance(
            h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) else f"{naxis}-D data"
        raise SkystackError(f"{path}: HDU {hdu!r} has {what}; skystack combines 2-D images")
    return index


def _truncation_hint(path: str) -> str:
    """A note for errors on FITS files whose size is not whole 2880-byte blocks."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return ""
    if size % _BLOCK:
        return f" (the file may be truncated: {size} bytes is not a whole number of FITS blocks)"
    return ""


@contextlib.contextmanager
def quiet_astropy():
    """Silence astropy's warnings while a file is checked: a problem becomes one
    SkystackError line, and replaced header characters are handled by :func:`_printable`.
    (Not thread-safe, like ``warnings.catch_warnings``: used only while loading frames.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        yield


def _open_fits(path: str) -> fits.HDUList:
    if not os.path.exists(path):
        raise SkystackError(f"{path}: no such file")
    if os.path.isdir(path):
        raise SkystackError(f"{path}: is a directory, not a FITS file")
    if not os.access(path, os.R_OK):
        raise SkystackError(f"{path}: permission denied")
    if os.path.getsize(path) == 0:
        raise SkystackError(f"{path}: empty file (0 bytes), not a FITS file")
    try:
        with quiet_astropy():
            hdul = fits.open(path, memmap=False, lazy_load_hdus=True)
            hdul[0]  # forces the primary header to be parsed
        return hdul
    except OSError as exc:
        msg = str(exc)
        if "Empty or corrupt" in msg or "No SIMPLE card" in msg or "not a FITS" in msg.lower():
            if _starts_like_fits(path):
                raise SkystackError(f"{path}: truncated or corrupt FITS header") from None
            if _is_gzip(path):
                raise SkystackError(f"{path}: truncated or corrupt gzip-compressed file, or "
                                    "not FITS inside") from None
            raise SkystackError(f"{path}: not a FITS file") from None
        raise SkystackError(f"{path}: cannot read ({msg})") from None
    except Exception as exc:  # astropy raises many kinds on malformed headers
        raise SkystackError(f"{path}: not a valid FITS file ({exc})") from None


def _is_gzip(path: str) -> bool:
    """Whether ``path`` is gzip-compressed (``.fits.gz``), by its magic bytes."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _starts_like_fits(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(9) == b"SIMPLE  ="


# Header characters FITS allows: printable ASCII. astropy turns other bytes into '?' itself
# (with a warning) but leaves control characters, which make a card unparsable.
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def _printable(header: fits.Header) -> fits.Header:
    """A copy of ``header`` that every later step can read.

    Every character outside printable ASCII is ``?``: OBJECT = 'M31 ñ' or FILTER = 'Hα' (UTF-8)
    or a value with a control character then read as 'M31 ??', 'H??', one '?' per byte, in
    every input path (plain and compressed files alike), so that such frames still group
    together, print in tables and name products. A card whose value astropy cannot parse
    (``EXPTIME = NAN``, ``EXPTIME = 1E999``) keeps its raw text as a string value, so that
    reading it raises nothing and each use decides (an EXPTIME that is not a number is
    unusable, see :mod:`skystack.exposure`).
    """
    images = [getattr(card, "_image", None) for card in header.cards]
    if any(img and _NOT_PRINTABLE.search(img) for img in images):
        text = "".join(img if img else str(card) for img, card in zip(images, header.cards))
        with quiet_astropy():
            header = fits.Header.fromstring(_NOT_PRINTABLE.sub("?", text))
    else:
        header = header.copy()
    for i, card in enumerate(header.cards):
        try:
            card.value  # noqa: B018  (parses the card)
        except Exception:  # astropy's VerifyError and the number parsers' errors
            raw = card.image[10:].split("/", 1)[0].strip()[:68]
            header[i] = (raw, "skystack: value not readable as FITS, kept as text")
    return header


def read_header(path: str, hdu: int | str | None = None, check_data: bool = False
                ) -> tuple[fits.Header, tuple[int, int]]:
    """Header and (rows, cols) of the chosen image HDU of ``path`` (for ``skystack info`` and
    the night's scan); ``check_data``: also raise SkystackError when the file ends inside the
    image data. An extension's header is completed with the primary's cards it lacks
    (IMAGETYP, EXPTIME, DATE-OBS... of a multi-extension exposure live there), as
    :func:`load_frames` does. TIFF and XISF files give their mapped header."""
    other = other_format(path)
    if other is not None:
        header, shape, _ = other(path, None, hdu)
        return header, shape
    with _open_fits(path) as hdul, quiet_astropy():
        index = _select_hdu(hdul, hdu, path)
        h = hdul[index]
        if check_data:
            _check_complete(hdul, index, path)
        header = _printable(h.header)
        if index != 0:
            _merge_primary(header, _printable(hdul[0].header))
        return header, _image_shape(h.header)


# EXTNAMEs of the planes that go with an image (a product's UNCERT, MASK, COUNT, EXPMAP;
# in a multi-extension product prefixed by the CCD's name: N4_UNCERT): not CCD images.
PLANE_NAMES = ("UNCERT", "MASK", "COUNT", "EXPMAP")


@dataclass(frozen=True)
class ImageHdu:
    """One 2-D image HDU of a file: its ``index``, ``extname`` (None when it has none),
    ``shape`` (rows, cols) and its own ``header`` (printable; the primary's not merged in)."""

    index: int
    extname: str | None
    shape: tuple[int, int]
    header: fits.Header


def image_extensions(path: str) -> tuple[fits.Header, list[ImageHdu]]:
    """The primary header of ``path`` and every 2-D image HDU in it, in file order
    (tile-compressed ``.fz`` HDUs included), leaving out the planes of a product
    (:data:`PLANE_NAMES`, alone or after a CCD's name). Reads headers only; a problem with the
    file raises :class:`SkystackError` naming it. A TIFF or XISF file is one image (index 0)."""
    other = other_format(path)
    if other is not None:
        header, shape, _ = other(path, None, None)
        return header, [ImageHdu(0, None, shape, header)]
    with _open_fits(path) as hdul, quiet_astropy():
        try:
            found = [ImageHdu(i, None if h.header.get("EXTNAME") is None
                              else str(h.header["EXTNAME"]).strip(),
                              _image_shape(h.header), _printable(h.header))
                     for i, h in enumerate(hdul) if _is_image(h)]
            primary = _printable(hdul[0].header)
        except SkystackError:
            raise
        except Exception as exc:  # astropy raises many kinds on a malformed later HDU
            raise SkystackError(f"{path}: cannot read its extensions ({exc})") from None
    names = {h.extname.upper() for h in found if h.extname is not None}

    def is_plane(name: str) -> bool:
        name = name.upper()
        return any(name == p or (name.endswith("_" + p) and name[: -len(p) - 1] in names)
                   for p in PLANE_NAMES)

    return primary, [h for h in found if h.extname is None or not is_plane(h.extname)]


def _check_complete(hdul: fits.HDUList, index: int, path: str) -> None:
    """Raise SkystackError when the file ends inside HDU ``index``'s image data."""
    if _is_gzip(path):  # offsets are in the decompressed stream: a short file fails when read
        return
    h = hdul[index]
    info = hdul[index].fileinfo()
    size = os.path.getsize(path)
    if isinstance(h, fits.CompImageHDU):
        if info["datLoc"] + (info.get("datSpan") or 0) > size:
            raise SkystackError(f"{path}: truncated data (file ends inside the image)")
        return
    rows, cols = _image_shape(h.header)
    nbytes = rows * cols * abs(h.header["BITPIX"]) // 8
    if info["datLoc"] + nbytes > size:
        raise SkystackError(
            f"{path}: truncated data ({size - info['datLoc']} of {nbytes} bytes present)")


@dataclass(frozen=True)
class _HduInfo:
    header_text: str
    data_offset: int
    data_bytes: int
    keys: dict


_BLOCK = 2880
_STRUCT_KEYS = ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "EXTNAME", "ZIMAGE")


def _card_value(card: bytes):
    text = card[10:80].decode("ascii", "replace")
    if text.lstrip().startswith("'"):
        return text.strip()[1:].split("'", 1)[0].strip()
    value = text.split("/", 1)[0].strip()
    if value in ("T", "F"):
        return value == "T"
    try:
        return int(value)
    except ValueError:
        return float(value)


def _scan_hdus(path: str, stop_after: int | None = None) -> list[_HduInfo]:
    """Headers and data spans of a FITS file's HDUs, reading only the header blocks.

    A fast path for uncompressed files: only the structural keywords are parsed here; anything
    unusual raises ValueError and the caller falls back to astropy.
    """
    size = os.path.getsize(path)
    hdus: list[_HduInfo] = []
    with open(path, "rb") as f:
        offset = 0
        while offset < size and (stop_after is None or len(hdus) < stop_after):
            f.seek(offset)
            blocks = []
            keys: dict = {}
            done = False
            while not done:
                block = f.read(_BLOCK)
                if len(block) < _BLOCK:
                    raise ValueError("truncated header")
                blocks.append(block)
                for i in range(0, _BLOCK, 80):
                    card = block[i:i + 80]
                    name = card[:8].rstrip().decode("ascii", "replace")
                    if name == "END":
                        done = True
                        break
                    if (name in _STRUCT_KEYS or name.startswith("NAXIS")) and card[8:10] == b"= ":
                        keys[name] = _card_value(card)
            first = "SIMPLE" if not hdus else "XTENSION"
            if first not in keys:
                raise ValueError("not a FITS HDU")
            naxis = int(keys.get("NAXIS", 0))
            count = 0
            if naxis:
                count = 1
                for i in range(1, naxis + 1):
                    count *= int(keys[f"NAXIS{i}"])
            nbytes = abs(int(keys["BITPIX"])) // 8 * int(keys.get("GCOUNT", 1)) * (
                int(keys.get("PCOUNT", 0)) + count)
            data_offset = offset + len(blocks) * _BLOCK
            text = _NOT_PRINTABLE.sub("?", b"".join(blocks).decode("ascii", "replace"))
            hdus.append(_HduInfo(text, data_offset, nbytes, keys))
            offset = data_offset + -(-nbytes // _BLOCK) * _BLOCK
    return hdus


def _fast_file_frame(path: str, hdu: int | str | None, pool: HandlePool,
                     hdus: list[_HduInfo] | None = None) -> Frame | None:
    """The frame of an uncompressed image by :func:`_scan_hdus` (``hdus``: its result, when
    already made); None when astropy must decide (compressed data, an unusual file, or any
    problem to report)."""
    try:
        hdus = _scan_hdus(path) if hdus is None else hdus
    except (ValueError, KeyError, OSError, UnicodeError):
        return None
    if isinstance(hdu, int):
        index = hdu
    elif hdu is None:
        index = next((i for i, h in enumerate(hdus) if h.keys.get("NAXIS", 0) >= 2), None)
    else:
        index = next((i for i, h in enumerate(hdus)
                      if str(h.keys.get("EXTNAME", "")).upper() == str(hdu).upper()), None)
    if index is None or not 0 <= index < len(hdus):
        return None
    info = hdus[index]
    if info.keys.get("XTENSION", "IMAGE") != "IMAGE" and index != 0:
        return None
    header = _printable(fits.Header.fromstring(info.header_text))
    shape = _image_shape(header)
    bitpix = info.keys["BITPIX"]
    if shape is None or bitpix not in BITPIX_DTYPES:
        return None
    size = os.path.getsize(path)
    if info.data_offset + info.data_bytes > size:
        return None
    blank = header.get("BLANK")
    mask = None
    for i, h in enumerate(hdus):
        if i != index and str(h.keys.get("EXTNAME", "")).upper() == "MASK":
            if not (h.keys.get("XTENSION") == "IMAGE" and h.keys.get("BITPIX") in BITPIX_DTYPES
                    and _image_shape(fits.Header.fromstring(h.header_text)) == shape
                    and h.data_offset + h.data_bytes <= size):
                return None  # compressed, empty or unusable: astropy's path decides
            mask = RawFitsSource(path, h.data_offset, shape, h.keys["BITPIX"], pool=pool)
            break
    source = RawFitsSource(path, info.data_offset, shape, bitpix,
                           bscale=header.get("BSCALE", 1.0), bzero=header.get("BZERO", 0.0),
                           blank=int(blank) if blank is not None else None, mask=mask, pool=pool)
    if index != 0:
        _merge_primary(header, _printable(fits.Header.fromstring(hdus[0].header_text)))
    return Frame(label=os.path.basename(path), shape=shape, header=header, source=source,
                 path=path, hdu_index=index)


def _merge_primary(header: fits.Header, primary: fits.Header) -> None:
    """Primary keywords (DATE-OBS, EXPTIME…) often live in HDU 0 when the image is in HDU 1."""
    for card in primary.cards:
        if card.keyword not in header and card.keyword not in _STRUCTURAL:
            header.append(card, end=True)


def with_primary(header: fits.Header, primary: fits.Header) -> fits.Header:
    """A copy of an extension's ``header`` with the primary's keywords it lacks, as
    :func:`load_frames` gives an extension's frame (the extension's values win)."""
    header = header.copy()
    _merge_primary(header, primary)
    return header


def extension_frames(path: str, indexes: Sequence[int], pool: HandlePool) -> list[Frame]:
    """The frames of several image HDUs of one file (the CCDs of a mosaic exposure), its
    headers read once: checked as :func:`load_frames` checks one HDU."""
    try:
        scanned = _scan_hdus(path)
    except (ValueError, KeyError, OSError, UnicodeError):
        scanned = None
    frames: list[Frame] = []
    hdul = None
    with quiet_astropy():
        try:
            for index in indexes:
                frame = None if scanned is None else _fast_file_frame(path, index, pool, scanned)
                if frame is None:
                    hdul = _open_fits(path) if hdul is None else hdul
                    frame = _file_frame(path, index, pool, hdul)
                frames.append(frame)
        finally:
            if hdul is not None:
                hdul.close()
    return frames


def _file_frame(path: str, hdu: int | str | None, pool: HandlePool,
                open_hdul: fits.HDUList | None = None) -> Frame:
    """The frame of HDU ``hdu`` of ``path`` (``open_hdul``: the file already open, left open;
    the fast path is then skipped, the caller having tried it)."""
    other = other_format(path) if open_hdul is None else None
    if other is not None:  # TIFF or XISF (skystack.io.formats_tiff / formats_xisf)
        header, shape, source = other(path, pool, hdu)
        return Frame(label=os.path.basename(path), shape=shape, header=header, source=source,
                     path=path, hdu_index=None)
    if open_hdul is None and os.path.isfile(path) and os.access(path, os.R_OK):
        frame = _fast_file_frame(path, hdu, pool)
        if frame is not None:
            return frame
    hdul = _open_fits(path) if open_hdul is None else open_hdul
    try:
        index = _select_hdu(hdul, hdu, path)
        h = hdul[index]
        header = _printable(h.header)
        shape = _image_shape(header)
        info = hdul[index].fileinfo()
        size = os.path.getsize(path)
        if isinstance(h, fits.CompImageHDU) or _is_gzip(path):
            # Pixels decoded by astropy: tile-compressed HDUs, and whole .gz files, whose
            # offsets are not bytes on disk (the raw reader would read compressed bytes).
            _check_complete(hdul, index, path)
            if _is_gzip(path) and any(i != index and str(x.header.get("EXTNAME", "")).upper()
                                      == "MASK" for i, x in enumerate(hdul)):
                raise SkystackError(f"{path}: a MASK extension in a gzip-compressed file is not "
                                    "supported (gunzip it first)")
            source: object = CompressedFitsSource(
                path, index, shape, pool=pool,
                mask=None if _is_gzip(path) else _mask_source(hdul, index, shape, path, size,
                                                              pool))
        else:
            bitpix = header["BITPIX"]
            if bitpix not in BITPIX_DTYPES:
                raise SkystackError(f"{path}: unsupported BITPIX {bitpix}")
            _check_complete(hdul, index, path)
            blank = header.get("BLANK")
            source = RawFitsSource(path, info["datLoc"], shape, bitpix,
                                   bscale=header.get("BSCALE", 1.0),
                                   bzero=header.get("BZERO", 0.0),
                                   blank=int(blank) if blank is not None else None,
                                   mask=_mask_source(hdul, index, shape, path, size, pool),
                                   pool=pool)
        if index != 0:
            _merge_primary(header, _printable(hdul[0].header))
        return Frame(label=os.path.basename(path), shape=shape, header=header, source=source,
                     path=path, hdu_index=index)
    finally:
        if open_hdul is None:
            hdul.close()


_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT",
               "GCOUNT", "COMMENT", "HISTORY", "", "BZERO", "BSCALE", "BLANK", "EXTNAME",
               "CHECKSUM", "DATASUM"}


def _mask_source(hdul, index, shape, path, size, pool):
    """The source of a CCDData-style ``MASK`` extension (nonzero = bad), raw or tile-compressed,
    if the file has one. A MASK that cannot be applied (another shape, an unsupported BITPIX,
    cut short) is a one-line error: silently ignoring it would let masked pixels in."""
    for i, h in enumerate(hdul):
        if i == index or str(h.header.get("EXTNAME", "")).upper() != "MASK":
            continue
        header = h.header
        if header.get("NAXIS", 0) == 0:  # an empty MASK: nothing masked
            return None
        if isinstance(h, fits.CompImageHDU):
            if _image_shape(header) != shape:
                break
            return CompressedFitsSource(path, i, shape, pool=pool)
        if _image_shape(header) != shape:
            break
        bitpix = header["BITPIX"]
        info = hdul[i].fileinfo()
        if bitpix not in BITPIX_DTYPES:
            raise SkystackError(f"{path}: MASK extension has unsupported BITPIX {bitpix}")
        if info["datLoc"] + shape[0] * shape[1] * abs(bitpix) // 8 > size:
            raise SkystackError(f"{path}: truncated MASK extension (file ends inside it)")
        return RawFitsSource(path, info["datLoc"], shape, bitpix, pool=pool)
    else:
        return None
    raise SkystackError(f"{path}: MASK extension's shape differs from the image's {shape} "
                        "(cannot tell which pixels it masks)")


def _array_frame(data, label: str, header=None, mask=None) -> Frame:
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.size == 0:
        raise SkystackError(f"{label}: expected a 2-D image, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise SkystackError(f"{label}: unsupported data type {arr.dtype}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != arr.shape:
            raise SkystackError(f"{label}: mask shape {mask.shape} differs from data {arr.shape}")
    return Frame(label=label, shape=arr.shape, header=fits.Header(header or {}),
                 source=ArraySource(arr, mask))


def _ccd_header(ccd) -> fits.Header:
    """A CCDData's meta as a header, with what it carries apart: its unit as BUNIT, its WCS
    (which wins over WCS keywords in meta, as in ``CCDData.to_hdu``)."""
    header = fits.Header(ccd.meta or {})
    if ccd.wcs is not None:
        header.update(ccd.wcs.to_header(relax=True))
    if ccd.unit is not None:
        header["BUNIT"] = (ccd.unit.to_string(), "unit of the CCDData")
    return header


class _NoCCDData:
    """Stands for CCDData while astropy.nddata is not imported (no instance can exist)."""


def load_frames(inputs, hdu: int | str | None = None,
                pool: HandlePool | None = None, selection: Selection | None = None
                ) -> list[Frame]:
    """Normalise ``inputs`` (see module docstring) into checked frames of one common shape;
    ``selection`` (``--exclude``/``--where``, :mod:`skystack.io.selection`) drops frames first
    (excluded files are never opened)."""
    return load_selected_frames(inputs, hdu, pool, selection)[0]


def load_selected_frames(inputs, hdu: int | str | None = None, pool: HandlePool | None = None,
                         selection: Selection | None = None
                         ) -> tuple[list[Frame], tuple[tuple[str, object, str], ...]]:
    """:func:`load_frames`, and the product-header cards recording ``selection`` (empty
    without one: :meth:`skystack.io.selection.Selection.cards`)."""
    # Nothing can be a CCDData unless astropy.nddata was imported by the caller: importing it
    # here would cost every command-line run a quarter of a second.
    nddata = sys.modules.get("astropy.nddata")
    CCDData = nddata.CCDData if nddata is not None else _NoCCDData

    if isinstance(inputs, (str, os.PathLike, np.ndarray, CCDData)) or isinstance(
            inputs, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        inputs = [inputs]
    inputs = collection_paths(inputs)
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "US":  # a list of paths
        inputs = [str(p) for p in inputs]
    if isinstance(inputs, np.ndarray) and inputs.ndim == 3:
        inputs = list(inputs)
    items: Sequence = list(inputs)
    if len(items) == 1 and isinstance(items[0], np.ndarray) and items[0].ndim == 3:
        items = list(items[0])
    pool = pool or HandlePool()
    frames: list = []  # Frames, and paths not opened yet
    pending_paths: list[str | os.PathLike] = []

    def flush_paths():
        # Paths become frames later, once the exclude list has dropped some (not opened).
        frames.extend(expand_paths(pending_paths))
        pending_paths.clear()

    for i, item in enumerate(items):
        if isinstance(item, (str, Path, os.PathLike)):
            pending_paths.append(item)
            continue
        flush_paths()
        if isinstance(item, Frame):  # already loaded (e.g. a calibrated frame): used as given
            frames.append(item)
        elif isinstance(item, CCDData):
            frame = _array_frame(item.data, f"ccddata[{i}]", _ccd_header(item), item.mask)
            sigma = ccd_sigma(item)
            if sigma is not None:
                frame = replace(frame, uncertainty=ArraySource(sigma, item.mask))
            frames.append(frame)
        elif isinstance(item, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            if item.data is None:
                raise SkystackError(f"hdu[{i}]: no image data")
            frames.append(_array_frame(item.data, f"hdu[{i}]", item.header))
        elif isinstance(item, np.ma.MaskedArray):  # before ndarray: asarray() drops the mask
            frames.append(_array_frame(item.data, f"array[{i}]", mask=np.ma.getmaskarray(item)))
        elif isinstance(item, np.ndarray):
            frames.append(_array_frame(item, f"array[{i}]"))
        else:
            raise SkystackError(
                f"input {i}: unsupported type {type(item).__name__} (expected a path, glob, "
                "@list, HDU, CCDData or numpy array)")
    flush_paths()
    opened: dict[int, Frame] = {}

    def frame_of(i: int) -> Frame:
        item = frames[i]
        if isinstance(item, Frame):
            return item
        if i not in opened:
            with quiet_astropy():  # a file's problem is one error line, without the warnings
                opened[i] = _file_frame(item, hdu, pool)
        return opened[i]

    cards: tuple = ()
    order = range(len(frames))
    if selection is not None:
        order, n_excluded, n_where = selection.apply(
            list(order), path_of=lambda i: frames[i] if isinstance(frames[i], str)
            else frames[i].path,
            label_of=lambda i: os.path.basename(frames[i]) if isinstance(frames[i], str)
            else frames[i].label, header_of=lambda i: frame_of(i).header)
        cards = selection.cards(n_excluded, n_where)
    frames = [frame_of(i) for i in order]
    if not frames:
        raise SkystackError("no input files")
    shape = frames[0].shape
    for f in frames[1:]:
        if f.shape != shape:
            raise SkystackError(
                f"{f.label}: shape {f.shape[0]}x{f.shape[1]} differs from "
                f"{frames[0].label} ({shape[0]}x{shape[1]})")
    return frames, cards


def select_files(inputs, selection: Selection
                 ) -> tuple[list[str], tuple[tuple[str, object, str], ...]]:
    """The paths of ``inputs`` (paths, patterns, @lists) that ``selection`` keeps, ``--where``
    tested on each file's primary header (a multi-extension exposure's IMAGETYP, EXPTIME...),
    and the cards recording it (:meth:`~skystack.io.selection.Selection.cards`)."""
    paths = expand_paths([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
    kept, n_excluded, n_where = selection.apply(
        paths, path_of=lambda p: p, label_of=os.path.basename,
        header_of=lambda p: image_extensions(p)[0])
    return kept, selection.cards(n_excluded, n_where)


def header_with_cards(header: fits.Header | None, cards) -> fits.Header:
    """A copy of ``header`` (or a new one) with (keyword, value, comment) ``cards`` added."""
    header = fits.Header() if header is None else header.copy()
    for key, value, comment in cards:
        header.append((key, value) if key == "HISTORY" else (key, value, comment), end=True)
    return header


_FITS_ENDINGS = (".fits", ".fit", ".fts", ".fz", ".gz")


def other_format(path: str):
    """The reader of ``path`` when it is a TIFF or XISF file (by its first bytes), else None:
    ``reader(path, pool, hdu) -> (header, shape, source)``."""
    if path.lower().endswith(_FITS_ENDINGS) or not os.path.isfile(path):
        return None  # by name: no extra open per FITS file of a large stack
    from .formats_tiff import is_tiff, read_tiff
    from .formats_xisf import is_xisf, read_xisf

    if is_tiff(path):
        return read_tiff
    if is_xisf(path):
        return read_xisf
    return None


def collection_paths(inputs):
    """The file paths of a ccdproc ``ImageFileCollection`` (its files, filtered or not, with
    its location), in its order; any other ``inputs`` unchanged. Recognised by its attributes,
    so that ccdproc is never imported here."""
    if hasattr(inputs, "files_filtered") and hasattr(inputs, "location") \
            and hasattr(inputs, "files"):
        location = inputs.location or ""
        return [os.path.join(location, str(name)) for name in inputs.files]
    return inputs
