"""Connecting to a Dask cluster: ``--scheduler ADDRESS`` or ``--workers N`` (a local one).

``dask.distributed`` is imported only here and only when a cluster is asked for, so skystack
without the ``cluster`` extra runs in-process as before and says in one line what to install
when ``--scheduler``/``--workers`` is used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from ..errors import SkystackError

__all__ = ["require_distributed", "cluster_client", "local_threads_by_host"]

log = logging.getLogger("skystack")

INSTALL_HINT = "pip install 'skystack[cluster]'"


def require_distributed():
    """The ``distributed`` module, or a one-line :class:`SkystackError` saying what to install."""
    try:
        import distributed
    except ImportError:
        raise SkystackError(
            f"--scheduler/--workers need dask.distributed, which is not installed: "
            f"{INSTALL_HINT}") from None
    return distributed


def _is_client(obj) -> bool:
    return type(obj).__name__ == "Client" and hasattr(obj, "submit")


@contextmanager
def cluster_client(cluster) -> Iterator[object]:
    """A ``distributed.Client`` for ``cluster``, closed at the end if opened here.

    ``cluster`` is a ``Client`` (used as given, left open), a scheduler address such as
    ``"tcp://host:8786"``, or a number of local worker processes: a
    ``LocalCluster(n_workers=N, threads_per_worker=1, processes=True)`` started here and shut
    down at the end. Its workers have no memory limit of their own (skystack's tile plan bounds
    each task's memory, ``--mem-limit``); its dashboard is on a free port.
    """
    if _is_client(cluster):
        yield cluster
        return
    distributed = require_distributed()
    quiet = _quiet_distributed() if not log.isEnabledFor(logging.DEBUG) else nullcontext()
    with quiet:
        yield from _open(distributed, cluster)


@contextmanager
def _quiet_distributed() -> Iterator[None]:
    """distributed logs every scheduler and worker event at INFO; a run we start shows only
    its warnings (``-v`` shows everything)."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _open(distributed, cluster) -> Iterator[object]:
    if isinstance(cluster, bool) or not isinstance(cluster, (int, str)):
        raise SkystackError(f"cluster must be a dask Client, a scheduler address or a number "
                            f"of local workers, not {type(cluster).__name__}")
    if isinstance(cluster, int):
        if cluster < 1:
            raise SkystackError(f"invalid --workers {cluster}: must be at least 1")
        local = distributed.LocalCluster(n_workers=cluster, threads_per_worker=1,
                                          processes=True, dashboard_address=":0",
                                          memory_limit=0, silence_logs=logging.ERROR)
        try:
            client = distributed.Client(local)
        except BaseException:
            local.close()
            raise
        try:
            yield client
        finally:
            client.close()
            local.close()
        return
    try:
        client = distributed.Client(cluster, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise SkystackError(f"cannot reach the dask scheduler at {cluster} ({exc})") from None
    try:
        yield client
    finally:
        client.close()


def local_threads_by_host(client) -> dict[str, int]:
    """CPU threads each tile task may use, per worker host: the host's cores shared among the
    task slots (worker processes x threads) the cluster runs there now.

    Cores are counted here, on the client: right for a local cluster; for remote hosts the
    worker falls back to its own cores divided by its thread count (see
    :func:`skystack.cluster.tasks.task_threads`).
    """
    from ..backends.cpu import available_cpus

    slots: dict[str, int] = {}
    for addr, info in client.scheduler_info(n_workers=-1)["workers"].items():
        host = info.get("host") or addr.rsplit(":", 1)[0]
        slots[host] = slots.get(host, 0) + int(info.get("nthreads", 1))
    here = {"127.0.0.1", "localhost", os.uname().nodename}
    return {h: max(1, available_cpus() // n) for h, n in slots.items() if h in here}
