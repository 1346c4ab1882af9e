"""The functions that run on Dask workers: one call of :func:`run_tile` per output tile.

A tile task reads its band of every input from shared storage, combines it with this worker's
backend (CPU, or the GPU of a ``dask-cuda`` worker), writes the band into the partial output
file (:class:`~.output.BandWriter`) and returns only a :class:`TileDone` record: the tile, the
CRC of what it wrote and its timings. Nothing else leaves the worker.

Per worker process, opened jobs (sources with their file descriptors) are cached by job token
and backends by (name, threads), so consecutive tiles of a product reuse them.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..backends.base import TileOutputs
from ..core.stack_loop import write_stack_tile
from ..core.tiles import Tile
from ..uncertainty import uncertainty_sinks
from .output import BandWriter

__all__ = ["TileDone", "run_tile", "identity", "describe_backend", "release_job",
           "install_test_fault", "task_threads"]

_LOCK = threading.Lock()
_OPENED: OrderedDict[str, object] = OrderedDict()
_OPENED_LIMIT = 2  # each holds up to a HandlePool's limit of file descriptors
_BACKENDS: dict[tuple[str, int], tuple[object, threading.Lock]] = {}
_FAULT: dict = {}


@dataclass(frozen=True)
class TileDone:
    """What a tile task returns: the tile, the CRC-32 of the bytes written, seconds spent
    filling the block (reads; for stacks also pixel maps and resampling), combining and writing
    (including ``fdatasync``), bytes read from storage and written, and the worker's address."""

    tile: Tile
    crc: int
    fill_seconds: float
    combine_seconds: float
    write_seconds: float
    bytes_read: int
    bytes_written: int
    worker: str


def identity(job):
    """The job itself: the graph's single node that carries a job to the workers."""
    return job


def task_threads(threads: int | None, threads_by_host: dict) -> int:
    """CPU threads for one task: ``--threads`` if given, else the client's share for this
    worker's host, else this host's cores divided by this worker's task slots."""
    from ..backends.cpu import available_cpus

    if threads:
        return int(threads)
    try:
        from distributed import get_worker

        worker = get_worker()
        host = worker.address.split("://")[-1].rsplit(":", 1)[0]
        if host in threads_by_host:
            return int(threads_by_host[host])
        return max(1, available_cpus() // max(1, worker.state.nthreads))
    except (ImportError, ValueError):  # not inside a worker (direct calls, tests)
        return available_cpus()


def _backend(name: str, threads: int):
    """This process's backend for (name, threads), created once; with a lock for engines that
    are not safe to call from several task threads at once (the GPU)."""
    from ..backends import get_backend

    key = (name, threads)
    with _LOCK:
        if key not in _BACKENDS:
            engine = get_backend(name, threads=threads)
            _BACKENDS[key] = (engine, threading.Lock())
        return _BACKENDS[key]


def describe_backend(name: str, threads: int | None, threads_by_host: dict) -> str:
    """The worker's backend description (for the SKYSBKND header card)."""
    return _backend(name, task_threads(threads, threads_by_host))[0].describe()


def _opened(job):
    """The job's sources reopened in this process (cached by token, least recent evicted)."""
    with _LOCK:
        opened = _OPENED.pop(job.token, None)
        if opened is None:
            opened = job.open()
            while len(_OPENED) >= _OPENED_LIMIT:
                _OPENED.popitem(last=False)[1].close()
        _OPENED[job.token] = opened
        return opened


def release_job(token: str) -> None:
    """Close a finished job's sources in this process (the driver runs it on every worker)."""
    with _LOCK:
        opened = _OPENED.pop(token, None)
    if opened is not None:
        opened.close()


def run_tile(job, tile: Tile) -> TileDone:
    """Fill, combine and write one output tile of ``job`` (see module docstring)."""
    opened = _opened(job)
    engine, engine_lock = _backend(job.backend, task_threads(job.threads, job.threads_by_host))
    block = np.empty((job.n_frames, *tile.shape), np.float32)
    read_before = opened.pool.bytes_read
    t0 = time.perf_counter()
    extra = opened.fill(tile, block)
    t1 = time.perf_counter()
    out = TileOutputs.empty(tile.shape)
    if engine.thread_safe:
        engine.combine_tile(block, job.options, job.params, out)
    else:
        with engine_lock:
            engine.combine_tile(block, job.options, job.params, out)
    del block
    t2 = time.perf_counter()
    writer = BandWriter(job.output)
    # The uncertainty the options ask for, computed from the tile as in-process.
    sinks = uncertainty_sinks([writer], job.options, job.params, clip=job.clip)
    try:
        if job.kind == "stack":
            write_stack_tile(sinks, tile, out, extra["coverage"], extra["expmap"])
        else:
            for sink in sinks:
                sink.write_tile(tile, out.image, out.uncertainty, out.count)
    finally:
        crc = writer.finish()
    t3 = time.perf_counter()
    _maybe_fault()
    return TileDone(tile, crc, t1 - t0, t2 - t1, t3 - t2,
                    opened.pool.bytes_read - read_before, writer.nbytes, _worker_address())


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return ""


def install_test_fault(marker: str, after: int) -> None:
    """Test hook, installed on workers with ``client.run``: the first worker process to have
    written ``after`` tiles and to create ``marker`` (exclusively: once per cluster) kills
    itself with SIGKILL right after writing a tile, before reporting it — a worker lost
    mid-run, its tile written but not journaled."""
    _FAULT.clear()
    _FAULT.update(marker=marker, after=int(after), done=0)


def _maybe_fault() -> None:
    if not _FAULT:
        return
    _FAULT["done"] += 1
    if _FAULT["done"] < _FAULT["after"]:
        return
    try:
        fd = os.open(_FAULT["marker"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        _FAULT.clear()
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
