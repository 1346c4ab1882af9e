"""The GPU backend: the same combinations and reprojections as the CPU backend, run by the CUDA
kernels of ``kernels/combine.cu`` and ``kernels/reproject.cu`` through CuPy, streamed tile by tile
(:mod:`.streaming`, :mod:`.stack_streaming`)."""

from __future__ import annotations

import time

import numpy as np

from ...config import CombineOptions
from ..base import FrameParams, RunStats, TileOutputs
from .device import CupyDevice
from .kernels import choose_combine_kernel
from .stack_streaming import stream_stack
from .streaming import stream_combine


class StreamingBackend:
    """``run_combine`` and ``run_stack`` streamed through ``self.device`` (a
    :class:`~.streaming.Device`: the GPU, or the tests' stand-in), with the device's own tiling
    and buffers. ``last_stats`` keeps the streaming loop's own statistics of the latest run
    (:class:`~.streaming.StreamStats` for a combine, with its out-of-memory retries)."""

    name = "gpu"
    thread_safe = False  # one device, one stream of work: the cluster serialises its tasks
    device = None
    last_stats = None

    def run_combine(self, frames: list, options: CombineOptions, params: FrameParams, sinks,
                    *, progress=None, max_tile_rows: int | None = None,
                    read_workers: int = 2) -> RunStats:
        """Raw FITS bytes decoded on the device, copies and kernels overlapped with file reads
        (:func:`.streaming.stream_combine`); at least 4 reading threads."""
        t0 = time.perf_counter()
        sstats = stream_combine(self.device, [f.source for f in frames], frames[0].shape,
                                options, params, sinks, progress=progress,
                                max_tile_rows=max_tile_rows, read_workers=max(read_workers, 4))
        self.last_stats = sstats
        return RunStats(len(frames), sstats.n_tiles, sstats.tile_shape,
                        time.perf_counter() - t0, sstats.read_wait_seconds, 0.0)

    def run_stack(self, frames: list, grid, options: CombineOptions, params: FrameParams,
                  sinks, *, wcs_list: list, exptimes: np.ndarray, interp: str = "bilinear",
                  conserve_flux: bool = False, progress=None,
                  max_tile_rows: int | None = None, workers: int = 2,
                  step: int = 32) -> RunStats:
        """Frames resampled on the device into the tile block the combine reads
        (:func:`.stack_streaming.stream_stack`); at least 4 reading threads."""
        self.last_stats = stream_stack(self.device, frames, wcs_list, grid, options, params,
                                       exptimes, sinks, interp=interp,
                                       conserve_flux=conserve_flux, progress=progress,
                                       max_tile_rows=max_tile_rows,
                                       read_workers=max(4, workers), step=step)
        return self.last_stats


class GpuBackend(StreamingBackend):
    """CuPy + CUDA combination on one GPU.

    Whole combines and stacks stream through the device (:class:`StreamingBackend`);
    :meth:`combine_tile` serves in-memory blocks (the cluster's tile tasks).
    """

    def __init__(self, device_id: int = 0, memory_limit: int | None = None) -> None:
        self.device = CupyDevice(device_id, memory_limit=memory_limit)

    def describe(self) -> str:
        import cupy

        gib = self.device.total_bytes / 2**30
        return f"gpu ({self.device.name}, {gib:.0f} GiB, CuPy {cupy.__version__})"

    def combine_tile(self, block: np.ndarray, options: CombineOptions, params: FrameParams,
                     out: TileOutputs) -> None:
        cp = self.device.cp
        n = block.shape[0]
        npix = block[0].size
        dev_block = cp.asarray(np.ascontiguousarray(block, np.float32).reshape(n, npix))
        dev_params = {"scale": cp.asarray(np.asarray(params.scale, np.float32)),
                      "zero": cp.asarray(np.asarray(params.zero, np.float32)),
                      "weights": cp.asarray(np.asarray(params.weights, np.float64))}
        outs = (cp.empty(npix, cp.float32), cp.empty(npix, cp.float32), cp.empty(npix, cp.int32))
        stream = cp.cuda.get_current_stream()
        self.device.combine(dev_block, n, npix, choose_combine_kernel(n, options), options,
                            dev_params, outs, stream)
        out.image[...] = cp.asnumpy(outs[0]).reshape(out.image.shape)
        out.uncertainty[...] = cp.asnumpy(outs[1]).reshape(out.image.shape)
        out.count[...] = cp.asnumpy(outs[2]).reshape(out.image.shape)

    def close(self) -> None:
        self.device.release()
