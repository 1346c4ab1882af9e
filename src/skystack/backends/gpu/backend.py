"""The GPU backend: the same combinations and reprojections as the CPU backend, run by the CUDA
kernels of ``kernels/combine.cu`` and ``kernels/reproject.cu`` through CuPy, streamed tile by tile
(:mod:`.streaming`, :mod:`.stack_streaming`)."""

from __future__ import annotations

import numpy as np

from ...config import CombineOptions
from ..base import FrameParams, TileOutputs
from .device import CupyDevice
from .kernels import choose_combine_kernel
from .stack_streaming import stream_stack
from .streaming import stream_combine


class GpuBackend:
    """CuPy + CUDA combination on one GPU.

    Whole combines go through :meth:`stream_combine` (raw FITS bytes decoded on the GPU, copies
    and kernels overlapped with file reads), whole stacks through :meth:`stream_stack` (frames
    resampled on the GPU into the tile block the combine reads); :meth:`combine_tile` serves
    in-memory blocks.
    """

    name = "gpu"

    def __init__(self, device_id: int = 0, memory_limit: int | None = None) -> None:
        self.device = CupyDevice(device_id, memory_limit=memory_limit)

    def describe(self) -> str:
        import cupy

        gib = self.device.total_bytes / 2**30
        return f"gpu ({self.device.name}, {gib:.0f} GiB, CuPy {cupy.__version__})"

    def stream_combine(self, sources: list, shape: tuple[int, int], options: CombineOptions,
                       params: FrameParams, sinks, *, progress=None,
                       max_tile_rows: int | None = None, read_workers: int = 4):
        return stream_combine(self.device, sources, shape, options, params, sinks,
                              progress=progress, max_tile_rows=max_tile_rows,
                              read_workers=read_workers)

    def stream_stack(self, frames: list, grid, options: CombineOptions, params: FrameParams,
                     sinks, *, wcs_list: list, exptimes: np.ndarray, interp: str = "bilinear",
                     conserve_flux: bool = False, progress=None,
                     max_tile_rows: int | None = None, workers: int = 4, step: int = 32):
        """Reproject and combine on the GPU (see :func:`.stack_streaming.stream_stack`)."""
        return stream_stack(self.device, frames, wcs_list, grid, options, params, exptimes,
                            sinks, interp=interp, conserve_flux=conserve_flux, progress=progress,
                            max_tile_rows=max_tile_rows, read_workers=max(4, workers), step=step)

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
