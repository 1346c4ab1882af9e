"""The client side of a cluster run: plan, resume, submit one task per tile, journal, commit.

For one product (a combine or a stack):

1. Frames are loaded (headers only) and the per-frame normalisation (scale, zero, weights) is
   computed here once, exactly as in-process; sources become specs (paths and offsets).
2. Tiles are planned exactly as the in-process CPU run on this machine would plan them
   (:func:`skystack.core.tiles.plan_tiles`, :func:`skystack.core.stack_loop.stack_tile_plan`),
   so each output pixel goes through the same code with the same inputs: the product is
   identical.
3. The output is created with :class:`~skystack.io.writer.FitsTileWriter` under the fixed name
   ``<output>.partial`` (headers written, data areas sized). If that file and a journal with
   the same fingerprint exist, the tiles the journal names are skipped
   (:mod:`skystack.cluster.journal`); otherwise both are started afresh.
4. The job enters the graph once; one task per remaining tile depends on it
   (:func:`skystack.cluster.tasks.run_tile`). As tasks finish, their small results are gathered
   and journaled. A worker lost mid-run has its tiles recomputed elsewhere by the scheduler.
5. When every tile is in, the file is synced and renamed to ``output``, the journal removed.
   If the run stops (error, interrupt, too many workers lost), the partial file and journal are
   kept, and running the same command again resumes.

What crosses the scheduler: the job record (paths, options, n_frames normalisation values,
WCS for stacks, file layout), one ``(job, tile)`` task per tile and one :class:`TileDone` per
tile. Pixels go only between storage and workers.

Header differences from the in-process product: ``SKYSBKND`` is the *workers'* backend
(e.g. a different thread count), and ``SKYSDASK`` records the number of workers.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field, replace

import numpy as np
from astropy.io import fits

from ..clip_efficiency import clip_variance_factors
from ..core.stack_loop import stack_tile_plan
from ..core.tiles import plan_tiles
from ..errors import SkystackError
from ..io.lock import output_lock, remove_leftovers, temporary_pattern
from ..io.writer import FitsTileWriter
from ..normalization import frame_params
from .connect import cluster_client, local_threads_by_host, require_distributed
from .jobs import CombineJob, StackJob
from .journal import Journal, done_tiles, fingerprint, journal_paths
from .output import OutputSpec
from .specs import source_spec, spec_files
from .tasks import TileDone, describe_backend, identity, release_job, run_tile
from .wcs_transport import frame_wcs_text, grid_wcs_text

__all__ = ["ClusterStats", "combine_on_cluster", "stack_on_cluster"]

log = logging.getLogger("skystack")

TASK_RETRIES = 2


@dataclass
class ClusterStats:
    """What a cluster run did: ``tiles`` planned, ``skipped`` (already in the journal),
    ``submitted`` tasks, ``workers`` at the start, wall ``seconds``, and the tasks' results."""

    path: str
    tiles: int
    skipped: int
    submitted: int
    workers: int
    seconds: float
    results: list[TileDone] = field(default_factory=list)


def _cluster_header(header: fits.Header, client) -> int:
    n = len(client.scheduler_info(n_workers=-1)["workers"])
    header["SKYSDASK"] = (n, "dask workers when the run started")
    return n


def _worker_description(client, backend: str, threads, by_host) -> str:
    """The backend description, asked of a worker (the client may have no GPU, or be another
    kind of machine); raises the worker's one-line error, e.g. no usable GPU there."""
    if not client.scheduler_info(n_workers=-1)["workers"]:
        raise SkystackError("the dask cluster has no workers")
    return client.submit(describe_backend, backend, threads, by_host, pure=False).result()


def _refuse_propagate(opts) -> None:
    # Workers would need the inputs' uncertainty planes as specs too: not done yet.
    if opts.uncertainty == "propagate":
        raise SkystackError("--uncertainty propagate does not run on a cluster yet (run "
                            "without --workers/--scheduler, or use model or scatter)")


def combine_on_cluster(frames, opts, output, *, cluster, header_for,
                       backend: str = "auto", overwrite: bool = False, progress=None,
                       threads: int | None = None,
                       max_tile_rows: int | None = None) -> ClusterStats:
    """:func:`skystack.combine_to_file` on a Dask cluster (see module docstring).

    ``frames`` and validated ``opts`` are as the in-process combine has them (loaded and
    checked by :func:`skystack.api.load_checked`); ``header_for(backend_description)`` builds
    the product's header. ``cluster`` is a ``distributed.Client``, a scheduler address or a
    number of local worker processes (:func:`skystack.cluster.connect.cluster_client`)."""
    require_distributed()
    _refuse_propagate(opts)
    specs = tuple(source_spec(f.source, f.label) for f in frames)
    shape = frames[0].shape
    with cluster_client(cluster) as client:
        by_host = local_threads_by_host(client)
        header = header_for(_worker_description(client, backend, threads, by_host))
        _cluster_header(header, client)
        params = frame_params(frames, opts)
        clip = clip_variance_factors(opts, params)
        tiles = plan_tiles(shape, len(frames), opts.mem_limit, max_rows=max_tile_rows)
        recipe = {"kind": "combine", "sources": [repr(s) for s in specs],
                  "options": repr(replace(opts, mem_limit=None)), "scale": params.scale,
                  "zero": params.zero, "weights": np.asarray(params.weights),
                  "backend": backend}

        def make_writer(partial):
            return FitsTileWriter(output, shape, header, max_count=len(frames),
                                  overwrite=overwrite, partial=partial)

        def make_job(token, out_spec):
            return CombineJob(token, specs, opts, params, backend, out_spec, threads, by_host,
                              clip=clip)

        files = [p for s in specs for p in spec_files(s)]
        return _run(client, "combine", output, tiles, recipe, files, make_writer, make_job,
                    progress)


def stack_on_cluster(frames, wcs_list, grid, opts, output, *, cluster, header_for,
                     interp: str = "bilinear", conserve_flux: bool = False,
                     backend: str = "auto", overwrite: bool = False, progress=None,
                     threads: int | None = None, max_tile_rows: int | None = None,
                     step: int = 32) -> ClusterStats:
    """:func:`skystack.api_reproject.stack_to_file` on a Dask cluster (see module docstring).

    ``frames``, ``wcs_list``, ``grid`` and validated ``opts`` are as the in-process stack has
    them; ``header_for(backend_description)`` builds the product's header."""
    from ..backends.cpu import available_cpus
    from ..io.provenance import exposure_seconds

    require_distributed()
    _refuse_propagate(opts)
    specs = tuple(source_spec(f.source, f.label) for f in frames)
    with cluster_client(cluster) as client:
        by_host = local_threads_by_host(client)
        header = header_for(_worker_description(client, backend, threads, by_host))
        _cluster_header(header, client)
        params = frame_params(frames, opts, wcs_list)
        clip = clip_variance_factors(opts, params)
        exptimes = np.nan_to_num(np.array([exposure_seconds(f.header) for f in frames],
                                          np.float32))
        # The in-process run resamples with as many threads as its CPU backend has, and plans
        # its tiles' memory for that many frame regions: plan (and resample) with the same.
        workers = max(1, threads or available_cpus())
        tiles = stack_tile_plan(frames, grid.shape, opts, workers, max_tile_rows)
        shapes = tuple((f.label, tuple(f.shape)) for f in frames)
        recipe = {"kind": "stack", "sources": [repr(s) for s in specs],
                  "options": repr(replace(opts, mem_limit=None)), "scale": params.scale,
                  "zero": params.zero, "weights": np.asarray(params.weights),
                  "backend": backend, "exptimes": exptimes, "interp": interp,
                  "conserve_flux": bool(conserve_flux), "step": step,
                  "grid": [grid.wcs.to_header_string(relax=True), list(grid.shape)],
                  "wcs": [w.to_header_string(relax=True) for w in wcs_list]}

        def make_writer(partial):
            return FitsTileWriter(
                output, grid.shape, header, max_count=len(frames), overwrite=overwrite,
                extras={"EXPMAP": fits.Header([("BUNIT", "s", "exposure time per pixel")])},
                count_comment="frames covering the pixel", partial=partial)

        wcs_texts = tuple(frame_wcs_text(f, w) for f, w in zip(frames, wcs_list))
        grid_text = grid_wcs_text(grid.wcs, grid.shape)

        def make_job(token, out_spec):
            return StackJob(token, specs, opts, params, backend, out_spec, threads, by_host,
                            clip=clip, frames=shapes, wcs_list=wcs_texts, grid_wcs=grid_text,
                            grid_shape=tuple(grid.shape),
                            exptimes=exptimes, interp=interp, conserve_flux=conserve_flux,
                            step=step, workers=workers)

        files = [p for s in specs for p in spec_files(s)]
        return _run(client, "stack", output, tiles, recipe, files, make_writer, make_job,
                    progress)


def _open_output(output, recipe, files, make_writer):
    """The writer on ``<output>.partial``, the journal, the fingerprint and the journaled tiles
    (an empty list when starting afresh)."""
    partial, journal_path = journal_paths(output)
    existed = os.path.exists(partial)
    writer = make_writer(partial)  # keeps the data areas of an existing partial file
    try:
        fp = fingerprint({**recipe, "shape": list(writer.shape),
                          "planes": writer.plane_layout()}, files)
        journal = Journal(journal_path, fp)
        journaled = journal.load() if existed else None
        if journaled is None:
            if existed or os.path.exists(journal_path):
                log.info("cluster: %s is from other inputs or options: starting afresh",
                         partial)
                writer.release()
                os.unlink(partial)
                writer = make_writer(partial)
            journaled = []
        journal.open(fresh=not journaled)
    except BaseException:
        writer.abort()
        raise
    return writer, journal, fp, journaled


def _run(client, kind, output, tiles, recipe, files, make_writer, make_job,
         progress) -> ClusterStats:
    """The run, holding the output's lock (:mod:`skystack.io.lock`): another run writing the
    same ``<output>.partial`` would mix its tiles in. An in-process run's unique temporaries
    left beside it are removed; the fixed partial file and journal are resumed or discarded
    by :func:`_open_output`."""
    path = os.path.abspath(os.fspath(output))
    with output_lock(path):
        remove_leftovers(os.path.dirname(path), temporary_pattern(os.path.basename(path)).match)
        return _run_locked(client, kind, output, tiles, recipe, files, make_writer, make_job,
                           progress)


def _run_locked(client, kind, output, tiles, recipe, files, make_writer, make_job,
                progress) -> ClusterStats:
    distributed = require_distributed()
    t0 = time.perf_counter()
    path = os.fspath(output)
    writer, journal, fp, journaled = _open_output(os.path.abspath(path), recipe, files,
                                                  make_writer)
    done = done_tiles(tiles, journaled, writer.shape[1])
    token = f"{fp[:12]}-{uuid.uuid4().hex[:8]}"
    out_spec = OutputSpec(os.path.abspath(writer.tmp_path), tuple(writer.shape),
                          tuple(writer.plane_layout()), tuple(writer.extra_names))
    job = make_job(token, out_spec)
    n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
    todo = [(i, t) for i, t in enumerate(tiles) if i not in done]
    log.info("cluster %s: %d tiles, %d already written (%s), %d submitted to %d workers",
             kind, len(tiles), len(done), journal.path, len(todo), n_workers)
    stats = ClusterStats(path, len(tiles), len(done), len(todo), n_workers, 0.0)
    futures: list = []
    job_future = None
    finished = False
    try:
        job_future = client.submit(identity, job, key=f"skystack-{kind}-job-{token}",
                                   pure=False)
        futures = [client.submit(run_tile, job_future, t, key=f"skystack-{kind}-{token}-{i}",
                                 retries=TASK_RETRIES, pure=False) for i, t in todo]
        count = len(done)
        for _, result in distributed.as_completed(futures, with_results=True):
            journal.record(result.tile, result.crc)
            stats.results.append(result)
            count += 1
            if progress is not None:
                progress(count, len(tiles))
        if count != len(tiles):  # pragma: no cover - as_completed yields every future
            raise SkystackError(f"{output}: {len(tiles) - count} tiles missing")
        finished = True
    except distributed.KilledWorker:
        raise SkystackError(
            f"{output}: workers died repeatedly while running a tile (out of memory? try a "
            "smaller --mem-limit); the same command resumes the run") from None
    finally:
        try:
            client.cancel([f for f in [*futures, job_future] if f is not None])
            # Workers close the job's files now rather than when their cache evicts it.
            client.run(release_job, token, on_error="ignore")
        except Exception as exc:  # a lost connection must not hide the run's own outcome
            log.debug("cluster: cleaning up after the run failed: %s", exc)
        if not finished:
            journal.close()
            writer.release()
            log.warning("partial output kept in %s (%d of %d tiles, journal %s): the same "
                        "command resumes it", writer.tmp_path, len(stats.results) + len(done),
                        len(tiles), journal.path)
    writer.commit()
    journal.remove()
    stats.seconds = time.perf_counter() - t0
    return stats
