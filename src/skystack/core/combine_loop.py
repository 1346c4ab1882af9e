"""The host combine loop: plan → read → combine → write, with the next tile read while this one
combines.

Memory held at once: two input blocks of ``(n_frames, rows, cols)`` float32 plus one tile of
outputs, sized by :mod:`skystack.core.tiles` from ``options.mem_limit``; it does not grow with
the number of frames beyond that (tiles get smaller instead). Any engine with a
``combine_tile`` runs it (:class:`skystack.backends.base.HostLoops`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..config import CombineOptions
from .frame import Frame
from .records import FrameParams, RunStats, TileOutputs
from .tiles import Tile, plan_tiles

__all__ = ["TileReader", "host_combine", "Progress"]

Progress = Callable[[int, int], None]


class TileReader:
    """Reads one tile of every frame into a ``(n_frames, rows, cols)`` float32 block.

    Frames are read concurrently by ``workers`` threads (system reads and NumPy decoding release
    the GIL), so a tile's reads overlap each other and the combine of the previous tile.
    """

    def __init__(self, sources: list, workers: int = 2) -> None:
        self.sources = sources
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers),
                                        thread_name_prefix="skystack-read")

    def read(self, tile: Tile, block: np.ndarray) -> None:
        """Fill ``block[k]`` with frame k's pixels of ``tile``; raises the first read error."""
        if block.shape != (len(self.sources), *tile.shape):
            raise ValueError(f"block shape {block.shape} does not fit tile {tile.shape}")
        futures = [self._pool.submit(src.read, tile, block[k])
                   for k, src in enumerate(self.sources)]
        for f in futures:
            f.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _views(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous view of the first prod(shape) elements of a flat buffer."""
    return flat[: int(np.prod(shape))].reshape(shape)


def host_combine(backend, frames: list[Frame], options: CombineOptions, params: FrameParams,
                 sinks: Sequence, *, progress: Progress | None = None,
                 max_tile_rows: int | None = None, read_workers: int = 2) -> RunStats:
    """Combine ``frames`` tile by tile with ``backend.combine_tile``, handing each finished tile
    to every sink (``write_tile(tile, image, uncertainty, count)``).

    ``options`` are validated and resolved :class:`~skystack.config.CombineOptions`, ``params``
    the frames' :class:`FrameParams`, ``sinks`` already wrapped for the uncertainty the options
    ask for (:func:`skystack.uncertainty.uncertainty_sinks`). ``seconds`` of the result count
    from the call.
    """
    t0 = time.perf_counter()
    n = len(frames)
    shape = frames[0].shape
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
    return RunStats(n, len(tiles), tiles[0].shape, time.perf_counter() - t0, read_wait,
                    combine_time)
