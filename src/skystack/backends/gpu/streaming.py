"""The GPU tile loop: files → pinned host buffers → GPU (decode, combine) → pinned → sinks.

Per tile ``i`` (buffers alternate between two slots ``b = i % 2``)::

    read threads:  wait until slot b's previous upload finished, then pread raw bytes of every
                   frame straight into pinned[b] (no decoding on the host)
    copy stream:   wait until the decode of tile i-2 released raw[b]; upload pinned[b] → raw[b]
    compute:       wait for the upload and for slot b's outputs to be downloaded;
                   decode raw[b] → block (float32), combine block → out[b]
    download:      wait for compute; out[b] → pinned_out[b]
    host:          when tile i-1's download is done, hand it to the sinks (the FITS writer)

so reading tile i+2, uploading tile i+1, computing tile i and writing tile i-1 overlap. The
loop only touches the device through a :class:`Device` (CuPy in production, a NumPy stand-in in
the tests), so its ordering, tiling and out-of-memory recovery are tested without a GPU.

Tile size: the largest band of rows whose device buffers fit in a fraction of free GPU memory and
whose pinned host buffers fit in ``--mem-limit``. A CUDA out-of-memory error frees everything,
halves the budget and resumes from the first tile not yet written: the run is never lost.

The ordering (:class:`DoubleBufferedRun`) and the passes with out-of-memory recovery
(:func:`stream_tiles`) are shared with the stack loop (:mod:`.stack_streaming`), which stages
bands of input pixels and resamples them on the device instead of decoding raw tiles.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ...config import CombineOptions
from ...core.tiles import OUTPUT_BYTES_PER_PIXEL, Tile, plan_tiles
from ...errors import SkystackError
from ...io.reader import StageSpec
from ..base import FrameParams
from .kernels import KernelChoice, choose_combine_kernel

log = logging.getLogger("skystack")

# Fraction of free device memory the tile buffers may take (CuPy's pool, CUDA context and
# kernel temporaries need the rest).
DEVICE_MEMORY_FRACTION = 0.6
# Below this many pixels per tile, give up rather than halve again.
MIN_TILE_PIXELS = 256


class Device(Protocol):
    """What the tile loop needs from a GPU (see :class:`.device.CupyDevice`)."""

    def free_bytes(self) -> int: ...
    def empty(self, n: int, dtype) -> object: ...
    def pinned(self, n: int, dtype) -> np.ndarray: ...
    def upload(self, host: np.ndarray) -> object: ...
    def stream(self) -> object: ...
    def event(self) -> object: ...
    def record(self, event, stream) -> None: ...
    def wait(self, stream, event) -> None: ...
    def synchronize(self, event) -> None: ...
    def copy_h2d(self, dst, src: np.ndarray, nbytes: int, stream) -> None: ...
    def copy_d2h(self, dst: np.ndarray, src, nbytes: int, stream) -> None: ...
    def decode(self, staged, tables: dict, n_frames: int, npix: int, block, stream) -> None: ...
    def combine(self, block, n_frames: int, npix: int, choice: KernelChoice,
                options: CombineOptions, params: dict, outs: tuple, stream) -> None: ...
    # The stack loop (.stack_streaming): resample every frame of a staged tile into the block
    # (kernels/reproject.cu; spec is a stack_streaming.ResampleSpec), then coverage and EXPMAP.
    def resample(self, staged, spec, block, stream) -> None: ...
    def coverage(self, block, n_frames: int, npix: int, exptimes, coverage, expmap,
                 stream) -> None: ...
    def release(self) -> None: ...
    def is_out_of_memory(self, exc: BaseException) -> bool: ...


@dataclass
class StreamStats:
    n_tiles: int
    tile_shape: tuple[int, int]
    read_wait_seconds: float
    retries: int


def device_bytes_per_pixel(specs: list[StageSpec], n_frames: int) -> int:
    """Device bytes per tile pixel: two raw slots, one float32 block, two output slots."""
    raw = sum(s.itemsize for s in specs)
    return 2 * raw + 4 * n_frames + 2 * 12


def host_bytes_per_pixel(specs: list[StageSpec]) -> int:
    """Host bytes per tile pixel: two pinned raw slots, two pinned output slots, the sinks."""
    return 2 * sum(s.itemsize for s in specs) + 2 * 12 + OUTPUT_BYTES_PER_PIXEL


def _plan(shape, r0: int, specs, n_frames: int, device_budget: int, host_budget: int,
          max_tile_rows: int | None) -> list[Tile]:
    per_dev = device_bytes_per_pixel(specs, n_frames)
    per_host = host_bytes_per_pixel(specs)
    fit = min(device_budget // per_dev, host_budget // per_host)
    if fit < MIN_TILE_PIXELS:
        raise SkystackError(
            f"not enough GPU or host memory for even {MIN_TILE_PIXELS} pixels of {n_frames} "
            f"frames (device budget {device_budget >> 20} MiB, host {host_budget >> 20} MiB)")
    rows, cols = shape
    # plan_tiles sizes from bytes per pixel of its own accounting: hand it an equivalent budget.
    from ...core.tiles import bytes_per_pixel

    tiles = plan_tiles((rows - r0, cols), n_frames, fit * bytes_per_pixel(n_frames),
                       max_rows=max_tile_rows, min_tiles=4)
    return [Tile(t.r0 + r0, t.r1 + r0, t.c0, t.c1) for t in tiles]


def stream_tiles(device: Device, shape: tuple[int, int], device_budget: int, host_budget: int,
                 start_run, on_tile, *, read_workers: int = 4) -> StreamStats:
    """The outer loop of the GPU tile loops: passes over tiles until every row is written.

    ``start_run(first_row, device_budget, host_budget, readers, stager)`` plans the tiles of rows
    ``[first_row, rows)`` within the budgets and returns a :class:`DoubleBufferedRun` over them
    (``readers`` and ``stager`` are the thread pools it reads with); ``on_tile(run, tile, done,
    left)`` hands each finished tile to the sinks (``done`` tiles finished so far, ``left`` still
    to come in this pass). A CUDA out-of-memory error frees everything, halves the budgets and
    starts a new pass at the first tile not yet written.
    """
    next_row = 0
    retries = 0
    read_wait = 0.0
    done = 0
    first_shape: tuple[int, int] | None = None
    with ThreadPoolExecutor(max(1, read_workers), thread_name_prefix="skystack-read") as readers, \
            ThreadPoolExecutor(1, thread_name_prefix="skystack-stage") as stager:
        while next_row < shape[0]:
            run = None
            try:
                run = start_run(next_row, device_budget, host_budget, readers, stager)
                first_shape = first_shape or run.tiles[0].shape
                for j, tile in enumerate(run.execute()):
                    done += 1
                    on_tile(run, tile, done, len(run.tiles) - j - 1)
                    next_row = tile.r1 if tile.c1 == shape[1] else tile.r0
            except Exception as exc:
                if not device.is_out_of_memory(exc):
                    raise
                out_of_memory = True
            else:
                out_of_memory = False
            finally:
                if run is not None:
                    read_wait += run.read_wait
                    run.close()
            if out_of_memory:
                device.release()
                retries += 1
                device_budget //= 2
                host_budget = min(host_budget, device_budget * 2)
                log.warning("GPU out of memory; resuming from row %d with tiles half as large",
                            next_row)
    return StreamStats(done, first_shape or (0, 0), read_wait, retries)


def stream_combine(device: Device, sources: list, shape: tuple[int, int],
                   options: CombineOptions, params: FrameParams, sinks, *, progress=None,
                   max_tile_rows: int | None = None, read_workers: int = 4) -> StreamStats:
    """Combine ``sources`` (one per frame) through ``device`` into ``sinks``; see module doc."""
    n = len(sources)
    specs = [s.stage_spec() for s in sources]
    choice = choose_combine_kernel(n, options)

    def start_run(first_row, device_budget, host_budget, readers, stager):
        tiles = _plan(shape, first_row, specs, n, device_budget, host_budget, max_tile_rows)
        return _TileRun(device, sources, specs, choice, options, params, tiles, readers, stager)

    def on_tile(run, tile, done, left):
        for sink in sinks:
            sink.write_tile(tile, *run.finished_views(tile))
        if progress is not None:
            progress(tile.r1 if tile.c1 == shape[1] else tile.r0, shape[0])

    return stream_tiles(device, shape, int(device.free_bytes() * DEVICE_MEMORY_FRACTION),
                        int(options.mem_limit), start_run, on_tile, read_workers=read_workers)


def upload_params(device: Device, params: FrameParams) -> dict:
    """Per-frame normalisation and weights on the device, as the combine kernels take them."""
    return {"scale": device.upload(np.ascontiguousarray(params.scale, np.float32)),
            "zero": device.upload(np.ascontiguousarray(params.zero, np.float32)),
            "weights": device.upload(np.ascontiguousarray(params.weights, np.float64))}


class DoubleBufferedRun:
    """One pass of a double-buffered tile loop over ``tiles`` with fixed buffer sizes.

    The ordering of the module docstring, shared by the combine and stack loops: tile ``i`` is
    read into slot ``i % 2`` on the stager thread (:meth:`_read`, after the slot's previous
    upload) while tile ``i - 1`` is launched (:meth:`_launch`: copies and kernels queued on the
    three streams, ordered by the ``uploaded``/``computed``/``downloaded`` events of its slot),
    and tile ``i - 2``'s outputs are handed out once downloaded. Subclasses allocate the buffers
    and implement :meth:`_read`, :meth:`_launch` and :meth:`finished_views`.
    """

    #: Attributes holding buffers, dropped by :meth:`close`.
    buffers: tuple[str, ...] = ()

    def __init__(self, device: Device, tiles: list[Tile], stager) -> None:
        self.device = device
        self.tiles = tiles
        self.stager = stager
        self.read_wait = 0.0
        self.pending: dict[int, object] = {}
        self._slot_of: dict[Tile, int] = {}
        d = device
        self.copy_stream, self.compute_stream, self.download_stream = (
            d.stream(), d.stream(), d.stream())
        self.uploaded = [d.event(), d.event()]
        self.computed = [d.event(), d.event()]
        self.downloaded = [d.event(), d.event()]

    def _read(self, i: int) -> None:
        """Fill slot ``i % 2``'s pinned input buffer with tile ``i`` (stager thread)."""
        raise NotImplementedError

    def _launch(self, i: int) -> None:
        """Queue tile ``i``'s upload, kernels and download on the streams."""
        raise NotImplementedError

    def _start_read(self, i: int) -> None:
        if i < len(self.tiles):
            self.pending[i] = self.stager.submit(self._read, i)

    def slot_of(self, tile: Tile) -> int:
        """The buffer slot holding a finished tile's outputs."""
        return self._slot_of[tile]

    def execute(self):
        """Yield each tile once its outputs are on the host (see :meth:`finished_views`)."""
        self._start_read(0)
        self._start_read(1)
        for i in range(len(self.tiles)):
            t0 = time.perf_counter()
            self.pending.pop(i).result()
            self.read_wait += time.perf_counter() - t0
            self._launch(i)
            self._slot_of[self.tiles[i]] = i % 2
            self._start_read(i + 2)
            if i >= 1:
                yield self._finish(i - 1)
        if self.tiles:
            yield self._finish(len(self.tiles) - 1)

    def _finish(self, i: int) -> Tile:
        tile = self.tiles[i]
        self.device.synchronize(self.downloaded[i % 2])
        return tile

    def abandon(self) -> None:
        for f in self.pending.values():
            f.cancel()
        for f in self.pending.values():
            try:
                f.result()
            except Exception:  # noqa: S110 - reads of an abandoned pass do not matter
                pass
        self.pending.clear()

    def close(self) -> None:
        self.abandon()
        for a in self.buffers:
            setattr(self, a, None)


class _TileRun(DoubleBufferedRun):
    """A pass of the combine loop: raw bytes staged, decoded and combined on the device."""

    buffers = ("pinned_in", "pinned_out", "raw", "block", "outs", "tables", "params")

    def __init__(self, device: Device, sources, specs: list[StageSpec], choice: KernelChoice,
                 options: CombineOptions, params: FrameParams, tiles: list[Tile], readers,
                 stager) -> None:
        super().__init__(device, tiles, stager)
        self.sources = sources
        self.specs = specs
        self.choice = choice
        self.options = options
        self.readers = readers
        self.n = len(sources)
        self.max_pix = max(t.shape[0] * t.shape[1] for t in tiles)
        # Each frame has a fixed slot in the staging buffer, so offsets never change per tile.
        sizes = [s.itemsize * self.max_pix for s in specs]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.staged_bytes = int(sum(sizes))
        d = device
        self.pinned_in = [d.pinned(self.staged_bytes, np.uint8) for _ in range(2)]
        self.pinned_out = [(d.pinned(self.max_pix, np.float32), d.pinned(self.max_pix, np.float32),
                            d.pinned(self.max_pix, np.int32)) for _ in range(2)]
        self.raw = [d.empty(self.staged_bytes, np.uint8) for _ in range(2)]
        self.block = d.empty(self.n * self.max_pix, np.float32)
        self.outs = [(d.empty(self.max_pix, np.float32), d.empty(self.max_pix, np.float32),
                      d.empty(self.max_pix, np.int32)) for _ in range(2)]
        self.tables = {
            "offsets": d.upload(self.offsets),
            "kinds": d.upload(np.array([s.kind for s in specs], np.int32)),
            "bscale": d.upload(np.array([s.bscale for s in specs], np.float64)),
            "bzero": d.upload(np.array([s.bzero for s in specs], np.float64)),
            "blank": d.upload(np.array([s.blank for s in specs], np.int64)),
            "has_blank": d.upload(np.array([s.has_blank for s in specs], np.int32)),
        }
        self.params = upload_params(d, params)

    # -- host side ---------------------------------------------------------------------------
    def _read(self, i: int) -> None:
        tile = self.tiles[i]
        b = i % 2
        self.device.synchronize(self.uploaded[b])  # pinned_in[b] no longer being uploaded
        npix = tile.shape[0] * tile.shape[1]
        buf = self.pinned_in[b]
        futures = []
        for k, src in enumerate(self.sources):
            start = int(self.offsets[k])
            dest = buf[start:start + self.specs[k].itemsize * npix]
            futures.append(self.readers.submit(src.read_staged, tile, dest))
        for f in futures:
            f.result()

    # -- device side -------------------------------------------------------------------------
    def _launch(self, i: int) -> None:
        d = self.device
        tile = self.tiles[i]
        b = i % 2
        npix = tile.shape[0] * tile.shape[1]
        d.wait(self.copy_stream, self.computed[b])  # raw[b] was decoded (tile i-2)
        d.copy_h2d(self.raw[b], self.pinned_in[b], self.staged_bytes, self.copy_stream)
        d.record(self.uploaded[b], self.copy_stream)
        d.wait(self.compute_stream, self.uploaded[b])
        d.wait(self.compute_stream, self.downloaded[b])  # outs[b] of tile i-2 downloaded
        # The block is laid out (n, npix) for this tile: frames at a stride of npix.
        d.decode(self.raw[b], self.tables, self.n, npix, self.block, self.compute_stream)
        d.combine(self.block, self.n, npix, self.choice, self.options, self.params,
                  self.outs[b], self.compute_stream)
        d.record(self.computed[b], self.compute_stream)
        d.wait(self.download_stream, self.computed[b])
        for host, dev, item in zip(self.pinned_out[b], self.outs[b], (4, 4, 4)):
            d.copy_d2h(host, dev, npix * item, self.download_stream)
        d.record(self.downloaded[b], self.download_stream)

    def finished_views(self, tile: Tile):
        b = self.slot_of(tile)
        npix = tile.shape[0] * tile.shape[1]
        return tuple(a[:npix].reshape(tile.shape) for a in self.pinned_out[b])
