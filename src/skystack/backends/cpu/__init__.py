"""The CPU backend: Numba kernels run on a pool of threads, each on its own range of pixels."""

from __future__ import annotations

import os
import platform
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ...config import CombineOptions
from ...networks import network_array
from ..base import FrameParams, HostLoops, TileOutputs
from ..kernel_interface import kernel_params
from . import kernels as K

# Pixels per thread task are multiples of this, so vector loops stay aligned and tasks coarse.
_ALIGN = 64


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def needs_order_statistics(options: CombineOptions) -> bool:
    """True when the combine needs sorted values (median, or rank/sigma rejection)."""
    # Every rejection but range works on sorted values.
    return options.method == "median" or options.reject not in ("none", "range")


def sorted_chunk(n_frames: int) -> int:
    """Pixels sorted together: the scratch (n_frames x chunk float32) stays in L1/L2 cache."""
    return int(max(16, min(512, (32768 // max(1, n_frames)) // 16 * 16)))


class CpuBackend(HostLoops):
    """NumPy + Numba combination on ``threads`` CPU threads (default: all available cores); the
    host loops of :mod:`skystack.core` run the combines and stacks (:class:`HostLoops`)."""

    name = "cpu"
    thread_safe = True  # each call has its own outputs; the thread pool is shared safely

    def __init__(self, threads: int | None = None) -> None:
        self.threads = max(1, threads or available_cpus())
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="skystack-cpu")

    def describe(self) -> str:
        return f"cpu ({self.threads} threads, {platform.machine()}, numba)"

    def combine_tile(self, block: np.ndarray, options: CombineOptions, params: FrameParams,
                     out: TileOutputs) -> None:
        nf = block.shape[0]
        flat = np.ascontiguousarray(block, dtype=np.float32).reshape(nf, -1)
        img = out.image.reshape(-1)
        unc = out.uncertainty.reshape(-1)
        cnt = out.count.reshape(-1)
        npix = flat.shape[1]
        kp = kernel_params(options)[()]  # a numpy.void: a Record in the Numba kernels
        scale = np.ascontiguousarray(params.scale, np.float32)
        zero = np.ascontiguousarray(params.zero, np.float32)
        weights = np.ascontiguousarray(params.weights, np.float64)

        if needs_order_statistics(options):
            pairs = network_array(nf)
            chunk = sorted_chunk(nf)

            def work(p0: int, p1: int) -> None:
                K.combine_sorted(flat, p0, p1, pairs, scale, zero, weights, kp, chunk, img, unc,
                                 cnt)
        else:
            def work(p0: int, p1: int) -> None:
                K.combine_accumulate(flat, p0, p1, scale, zero, weights, kp, 512, img, unc, cnt)

        per = -(-npix // self.threads)
        per = -(-per // _ALIGN) * _ALIGN
        ranges = [(p, min(npix, p + per)) for p in range(0, npix, per)]
        if len(ranges) == 1:
            work(*ranges[0])
            return
        for f in [self._pool.submit(work, a, b) for a, b in ranges]:
            f.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
