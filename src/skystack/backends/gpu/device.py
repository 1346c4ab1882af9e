"""The CuPy implementation of the streaming loop's :class:`~.streaming.Device`.

Kernels come from :class:`cupy.RawModule` objects built from the assembled
``kernels/combine.cu`` and ``kernels/reproject.cu`` (compiled by NVRTC on first use and cached on
disk by CuPy). Streams are created non-blocking so that nothing on CuPy's default stream
serialises the pipeline; copies are ``cudaMemcpyAsync`` between pinned host memory and device
memory.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from ...config import CombineOptions
from ..kernel_interface import kernel_params
from .kernels import (
    KernelChoice,
    all_name_expressions,
    assemble_source,
    reproject_kernel_name,
    source_of,
)

_H2D = 1  # cudaMemcpyHostToDevice
_D2H = 2  # cudaMemcpyDeviceToHost
DECODE_THREADS = 256
RESAMPLE_THREADS = 256


NVRTC_OPTIONS = ("--std=c++17",)


@cache
def load_kernel(name: str):
    """The compiled kernel ``name`` (a name expression of :func:`all_name_expressions`).

    One RawModule per kernel: NVRTC instantiates only that template, so a cold run compiles the
    two kernels it uses (seconds) rather than all of them (about a minute); CuPy caches each on
    disk, keyed by the source text, options and name.
    """
    import cupy

    if name not in all_name_expressions():
        raise ValueError(f"unknown kernel {name!r}")
    module = cupy.RawModule(code=assemble_source(source_of(name)), options=NVRTC_OPTIONS,
                            name_expressions=[name])
    return module.get_function(name)


def combine_args(block, n_frames: int, npix: int, options: CombineOptions, params: dict,
                 outs: tuple) -> tuple:
    """The arguments of every combine kernel (SK_COMBINE_ARGS in kernels/combine.cu).

    The options travel as one ``sk::CombineParams`` struct: the bytes of a
    :func:`~skystack.backends.kernel_interface.kernel_params` record, a NumPy array of size one,
    which CuPy passes by value.
    """
    return (block, np.int32(n_frames), np.int64(npix), params["scale"], params["zero"],
            params["weights"], kernel_params(options), *outs)


class CupyDevice:
    """One CUDA device driven through CuPy."""

    def __init__(self, device_id: int = 0, memory_limit: int | None = None) -> None:
        """``memory_limit`` caps the device bytes the tile loop plans for (benchmarks use it to
        stream a stack larger than the budget on a GPU with more memory than the disk holds)."""
        import cupy

        self.memory_limit = memory_limit
        self.cp = cupy
        self.device = cupy.cuda.Device(device_id)
        self.device.use()
        props = cupy.cuda.runtime.getDeviceProperties(device_id)
        name = props["name"]
        self.name = name.decode() if isinstance(name, bytes) else str(name)
        self.sm_count = int(props["multiProcessorCount"])
        self.total_bytes = int(props["totalGlobalMem"])

    def kernel(self, name: str):
        return load_kernel(name)

    # -- memory ------------------------------------------------------------------------------
    def free_bytes(self) -> int:
        free, _ = self.cp.cuda.runtime.memGetInfo()
        free = int(free) + int(self.cp.get_default_memory_pool().free_bytes())
        return free if self.memory_limit is None else min(free, int(self.memory_limit))

    def empty(self, n: int, dtype):
        return self.cp.empty(int(n), dtype=dtype)

    def pinned(self, n: int, dtype) -> np.ndarray:
        import cupyx

        return cupyx.empty_pinned((int(n),), dtype=dtype)

    def upload(self, host: np.ndarray):
        arr = self.cp.asarray(host)
        self.cp.cuda.Device().synchronize()
        return arr

    def release(self) -> None:
        self.cp.cuda.Device().synchronize()
        self.cp.get_default_memory_pool().free_all_blocks()
        self.cp.get_default_pinned_memory_pool().free_all_blocks()

    def is_out_of_memory(self, exc: BaseException) -> bool:
        cp = self.cp
        if isinstance(exc, cp.cuda.memory.OutOfMemoryError):
            return True
        runtime_error = getattr(cp.cuda.runtime, "CUDARuntimeError", ())
        return isinstance(exc, runtime_error) and "memory" in str(exc).lower()

    # -- streams and events ------------------------------------------------------------------
    def stream(self):
        return self.cp.cuda.Stream(non_blocking=True)

    def event(self):
        return self.cp.cuda.Event(disable_timing=True)

    def record(self, event, stream) -> None:
        event.record(stream)

    def wait(self, stream, event) -> None:
        stream.wait_event(event)

    def synchronize(self, event) -> None:
        event.synchronize()

    def copy_h2d(self, dst, src: np.ndarray, nbytes: int, stream) -> None:
        self.cp.cuda.runtime.memcpyAsync(dst.data.ptr, src.ctypes.data, int(nbytes), _H2D,
                                         stream.ptr)

    def copy_d2h(self, dst: np.ndarray, src, nbytes: int, stream) -> None:
        self.cp.cuda.runtime.memcpyAsync(dst.ctypes.data, src.data.ptr, int(nbytes), _D2H,
                                         stream.ptr)

    # -- kernels -----------------------------------------------------------------------------
    def decode(self, staged, tables: dict, n_frames: int, npix: int, block, stream) -> None:
        blocks_x = max(1, min(-(-npix // DECODE_THREADS), 4096))  # grid-stride beyond
        with stream:
            self.kernel("decode_frames")(
                (blocks_x, n_frames), (DECODE_THREADS,),
                (staged, tables["offsets"], tables["kinds"], tables["bscale"], tables["bzero"],
                 tables["blank"], tables["has_blank"], np.int64(npix), block))

    def combine(self, block, n_frames: int, npix: int, choice: KernelChoice,
                options: CombineOptions, params: dict, outs: tuple, stream) -> None:
        groups = -(-npix // choice.pixels_per_block)
        grid = max(1, min(groups, self.sm_count * 32))
        with stream:
            self.kernel(choice.name)((grid,), (choice.threads_per_block,),
                                     combine_args(block, n_frames, npix, options, params, outs),
                                     shared_mem=choice.shared_bytes)

    def resample(self, staged, spec, block, stream) -> None:
        """Resample every frame of a staged tile into ``block`` (``reproject_tile``, see
        kernels/reproject.cu; ``spec`` is a :class:`.stack_streaming.ResampleSpec`)."""
        npix = spec.npix
        # Enough blocks to fill the GPU over all frames; grid-stride beyond.
        per_frame = max(1, -(-self.sm_count * 16 // max(1, spec.n_frames)))
        blocks_x = max(1, min(-(-npix // RESAMPLE_THREADS), per_frame))
        name = reproject_kernel_name(spec.interp, spec.conserve_flux)
        with stream:
            self.kernel(name)(
                (blocks_x, spec.n_frames), (RESAMPLE_THREADS,),
                (staged, np.int32(spec.tile_rows), np.int32(spec.tile_cols),
                 np.int32(spec.node_cols), np.int32(spec.pr), np.int32(spec.pc),
                 np.int64(spec.off_start_r), np.int64(spec.off_start_c), np.int64(spec.off_w_r),
                 np.int64(spec.off_w_c), np.int32(spec.edge_order), block))

    def coverage(self, block, n_frames: int, npix: int, exptimes, coverage, expmap,
                 stream) -> None:
        """Per pixel of the block: finite values (int32) and their frames' exposure times."""
        blocks_x = max(1, min(-(-npix // RESAMPLE_THREADS), self.sm_count * 16))
        with stream:
            self.kernel("coverage_expmap")(
                (blocks_x,), (RESAMPLE_THREADS,),
                (block, np.int32(n_frames), np.int64(npix), exptimes, coverage, expmap))
