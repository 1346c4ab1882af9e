"""The GPU backend (CuPy + the CUDA kernels in ``kernels/``) and its probe.

:func:`probe` says whether a usable CUDA GPU and CuPy are present, and if not, why; nothing here
imports CuPy at module import, so CPU-only machines never need it.
"""

from __future__ import annotations

GPU_KERNELS_AVAILABLE = True


def probe() -> tuple[bool, str]:
    """``(usable, reason)``: reason says what is missing when the GPU cannot be used."""
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install 'skystack[gpu]')"
    except Exception as exc:  # a broken CUDA installation raises all sorts at import
        return False, f"CuPy failed to import ({exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no CUDA device found ({exc})"
    if count < 1:
        return False, "no CUDA device found"
    if not GPU_KERNELS_AVAILABLE:
        return False, "this version of skystack has no GPU kernels"
    return True, f"{count} CUDA device(s)"


def create_backend():
    """A ready :class:`~.backend.GpuBackend` on device 0 (compiles kernels on first use)."""
    from .backend import GpuBackend

    return GpuBackend()
