"""Tile reads: the pixels of N frames for one tile, into one preallocated float32 block.

Each frame has a *source* that knows how to read a rectangle of rows/columns as float32 with NaN
for missing pixels (FITS BLANK, or a nonzero CCDData ``MASK`` extension):

* :class:`RawFitsSource` for uncompressed FITS images: ``os.pread`` of the raw big-endian bytes at
  offsets found once when the file was scanned, then byte order, BZERO/BSCALE and BLANK decoded by
  NumPy. The file is never parsed again inside the tile loop.
* :class:`CompressedFitsSource` for tile-compressed images (``.fz``): astropy's ``section``, which
  decompresses only the compression tiles that overlap the request (and for ``.gz`` files).
* :class:`ArraySource` for in-memory arrays.

File descriptors are kept in a bounded LRU (:class:`HandlePool`) so that stacks of more frames than
the process may open at once still work: beyond the bound, files are reopened (a cheap ``open``
system call, not a FITS parse). Compressed files, whose reads need astropy's open ``HDUList``, are
kept in the same pool under the same bound (reopening one parses its headers again).

Every source follows :class:`skystack.io.contracts.PixelSource`; :meth:`to_spec` describes a
file source as a small picklable :class:`RawSpec` / :class:`CompressedSpec` (path, offsets,
scaling) whose ``open`` rebuilds it in another process (a Dask worker).
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..core.combine_loop import TileReader
from ..core.tiles import Tile
from ..errors import SkystackError

__all__ = ["Tile", "HandlePool", "RawFitsSource", "CompressedFitsSource", "ArraySource",
           "TileReader", "StageSpec", "NATIVE_F32", "RawSpec", "CompressedSpec"]


def _default_handle_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 4096
    # Leave room for the output, Python's own files and numba's cache.
    return max(4, min(1024, soft // 2 - 32))


class HandlePool:
    """A bounded, thread-safe LRU of open read-only files, keyed by path: raw file descriptors
    (:meth:`pread_into`) and astropy ``HDUList`` objects of compressed files
    (:meth:`compressed_hdu`), at most ``limit`` of them together, but for those in use."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = _default_handle_limit() if limit is None else max(1, limit)
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._hduls: OrderedDict[str, object] = OrderedDict()
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def _make_room(self) -> None:
        """Close least recently used handles (descriptors first: they are cheap to reopen) until
        one more fits. Called with the lock held; HDULists in use are never closed."""
        while len(self._fds) + len(self._hduls) >= self.limit:
            if self._fds:
                os.close(self._fds.popitem(last=False)[1])
                continue
            idle = next((p for p in self._hduls if p not in self._busy), None)
            if idle is None:
                return  # every open HDUList is being read: one more, briefly
            self._hduls.pop(idle).close()

    def pread_into(self, path: str, buf: memoryview, offset: int) -> int:
        """Read ``len(buf)`` bytes at ``offset`` of ``path`` into ``buf``; returns bytes read."""
        with self._lock:
            fd = self._fds.pop(path, None)
            if fd is None:
                self._make_room()
                fd = os.open(path, os.O_RDONLY)
            self._fds[path] = fd
            # preadv is positional, so no lock is needed for the read itself, but a concurrent
            # eviction could close fd: hold a duplicate for the duration of the read.
            fd = os.dup(fd)
        try:
            total = 0
            while total < len(buf):
                n = os.preadv(fd, [buf[total:]], offset + total)
                if n == 0:
                    break
                total += n
            return total
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def compressed_hdu(self, path: str, hdu_index: int) -> Iterator[object]:
        """HDU ``hdu_index`` of the compressed file ``path``, open for the duration of the
        ``with`` block. One thread reads an HDUList at a time (astropy seeks and reads its one
        file object): a second reader of the same file gets its own, closed afterwards."""
        with self._lock:
            pooled = path not in self._busy
            if pooled:
                hdul = self._hduls.pop(path, None)
                if hdul is None:
                    self._make_room()
                    hdul = _open_compressed(path, hdu_index)
                self._hduls[path] = hdul
                self._busy.add(path)
            else:
                hdul = _open_compressed(path, hdu_index)
        try:
            yield hdul[hdu_index]
        finally:
            if pooled:
                with self._lock:
                    self._busy.discard(path)
            else:
                hdul.close()

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            for path in [p for p in self._hduls if p not in self._busy]:
                self._hduls.pop(path).close()


def _open_compressed(path: str, hdu_index: int):
    """The HDUList of ``path`` with HDU ``hdu_index``'s header parsed. The file was checked when
    its frame was made, so astropy's warnings (e.g. header characters it replaced) are not
    repeated here. Called with the pool's lock held: no other skystack thread changes the
    warning filters meanwhile."""
    import warnings

    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        hdul = fits.open(path, memmap=False, lazy_load_hdus=True)
        try:
            hdul[hdu_index]
        except BaseException:
            hdul.close()
            raise
    return hdul


# BITPIX -> big-endian on-disk dtype
BITPIX_DTYPES = {8: np.dtype("u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"), 64: np.dtype(">i8"),
                 -32: np.dtype(">f4"), -64: np.dtype(">f8")}


_THREAD_BUFFERS = threading.local()

# Storage kinds of staged tiles, as decoded by kernels/sk_decode.cuh (the GPU ships raw bytes).
STAGE_KINDS = {8: 0, 16: 1, 32: 2, 64: 3, -32: 4, -64: 5}
NATIVE_F32 = 6


@dataclass(frozen=True)
class StageSpec:
    """How a source's staged bytes are decoded on the GPU (see kernels/sk_decode.cuh).

    ``kind`` is a storage code (big-endian FITS BITPIX, or :data:`NATIVE_F32` for pixels decoded
    on the host), ``itemsize`` bytes per pixel in the staging buffer.
    """

    kind: int
    itemsize: int
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int = 0
    has_blank: bool = False


_NATIVE = StageSpec(NATIVE_F32, 4)


def _stage_decoded(source, tile: Tile, dest: np.ndarray) -> None:
    """Stage host-decoded float32 pixels (sources the GPU cannot decode from raw bytes)."""
    source.read(tile, dest[: tile.shape[0] * tile.shape[1] * 4].view(np.float32)
                .reshape(tile.shape))


class RawFitsSource:
    """Pixels of an uncompressed FITS image read by offset (see module docstring).

    ``mask`` optionally names another source (a ``MASK`` extension, raw or tile-compressed)
    whose nonzero pixels are set to NaN.
    """

    def __init__(self, path: str, data_offset: int, shape: tuple[int, int], bitpix: int,
                 bscale: float = 1.0, bzero: float = 0.0, blank: int | None = None,
                 mask=None, pool: HandlePool | None = None) -> None:
        self.path = path
        self.data_offset = data_offset
        self.shape = shape
        self.bitpix = bitpix
        self.dtype = BITPIX_DTYPES[bitpix]
        self.bscale = float(bscale)
        self.bzero = float(bzero)
        self.blank = blank if self.dtype.kind in "iu" else None
        self.mask = mask
        self.pool = pool or HandlePool()

    @staticmethod
    def _buffer(nbytes: int) -> np.ndarray:
        # One raw buffer per reading thread, shared by all frames and reused across tiles, so
        # memory does not grow with the number of frames. read() is done with it before the next
        # read_raw() on the same thread.
        buf = getattr(_THREAD_BUFFERS, "buf", None)
        if buf is None or buf.nbytes < nbytes:
            buf = np.empty(nbytes, np.uint8)
            _THREAD_BUFFERS.buf = buf
        return buf[:nbytes]

    def read_raw(self, tile: Tile, into: np.ndarray | None = None) -> np.ndarray:
        """The tile's pixels as stored on disk (big-endian, unscaled).

        Read into ``into`` (a uint8 buffer of at least the tile's bytes, e.g. pinned memory for
        the GPU) or else into this thread's reused buffer.
        """
        rows, cols = tile.shape
        width = self.shape[1]
        item = self.dtype.itemsize
        nbytes = rows * cols * item
        raw = self._buffer(nbytes) if into is None else into[:nbytes]
        view = memoryview(raw)
        if cols == width:
            spans = [(self.data_offset + tile.r0 * width * item, view)]
        else:
            row_bytes = cols * item
            spans = [(self.data_offset + ((tile.r0 + i) * width + tile.c0) * item,
                      view[i * row_bytes:(i + 1) * row_bytes]) for i in range(rows)]
        for offset, part in spans:
            got = self.pool.pread_into(self.path, part, offset)
            if got != len(part):
                raise SkystackError(f"{self.path}: truncated data (file ends inside the image)")
        return raw.view(self.dtype).reshape(rows, cols)

    def read(self, tile: Tile, out: np.ndarray) -> None:
        """Write the tile's pixels as float32 into ``out`` (shape ``tile.shape``)."""
        raw = self.read_raw(tile)
        blank_mask = (raw == self.blank) if self.blank is not None else None
        if self.bscale == 1.0 and self.bzero == 0.0:
            np.copyto(out, raw, casting="unsafe")
        elif self.dtype.itemsize <= 2 and self.bscale == 1.0 and self.bzero.is_integer():
            # 8/16-bit with integer BZERO (e.g. uint16 as int16 + 32768): exact in float32.
            np.copyto(out, raw, casting="unsafe")
            out += np.float32(self.bzero)
        else:
            # Wider integers: scale in float64, round once to float32, as astropy does.
            out[...] = raw * self.bscale + self.bzero
        if blank_mask is not None:
            out[blank_mask] = np.nan
        if self.mask is not None:  # reuses the thread's buffer: raw is no longer needed
            apply_mask(self.mask, tile, out)

    def stage_spec(self) -> StageSpec:
        """Raw bytes go to the GPU as stored, unless a mask must be applied on the host."""
        if self.mask is not None:
            return _NATIVE
        return StageSpec(STAGE_KINDS[self.bitpix], self.dtype.itemsize, self.bscale, self.bzero,
                         0 if self.blank is None else int(self.blank), self.blank is not None)

    def read_staged(self, tile: Tile, dest: np.ndarray) -> None:
        """Put the tile into ``dest`` (uint8) in the form :meth:`stage_spec` describes."""
        if self.mask is not None:
            _stage_decoded(self, tile, dest)
        else:
            self.read_raw(tile, into=dest)

    def to_spec(self, label: str) -> RawSpec:
        """The picklable description that reopens this source elsewhere (:class:`RawSpec`)."""
        return RawSpec(os.path.abspath(self.path), int(self.data_offset), tuple(self.shape),
                       int(self.bitpix), self.bscale, self.bzero,
                       None if self.blank is None else int(self.blank),
                       None if self.mask is None else self.mask.to_spec(label))


# astropy's (cfitsio's) HCOMPRESS and PLIO decoders keep state in C globals: decoded by two
# threads at once they return wrong pixels, fail, or crash the process (astropy 8.0, measured).
# Those are decoded one tile at a time; Rice and gzip, the usual .fz codecs, run in parallel.
_THREAD_SAFE_CODECS = frozenset({"RICE_1", "RICE_ONE", "GZIP_1", "GZIP_2", "NOCOMPRESS"})
_CODEC_LOCK = threading.Lock()


def apply_mask(mask, tile: Tile, out: np.ndarray) -> None:
    """Set ``out`` (the tile's float32 pixels) to NaN where the ``mask`` source (a ``MASK``
    extension: raw or tile-compressed) is nonzero."""
    if isinstance(mask, RawFitsSource):
        out[mask.read_raw(tile) != 0] = np.nan
        return
    values = np.empty(tile.shape, np.float32)
    mask.read(tile, values)
    out[values != 0] = np.nan


class CompressedFitsSource:
    """Pixels of a tile-compressed image HDU (or any image HDU of a gzip-compressed file),
    decompressed by astropy per tile read; the file stays open in ``pool`` (see
    :class:`HandlePool`) between reads. ``mask`` (a ``MASK`` extension's source, raw or
    compressed) sets its nonzero pixels to NaN."""

    def __init__(self, path: str, hdu_index: int, shape: tuple[int, int],
                 pool: HandlePool | None = None, mask=None) -> None:
        self.path = path
        self.hdu_index = hdu_index
        self.shape = shape
        self.pool = pool or HandlePool()
        self.mask = mask

    def read(self, tile: Tile, out: np.ndarray) -> None:
        """Write the tile's pixels as float32 into ``out``; corrupt compressed data (any
        decompression error: zlib, Rice, HCOMPRESS…) is a :class:`SkystackError` naming the file."""
        try:
            with self.pool.compressed_hdu(self.path, self.hdu_index) as hdu:
                codec = getattr(hdu, "compression_type", None)  # None: a .gz file's HDU
                with (_CODEC_LOCK if codec is not None and str(codec).upper()
                      not in _THREAD_SAFE_CODECS else contextlib.nullcontext()):
                    data = hdu.section[tile.r0:tile.r1, tile.c0:tile.c1]
        except MemoryError:
            raise
        except Exception as exc:  # the decompressors raise many kinds, none of them ours
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise SkystackError(f"{self.path}: cannot decompress image data ({detail})") from None
        np.copyto(out, data, casting="unsafe")
        if self.mask is not None:
            apply_mask(self.mask, tile, out)

    def stage_spec(self) -> StageSpec:
        return _NATIVE

    def read_staged(self, tile: Tile, dest: np.ndarray) -> None:
        _stage_decoded(self, tile, dest)

    def to_spec(self, label: str) -> CompressedSpec:
        """The picklable description that reopens this source elsewhere
        (:class:`CompressedSpec`), its ``MASK`` included."""
        return CompressedSpec(os.path.abspath(self.path), int(self.hdu_index), tuple(self.shape),
                              None if self.mask is None else self.mask.to_spec(label))


class ArraySource:
    """Pixels of an in-memory 2-D array; ``mask`` (True = bad) pixels become NaN."""

    def __init__(self, data: np.ndarray, mask: np.ndarray | None = None) -> None:
        self.data = data
        self.mask = mask
        self.shape = data.shape

    def read(self, tile: Tile, out: np.ndarray) -> None:
        np.copyto(out, self.data[tile.r0:tile.r1, tile.c0:tile.c1], casting="unsafe")
        if self.mask is not None:
            out[self.mask[tile.r0:tile.r1, tile.c0:tile.c1]] = np.nan

    def stage_spec(self) -> StageSpec:
        return _NATIVE

    def read_staged(self, tile: Tile, dest: np.ndarray) -> None:
        _stage_decoded(self, tile, dest)

    def to_spec(self, label: str):
        """In-memory pixels cannot be reopened by another process: a one-line error naming
        the frame (``label``)."""
        raise SkystackError(
            f"{label}: in-memory input cannot run on a cluster (give FITS files on storage that "
            "every worker can read)")


@dataclass(frozen=True)
class RawSpec:
    """An uncompressed FITS image read by offset (:class:`RawFitsSource`), as the client found
    it when it scanned the headers, so that a worker never parses the header again."""

    path: str
    data_offset: int
    shape: tuple[int, int]
    bitpix: int
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None
    mask: RawSpec | CompressedSpec | None = None

    def open(self, pool: HandlePool) -> RawFitsSource:
        """The source this spec describes, its file descriptors in ``pool``."""
        mask = self.mask.open(pool) if self.mask is not None else None
        return RawFitsSource(self.path, self.data_offset, self.shape, self.bitpix,
                             bscale=self.bscale, bzero=self.bzero, blank=self.blank, mask=mask,
                             pool=pool)

    def files(self) -> list[str]:
        """Every file the source reads."""
        return [self.path] + (self.mask.files() if self.mask is not None else [])


@dataclass(frozen=True)
class CompressedSpec:
    """A tile-compressed image HDU (:class:`CompressedFitsSource`) and its ``MASK``."""

    path: str
    hdu_index: int
    shape: tuple[int, int]
    mask: RawSpec | CompressedSpec | None = None

    def open(self, pool: HandlePool) -> CompressedFitsSource:
        """The source this spec describes, its open file in ``pool``."""
        mask = self.mask.open(pool) if self.mask is not None else None
        return CompressedFitsSource(self.path, self.hdu_index, self.shape, pool=pool, mask=mask)

    def files(self) -> list[str]:
        """Every file the source reads."""
        return [self.path] + (self.mask.files() if self.mask is not None else [])
