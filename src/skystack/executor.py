"""Where a product is computed: in this process, or tile by tile on a Dask cluster.

The public functions (:func:`skystack.combine_to_file`,
:func:`skystack.api_reproject.stack_to_file`, and through them ``skystack night``) check their
inputs and options, then hand the product to one executor, chosen once by :func:`executor_for`
from their ``cluster=`` keyword:

* :class:`InProcess` binds the backend, builds the header with its description and runs the
  combine or stack into the output file (and any in-memory sinks) here
  (:func:`skystack.pipeline.combine_frames`, :func:`skystack.stacking.stack_frames`);
* :class:`OnCluster` runs it on the cluster's workers (:mod:`skystack.cluster.driver`): the
  header names the workers' backend, the tiles are journaled and the run resumable.

Both take the same arguments and return a :class:`Product`; the header is built by the
caller's ``header_for(backend_description)``, so that the in-process and the cluster product
differ only in ``SKYSBKND`` and ``SKYSDASK``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from astropy.io import fits

from .backends import bind_backend
from .io.writer import FitsTileWriter, committed
from .pipeline import combine_frames
from .stacking import stack_frames

__all__ = ["Product", "Executor", "InProcess", "OnCluster", "executor_for"]

HeaderFor = Callable[[str], fits.Header]


@dataclass
class Product:
    """What an executor made: the output ``path`` (None when only in-memory sinks were
    filled) and the product's ``header``."""

    path: str | None
    header: fits.Header


class Executor:
    """The interface of :class:`InProcess` and :class:`OnCluster` (module docstring).

    ``frames`` are loaded and checked, ``opts`` validated with their uncertainty resolved;
    ``header_for(description)`` builds the product's header from the backend's description;
    ``backend`` is a name for :func:`skystack.backends.get_backend` (or, in process, a Backend);
    ``sinks`` are further :class:`~skystack.io.contracts.TileSink` objects (in process only)."""

    def combine(self, frames: list, opts, output, *, header_for: HeaderFor, backend="auto",
                overwrite: bool = False, progress=None, threads: int | None = None,
                max_tile_rows: int | None = None, sinks: Sequence = ()) -> Product:
        raise NotImplementedError

    def stack(self, frames: list, wcs_list: list, grid, opts, output, *,
              header_for: HeaderFor, interp: str = "bilinear", conserve_flux: bool = False,
              backend="auto", overwrite: bool = False, progress=None,
              threads: int | None = None, max_tile_rows: int | None = None,
              sinks: Sequence = (), drizzle=None) -> Product:
        raise NotImplementedError


class InProcess(Executor):
    """Runs the product here, on the backend bound for it (closed at the end)."""

    def combine(self, frames, opts, output, *, header_for, backend="auto", overwrite=False,
                progress=None, threads=None, max_tile_rows=None, sinks=()) -> Product:
        engine = bind_backend(backend, threads)
        try:
            header = header_for(engine.describe())
            writer = None
            if output is not None:
                writer = FitsTileWriter(output, frames[0].shape, header, max_count=len(frames),
                                        overwrite=overwrite)
            with committed(writer):
                combine_frames(frames, opts, engine, [*sinks, *([writer] if writer else [])],
                               progress=progress, max_tile_rows=max_tile_rows)
        finally:
            engine.close()
        return Product(writer.path if writer is not None else None, header)

    def stack(self, frames, wcs_list, grid, opts, output, *, header_for, interp="bilinear",
              conserve_flux=False, backend="auto", overwrite=False, progress=None,
              threads=None, max_tile_rows=None, sinks=(), drizzle=None) -> Product:
        engine = bind_backend(backend, threads)
        try:
            header = header_for(engine.describe())
            writer = None
            if output is not None:
                expmap = fits.Header([("BUNIT", "s", "exposure time per pixel")])
                if drizzle is not None:  # EXPMAP is drizzle's weight map (skystack.drizzling)
                    from .drizzling import expmap_header

                    expmap = expmap_header(opts.weights.kind)
                writer = FitsTileWriter(
                    output, grid.shape, header, max_count=len(frames), overwrite=overwrite,
                    extras={"EXPMAP": expmap}, count_comment="frames covering the pixel")
            with committed(writer):
                stack_frames(frames, grid, opts, engine, [*sinks, *([writer] if writer else [])],
                             interp=interp, conserve_flux=conserve_flux, progress=progress,
                             max_tile_rows=max_tile_rows,
                             workers=getattr(engine, "threads", 2), wcs_list=wcs_list,
                             drizzle=drizzle)
        finally:
            engine.close()
        return Product(os.fspath(output) if output is not None else None, header)


class OnCluster(Executor):
    """Runs the product's tiles on a Dask cluster (:mod:`skystack.cluster.driver`).

    ``cluster`` is a ``distributed.Client``, a scheduler address or a number of local worker
    processes; ``dask.distributed`` must be installed (a one-line error says so at once)."""

    def __init__(self, cluster) -> None:
        from .cluster.connect import require_distributed

        require_distributed()
        self.cluster = cluster

    @staticmethod
    def _no_sinks(sinks) -> None:
        if sinks:
            raise ValueError("a cluster run writes its output file only (no in-memory sinks)")

    def combine(self, frames, opts, output, *, header_for, backend="auto", overwrite=False,
                progress=None, threads=None, max_tile_rows=None, sinks=()) -> Product:
        from .cluster import driver

        self._no_sinks(sinks)
        made: list[fits.Header] = []
        stats = driver.combine_on_cluster(
            frames, opts, output, cluster=self.cluster, header_for=_keep(header_for, made),
            backend=backend, overwrite=overwrite, progress=progress, threads=threads,
            max_tile_rows=max_tile_rows)
        return Product(stats.path, made[-1])

    def stack(self, frames, wcs_list, grid, opts, output, *, header_for, interp="bilinear",
              conserve_flux=False, backend="auto", overwrite=False, progress=None,
              threads=None, max_tile_rows=None, sinks=(), drizzle=None) -> Product:
        from .cluster import driver

        self._no_sinks(sinks)
        if drizzle is not None:
            from .errors import SkystackError

            raise SkystackError("--interp drizzle runs in this process: drop "
                                "--workers/--scheduler")
        made: list[fits.Header] = []
        stats = driver.stack_on_cluster(
            frames, wcs_list, grid, opts, output, cluster=self.cluster,
            header_for=_keep(header_for, made), interp=interp, conserve_flux=conserve_flux,
            backend=backend, overwrite=overwrite, progress=progress, threads=threads,
            max_tile_rows=max_tile_rows)
        return Product(stats.path, made[-1])


def _keep(header_for: HeaderFor, made: list) -> HeaderFor:
    """``header_for`` that also keeps the header it made (the driver completes it in place)."""
    def build(description: str) -> fits.Header:
        made.append(header_for(description))
        return made[-1]

    return build


def executor_for(cluster=None) -> Executor:
    """:class:`InProcess` when ``cluster`` is None, else :class:`OnCluster` on it."""
    return InProcess() if cluster is None else OnCluster(cluster)
