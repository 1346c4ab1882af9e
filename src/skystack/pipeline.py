"""The tile loop: plan → read → combine → write, with the next tile read while this one combines.

Memory held at once: two input blocks of ``(n_frames, rows, cols)`` float32 plus one tile of
outputs, sized by :mod:`skystack.tiling` from ``options.mem_limit``; it does not grow with the
number of frames beyond that (tiles get smaller instead).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .backends.base import Backend, TileOutputs
from .config import CombineOptions
from .io.inputs import Frame
from .io.reader import Tile, TileReader
from .io.sigma import TileSigma, sigma_source
from .normalization import frame_params
from .tiling import plan_tiles
from .uncertainty import resolve_uncertainty, uncertainty_sinks

log = logging.getLogger("skystack")

Progress = Callable[[int, int], None]


class ArraySink:
    """Collects the tiles of a combine into whole in-memory arrays."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.image = np.empty(shape, np.float32)
        self.uncertainty = np.empty(shape, np.float32)
        self.count = np.empty(shape, np.int32)

        self.mask: np.ndarray | None = None
        self.extras: dict[str, np.ndarray] = {}

    def write_tile(self, tile: Tile, image, uncertainty, count, *, mask=None,
                   extras=None) -> None:
        sl = (slice(tile.r0, tile.r1), slice(tile.c0, tile.c1))
        self.image[sl] = image
        self.uncertainty[sl] = uncertainty
        self.count[sl] = count
        if mask is not None:
            if self.mask is None:
                self.mask = np.zeros(self.image.shape, bool)
            self.mask[sl] = mask
        for name, plane in (extras or {}).items():
            if name not in self.extras:
                self.extras[name] = np.full(self.image.shape, np.nan, np.float32)
            self.extras[name][sl] = plane


@dataclass
class RunStats:
    """What a combine did: tiles, seconds spent reading (waiting on reads) and combining."""

    n_frames: int
    n_tiles: int
    tile_shape: tuple[int, int]
    seconds: float
    read_wait_seconds: float
    combine_seconds: float


def _views(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous view of the first prod(shape) elements of a flat buffer."""
    return flat[: int(np.prod(shape))].reshape(shape)


def combine_frames(frames: list[Frame], options: CombineOptions, backend: Backend,
                   sinks: Sequence, *, progress: Progress | None = None,
                   max_tile_rows: int | None = None, read_workers: int = 2) -> RunStats:
    """Combine ``frames`` tile by tile with ``backend``, handing each finished tile to ``sinks``.

    ``options`` must be validated (``CombineOptions.validated()``). Each sink has
    ``write_tile(tile, image, uncertainty, count)``; the uncertainty is the one
    ``options.uncertainty`` asks for (:mod:`skystack.uncertainty`).
    """
    t0 = time.perf_counter()
    n = len(frames)
    shape = frames[0].shape
    options = resolve_uncertainty(frames, options)
    params = frame_params(frames, options)
    sigma = None
    if options.uncertainty == "propagate":
        sigma = TileSigma([sigma_source(f) for f in frames])
    sinks = uncertainty_sinks(sinks, options, params, sigma)  # UNCERT: skystack.uncertainty
    if hasattr(backend, "stream_combine"):
        # The GPU streams raw bytes through pinned memory with its own tiling and buffers.
        sstats = backend.stream_combine([f.source for f in frames], shape, options, params,
                                        sinks, progress=progress, max_tile_rows=max_tile_rows,
                                        read_workers=max(read_workers, 4))
        stats = RunStats(n, sstats.n_tiles, sstats.tile_shape, time.perf_counter() - t0,
                         sstats.read_wait_seconds, 0.0)
        log.debug("combine: %s", stats)
        return stats
    tiles = plan_tiles(shape, n, options.mem_limit, max_rows=max_tile_rows)
    biggest = max(t.shape[0] * t.shape[1] for t in tiles)
    buffers = [np.empty(n * biggest, np.float32) for _ in range(2)]
    out_flat = (np.empty(biggest, np.float32), np.empty(biggest, np.float32),
                np.empty(biggest, np.int32))
    reader = TileReader([f.source for f in frames], workers=read_workers)
    read_wait = 0.0
    combine_time = 0.0
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="skystack-prefetch") as prefetch:
            def start_read(i: int):
                block = _views(buffers[i % 2], (n, *tiles[i].shape))
                return block, prefetch.submit(reader.read, tiles[i], block)

            pending = start_read(0)
            for i, tile in enumerate(tiles):
                block, future = pending
                tw = time.perf_counter()
                future.result()
                read_wait += time.perf_counter() - tw
                if i + 1 < len(tiles):
                    pending = start_read(i + 1)
                out = TileOutputs(*(_views(a, tile.shape) for a in out_flat))
                tc = time.perf_counter()
                backend.combine_tile(block, options, params, out)
                combine_time += time.perf_counter() - tc
                for sink in sinks:
                    sink.write_tile(tile, out.image, out.uncertainty, out.count)
                if progress is not None:
                    progress(i + 1, len(tiles))
    finally:
        reader.close()
    stats = RunStats(n, len(tiles), tiles[0].shape, time.perf_counter() - t0, read_wait,
                     combine_time)
    log.debug("combine: %s", stats)
    return stats
