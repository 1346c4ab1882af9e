"""Running ``combine``, ``stack`` and ``night`` on a Dask cluster (``--scheduler``/``--workers``).

The unit of work is the output tile, as in-process: each task reads its band of every input
from storage all workers can see, combines it with the worker's backend (CPU, or the worker's
GPU under ``dask-cuda``) and writes it into the preallocated output file by offset; only small
records pass through the client and the scheduler. A run that stops keeps
``<output>.partial`` and ``<output>.journal``; the same command resumes it.

Modules: :mod:`.connect` (client / local cluster, lazy import of ``distributed``),
:mod:`.specs` (sources reopened by path), :mod:`.jobs` (what a product's tasks need),
:mod:`.tasks` (worker side), :mod:`.output` (a tile into the shared file), :mod:`.journal`
(restart), :mod:`.wcs_transport` (WCS sent exactly), :mod:`.driver` (client side). Nothing
here imports ``dask`` until a cluster run starts.
"""

from __future__ import annotations

__all__ = ["combine_on_cluster", "stack_on_cluster", "cluster_client"]


def __getattr__(name: str):
    # Lazy: importing skystack.cluster must not need dask (the `cluster` extra).
    if name in ("combine_on_cluster", "stack_on_cluster"):
        from . import driver

        return getattr(driver, name)
    if name == "cluster_client":
        from .connect import cluster_client

        return cluster_client
    raise AttributeError(name)
