"""The output FITS file: preallocated on disk, filled tile by tile, renamed into place at the end.

Layout, readable by ``astropy.nddata.CCDData.read``:

====  ========  ========  =================================================================
HDU   EXTNAME   BITPIX    content
====  ========  ========  =================================================================
0     (primary) -32       combined image, float32; provenance header
1     UNCERT    -32       standard error of the combined value (UTYPE = StdDevUncertainty)
2     MASK      8         1 where no valid input value exists, else 0
3     COUNT     16 or 32  number of frames used per pixel (after rejection); for reprojected
                          stacks, the coverage: frames whose footprint covers the pixel
4...  (extras)  -32       optional float32 planes, e.g. EXPMAP (exposure seconds per pixel)
====  ========  ========  =================================================================

Headers are written first and the data areas sized with ``ftruncate``; tiles are converted to
big-endian and written with ``pwrite`` at their offsets, so the file never needs to fit in memory.
The file is written under a temporary name in the output's directory and only renamed to its
final name by :meth:`FitsTileWriter.commit`; :meth:`FitsTileWriter.abort` removes it. While
it is written the output is locked (:mod:`skystack.io.lock`): a second run on the same output
is refused, and temporaries left there by a killed run are removed. A caller that writes into
a temporary of its own, which it renames itself (the night's products), marks it with
:func:`owned_temporary`: the writer then writes that file directly, without a second
temporary name inside the first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
from astropy.io import fits

from ..errors import SkystackError
from .atomic import open_temporary, product_mode, publish
from .lock import journal_paths, output_lock, remove_leftovers, temporary_pattern
from .reader import Tile

BLOCK = 2880

__all__ = ["FitsTileWriter", "check_output_path", "committed", "owned_temporary",
           "image_header", "is_owned", "plane_chunks", "plane_parts", "product_mode",
           "pwrite_all"]

_owned: set[str] = set()
_owned_guard = threading.Lock()


@contextmanager
def owned_temporary(path: str | os.PathLike) -> Iterator[str]:
    """Mark ``path``, a temporary name that the caller renames into place itself (holding the
    lock of what it writes), so that a :class:`FitsTileWriter` asked to write it writes it
    directly: no second temporary inside the first, no lock of its own."""
    key = os.path.abspath(os.fspath(path))
    with _owned_guard:
        _owned.add(key)
    try:
        yield os.fspath(path)
    finally:
        with _owned_guard:
            _owned.discard(key)


def is_owned(path: str) -> bool:
    with _owned_guard:
        return os.path.abspath(path) in _owned


def _leftover_names(path: str):
    """What a killed in-process run on ``path`` may have left: the writer's unique partial
    files, and a cluster run's fixed partial file and journal (superseded by this run)."""
    fixed = {os.path.basename(p) for p in journal_paths(path)}
    unique = temporary_pattern(os.path.basename(path)).match
    return lambda name: name in fixed or unique(name) is not None


def plane_chunks(tile: Tile, width: int, layout: list[tuple[int, str]], planes):
    """``(bytes view, file offset)`` of each contiguous run of a tile's planes in the file.

    ``layout`` is :meth:`FitsTileWriter.plane_layout` (data offset and big-endian dtype of each
    plane), ``planes`` the tile's arrays in the same order, ``width`` the image's NAXIS1. A
    full-width tile is one run per plane, otherwise one run per row. The views are converted
    to big-endian once and written without a further copy."""
    for (offset, dtype), data in zip(layout, planes):
        dtype = np.dtype(dtype)
        be = np.ascontiguousarray(data, dtype=dtype)
        item = dtype.itemsize
        if tile.c0 == 0 and tile.c1 == width:
            yield memoryview(be).cast("B"), offset + tile.r0 * width * item
        else:
            for i in range(tile.r1 - tile.r0):
                yield (memoryview(be[i]).cast("B"),
                       offset + ((tile.r0 + i) * width + tile.c0) * item)


def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    """Write all of ``view`` at ``offset``: pwrite may write less than asked (signals, some
    network filesystems)."""
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def check_output_path(path: str | os.PathLike, overwrite: bool) -> str:
    """Validate an output path before any work: its folder exists, and it does not exist unless
    ``overwrite``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SkystackError(f"{path}: output folder {folder} does not exist")
    if os.path.isdir(path):
        raise SkystackError(f"{path}: is a directory")
    if os.path.exists(path) and not overwrite:
        raise SkystackError(f"{path}: output exists (use --overwrite to replace it)")
    if not os.access(folder, os.W_OK):
        raise SkystackError(f"{path}: output folder is not writable")
    return path


def image_header(primary: bool, bitpix: int, shape: tuple[int, int], extname: str | None,
                  extra: fits.Header | None = None) -> fits.Header:
    if primary:
        cards = [("SIMPLE", True, "conforms to FITS standard")]
    else:
        cards = [("XTENSION", "IMAGE", "image extension")]
    cards += [("BITPIX", bitpix, "array data type"), ("NAXIS", 2, "number of array dimensions"),
              ("NAXIS1", shape[1]), ("NAXIS2", shape[0])]
    if primary:
        cards.append(("EXTEND", True))
    else:
        cards += [("PCOUNT", 0), ("GCOUNT", 1), ("EXTNAME", extname)]
    header = fits.Header(cards)
    if extra is not None:
        for card in extra.cards:
            if card.keyword not in header or card.keyword in ("COMMENT", "HISTORY"):
                header.append(card, end=True)
    return header


def plane_parts(shape: tuple[int, int], header: fits.Header, max_count: int,
                count_comment: str = "input values used per pixel", prefix: str = ""
                ) -> list[tuple[fits.Header, np.dtype, tuple[int, int]]]:
    """The ``UNCERT``, ``MASK`` and ``COUNT`` HDUs that follow an image with ``header`` (its
    BUNIT is the uncertainty's), as ``(header, big-endian dtype, shape)``; ``prefix`` goes
    before each EXTNAME (``"N4_"`` for CCD N4 of a multi-extension product). COUNT is 16-bit
    unless ``max_count`` needs 32."""
    count_bitpix = 16 if max_count < 2**15 else 32
    unc_header = fits.Header([("UTYPE", "StdDevUncertainty",
                               "standard error of the combined value")])
    if "BUNIT" in header:
        unc_header["BUNIT"] = header["BUNIT"]
    count_header = fits.Header([("BUNIT", "frames", count_comment)])
    mask_header = fits.Header([("COMMENT", "1 = no valid input value")])
    return [
        (image_header(False, -32, shape, prefix + "UNCERT", unc_header), np.dtype(">f4"), shape),
        (image_header(False, 8, shape, prefix + "MASK", mask_header), np.dtype("u1"), shape),
        (image_header(False, count_bitpix, shape, prefix + "COUNT", count_header),
         np.dtype(">i2") if count_bitpix == 16 else np.dtype(">i4"), shape),
    ]


class FitsTileWriter:
    """Writes the combined products of :mod:`skystack.io.writer` tile by tile (see module doc)."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int], header: fits.Header,
                 *, max_count: int, overwrite: bool = False,
                 extras: dict[str, fits.Header] | None = None,
                 count_comment: str = "input values used per pixel",
                 partial: str | os.PathLike | None = None) -> None:
        """``extras`` names float32 planes written after COUNT (EXTNAME -> extra header cards),
        filled through the ``extras`` argument of :meth:`write_tile`.

        ``partial`` fixes the name of the file being written (default: a unique temporary name).
        An existing file of that name is reused, its data areas kept: a restarted cluster run
        (:mod:`skystack.cluster`) resumes it, with its journal saying which tiles are in it.
        The caller then holds the output's lock; otherwise the writer takes it (raising
        :class:`SkystackError` when another run holds it) until commit or abort."""
        self.path = check_output_path(path, overwrite)
        self.overwrite = overwrite
        self._fd = None
        self._lock = ExitStack()
        self._direct = partial is None and is_owned(self.path)
        self.shape = shape
        self._parts = [(image_header(True, -32, shape, None, header), np.dtype(">f4"), shape),
                       *plane_parts(shape, header, max_count, count_comment)]
        self.extra_names = list(extras or {})
        for name, extra_header in (extras or {}).items():
            self._parts.append((image_header(False, -32, shape, name, extra_header),
                                np.dtype(">f4"), shape))
        self._allocate(partial)

    def _allocate(self, partial) -> None:
        """Create the file (a temporary under the output's lock, the caller's own temporary,
        or ``partial``) and lay out ``self._parts`` — ``(header, big-endian dtype, shape)``
        per HDU, shape ``None`` for a header without data — with zeroed data areas."""
        folder = os.path.dirname(os.path.abspath(self.path))
        if self._direct:
            self.tmp_path = self.path
            fd = os.open(self.tmp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        elif partial is None:
            self._lock.enter_context(output_lock(self.path))
            try:
                remove_leftovers(folder, _leftover_names(self.path))
                fd, self.tmp_path = open_temporary(self.path, ".partial")
            except BaseException:
                self._lock.close()
                raise
        else:
            self.tmp_path = os.fspath(partial)
            fd = os.open(self.tmp_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._fd = fd
        try:
            # mkstemp makes the file private (0600); give the product the usual permissions.
            os.fchmod(fd, product_mode())
            self._offsets = []
            pos = 0
            for hdr, dtype, part_shape in self._parts:
                text = hdr.tostring(padding=True).encode("ascii")
                os.pwrite(fd, text, pos)
                pos += len(text)
                self._offsets.append(pos)
                nbytes = 0 if part_shape is None else (
                    part_shape[0] * part_shape[1] * dtype.itemsize)
                pos += -(-nbytes // BLOCK) * BLOCK
            # Data areas read as zeros until written, which is also the FITS padding.
            os.ftruncate(fd, pos)
        except BaseException:
            self.abort()
            raise

    def plane_layout(self) -> list[tuple[int, str]]:
        """(byte offset of the data area, big-endian dtype string) of each plane, in HDU order:
        what another process needs to write tiles into this file by offset."""
        return [(offset, dtype.str)
                for (_, dtype, _), offset in zip(self._parts, self._offsets)]

    def write_tile(self, tile: Tile, image: np.ndarray, uncertainty: np.ndarray,
                   count: np.ndarray, *, mask: np.ndarray | None = None,
                   extras: dict[str, np.ndarray] | None = None) -> None:
        """Write one tile's outputs (arrays of shape ``tile.shape``) at their places in the file.

        ``mask`` defaults to ``count == 0``; ``extras`` fills the planes named at construction.
        """
        mask = (count == 0) if mask is None else mask
        planes = [image, uncertainty, mask.astype(np.uint8), count]
        planes += [(extras or {})[name] for name in self.extra_names]
        for view, offset in plane_chunks(tile, self.shape[1], self.plane_layout(), planes):
            pwrite_all(self._fd, view, offset)

    def commit(self) -> str:
        """Flush, then move the finished file to its final name; returns that name."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        if self._direct:  # the caller renames it
            return self.path
        try:
            publish(self.tmp_path, self.path, self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._lock.close()
        return self.path

    def release(self) -> None:
        """Close the file but keep it under its partial name (for a restart to resume)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock.close()

    def abort(self) -> None:
        """Close and remove the temporary file; the final name is untouched."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            if hasattr(self, "tmp_path"):
                os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass
        self._lock.close()


@contextmanager
def committed(writer: FitsTileWriter | None) -> Iterator[None]:
    """Commit ``writer`` when the block succeeds; abort it (removing the partial file) when the
    block raises, interrupts included. ``None`` (no output file) does nothing."""
    try:
        yield
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.commit()
