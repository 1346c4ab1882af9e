"""Backend selection: ``get_backend("auto" | "cpu" | "gpu")``, chosen once per run.

``auto`` takes the GPU when :func:`skystack.backends.gpu.probe` finds it usable and otherwise
the CPU, logging why; an explicit ``gpu`` that cannot run raises :class:`BackendUnavailable`
(exit code 2 on the command line) rather than silently running on the CPU.
"""

from __future__ import annotations

import logging

from ..config import check_threads
from ..errors import BackendUnavailable, SkystackError
from .base import Backend, FrameParams, TileOutputs

__all__ = ["Backend", "FrameParams", "TileOutputs", "get_backend", "bind_backend"]

log = logging.getLogger("skystack")


def get_backend(name: str = "auto", *, threads: int | None = None) -> Backend:
    """Return a ready backend for ``name`` (see module docstring)."""
    from . import gpu

    if name not in ("auto", "cpu", "gpu"):
        raise SkystackError(f"invalid --backend {name!r}: choose from auto, cpu, gpu")
    check_threads(threads)
    if name in ("auto", "gpu"):
        usable, reason = gpu.probe()
        if name == "gpu" and not usable:
            raise BackendUnavailable(f"--backend gpu is not usable here: {reason}")
        if name == "auto" and not usable:
            log.info("backend auto: using the CPU because %s", reason)
        if usable:
            try:
                return gpu.create_backend()
            except Exception as exc:  # e.g. NVRTC missing or failing on this driver
                if name == "gpu":
                    raise BackendUnavailable(f"--backend gpu failed to start: {exc}") from None
                log.warning("backend auto: GPU failed to start (%s); using the CPU", exc)
    from .cpu import CpuBackend

    return CpuBackend(threads=threads)


def bind_backend(backend: str | Backend, threads: int | None = None) -> Backend:
    """The engine for a run: a name for :func:`get_backend`, or a Backend instance (benchmarks,
    embedding applications, the tests' stand-in GPU) used as given."""
    return get_backend(backend, threads=threads) if isinstance(backend, str) else backend
