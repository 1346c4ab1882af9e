"""What one product's tile tasks need, as small picklable records built on the client.

A job holds no pixels: source specs (paths and offsets), options, the per-frame normalisation
computed once on the client (``FrameParams``: three arrays of n_frames values), for stacks the
frames' WCS and the output grid, and where to write (:class:`~.output.OutputSpec`). It enters
the task graph once, as the result of a trivial task every tile task depends on, so it crosses
the network once per worker rather than once per tile, and the scheduler can recompute it if the
worker holding it is lost.

On a worker, :meth:`open` rebuilds the sources (files reopened by path) into an opened job that
fills a tile's ``(n_frames, rows, cols)`` float32 block exactly as the in-process loops do
(:class:`skystack.core.combine_loop.TileReader` for ``combine``,
:func:`skystack.core.stack_loop.fill_stack_block` for ``stack``).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..backends.base import FrameParams
from ..config import CombineOptions
from ..core.combine_loop import TileReader
from ..core.frame import Frame
from ..core.grid import Grid
from ..core.stack_loop import FrameResampler, coverage_and_expmap, fill_stack_block
from ..core.tiles import Tile
from ..io.reader import HandlePool
from .output import OutputSpec
from .specs import Spec, open_source

__all__ = ["CombineJob", "StackJob", "CountingPool"]


class CountingPool(HandlePool):
    """A :class:`HandlePool` that counts the bytes it reads (the task reports them)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_read = 0
        self._count_lock = threading.Lock()

    def pread_into(self, path: str, buf: memoryview, offset: int) -> int:
        n = super().pread_into(path, buf, offset)
        with self._count_lock:
            self.bytes_read += n
        return n


@dataclass(frozen=True, eq=False)
class _JobBase:
    """Fields common to every job; ``token`` names the job in workers' caches (unique per run).

    ``threads`` is the user's ``--threads`` (CPU threads per task) or None; ``threads_by_host``
    the client's default per worker host (see :func:`skystack.cluster.connect`).
    """

    token: str
    sources: tuple[Spec, ...]
    options: CombineOptions
    params: FrameParams
    backend: str
    output: OutputSpec
    threads: int | None = None
    threads_by_host: dict = field(default_factory=dict)
    # Value-clip variance-factor tables (skystack.clip_efficiency), computed once by the driver.
    clip: tuple | None = None

    @property
    def n_frames(self) -> int:
        return len(self.sources)


@dataclass(frozen=True, eq=False)
class CombineJob(_JobBase):
    """A pixel-by-pixel combine (``skystack combine``, the night's masters)."""

    kind = "combine"
    read_workers: int = 2

    def open(self) -> _OpenedCombine:
        return _OpenedCombine(self)


@dataclass(frozen=True, eq=False)
class StackJob(_JobBase):
    """A reprojected stack onto ``grid`` (``skystack stack``, the night's stacks).

    ``frames`` are (label, shape) per input, ``wcs_list`` their celestial WCS and ``grid_wcs``
    the grid's (:class:`~.wcs_transport.WcsText`: rebuilt exactly on the worker),
    ``grid_shape`` (rows, cols), ``exptimes`` float32 seconds (0 where unknown), ``workers``
    the resampling threads per task.
    """

    kind = "stack"
    frames: tuple = ()
    wcs_list: tuple = ()
    grid_wcs: object = None
    grid_shape: tuple = ()
    exptimes: np.ndarray | None = None
    interp: str = "bilinear"
    conserve_flux: bool = False
    step: int = 32
    workers: int = 2

    def open(self) -> _OpenedStack:
        return _OpenedStack(self)


class _OpenedCombine:
    """A combine job's sources reopened on a worker."""

    def __init__(self, job: CombineJob) -> None:
        self.pool = CountingPool()
        self.reader = TileReader([open_source(s, self.pool) for s in job.sources],
                                 workers=job.read_workers)

    def fill(self, tile: Tile, block: np.ndarray) -> dict:
        """Read ``tile`` of every frame into ``block``; no extra planes for a combine."""
        self.reader.read(tile, block)
        return {}

    def close(self) -> None:
        self.reader.close()
        self.pool.close()


class _OpenedStack:
    """A stack job's frames reopened on a worker, with their resamplers."""

    def __init__(self, job: StackJob) -> None:
        self.job = job
        self.pool = CountingPool()
        self.resamplers = []
        grid = Grid(job.grid_wcs.build(), tuple(job.grid_shape))
        for spec, (label, shape), wcs in zip(job.sources, job.frames, job.wcs_list):
            frame = Frame(label, tuple(shape), None, open_source(spec, self.pool))
            self.resamplers.append(FrameResampler(frame, wcs.build(), grid, job.interp,
                                                   job.conserve_flux, job.step))
        self.executor = ThreadPoolExecutor(max(1, job.workers),
                                           thread_name_prefix="skystack-resample")

    def fill(self, tile: Tile, block: np.ndarray) -> dict:
        """Resample every frame onto ``tile`` into ``block``; returns the stack's extra
        planes (COUNT = coverage and EXPMAP), computed before rejection as in-process."""
        fill_stack_block(self.executor, self.resamplers, tile, block)
        coverage, expmap = coverage_and_expmap(block, self.job.exptimes)
        return {"coverage": coverage, "expmap": expmap}

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.pool.close()
