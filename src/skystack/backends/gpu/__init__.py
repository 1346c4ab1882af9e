"""The GPU backend's probe: whether a usable CUDA GPU and CuPy are present, and if not, why.

The CuPy kernels themselves are the GPU issue's work; until they land, :func:`probe` reports that
this version has none, so ``--backend gpu`` fails with that reason and ``auto`` uses the CPU.
"""

from __future__ import annotations

GPU_KERNELS_AVAILABLE = False


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
        return False, "this version of skystack has no GPU kernels yet"
    return True, f"{count} CUDA device(s)"
