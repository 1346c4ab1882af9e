"""The CUDA sources of the GPU backend: where they live, which kernel a combine uses, and the
single translation unit that both CuPy (NVRTC, at run time) and CI (nvcc) compile.

Nothing here imports CuPy, so the choice of kernels and the assembled source are tested on
machines without a GPU.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ...config import CombineOptions
from ...errors import SkystackError
from ...networks import GPU_REGISTER_SIZES

__all__ = ["KernelChoice", "kernels_dir", "assemble_source", "choose_combine_kernel",
           "all_name_expressions", "name_expressions", "source_of", "reproject_kernel_name",
           "SOURCES", "MAX_GPU_FRAMES", "THREADS_PER_BLOCK"]

# The warp kernel holds 32 * ITEMS values per pixel; 64 items per lane is the register limit.
WARP_ITEMS = (4, 8, 16, 32, 64)
# The 64-item warp kernel has no registers to spare for ccdclip (kernels/sk_reject_stat.cuh).
CCDCLIP_MAX_GPU_FRAMES = 32 * 32
MAX_GPU_FRAMES = 32 * WARP_ITEMS[-1]
THREADS_PER_BLOCK = 128
# The translation units of the backend: each is assembled and compiled on its own.
SOURCES = ("combine.cu", "reproject.cu")
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.MULTILINE)


def kernels_dir() -> Path:
    """The folder holding ``combine.cu`` and its headers (in the wheel, or the source tree)."""
    here = Path(__file__).resolve()
    installed = here.parents[2] / "kernels"  # site-packages/skystack/kernels
    if (installed / "combine.cu").is_file():
        return installed
    checkout = here.parents[4] / "kernels"  # <repo>/src/skystack/backends/gpu -> <repo>/kernels
    if (checkout / "combine.cu").is_file():
        return checkout
    raise SkystackError(f"CUDA sources not found (looked in {installed} and {checkout})")


@cache
def assemble_source(name: str = "combine.cu") -> str:
    """``name`` with its local ``#include "..."`` headers inlined, each once.

    One self-contained string: NVRTC needs no include paths, and CuPy's on-disk cache (keyed on the
    source text) is invalidated whenever any header changes.
    """
    root = kernels_dir()
    seen: set[str] = set()

    def expand(fname: str) -> str:
        if fname in seen:
            return ""
        seen.add(fname)
        path = root / fname
        if not path.is_file():
            raise SkystackError(f"CUDA source {path} is missing")
        text = path.read_text()
        text = text.replace("#pragma once", "")
        return _INCLUDE.sub(lambda m: expand(m.group(1)), text)

    return f"// assembled from {name} by skystack.backends.gpu.kernels\n" + expand(name)


@dataclass(frozen=True)
class KernelChoice:
    """One combine kernel and how to launch it."""

    name: str            # the name expression, e.g. "combine_small<16>"
    pixels_per_block: int
    threads_per_block: int
    shared_bytes: int = 0


def _needs_order_statistics(options: CombineOptions) -> bool:
    # Every rejection but range works on sorted values.
    return options.method == "median" or options.reject not in ("none", "range")


def _small(size: int) -> KernelChoice:
    return KernelChoice(f"combine_small<{size}>", THREADS_PER_BLOCK, THREADS_PER_BLOCK)


def _warp(items: int) -> KernelChoice:
    warps = 8 if items <= 32 else 4
    return KernelChoice(f"combine_warp<{items}, {int(math.log2(items))}, {warps}>", warps,
                        32 * warps, warps * (32 * items + 8) * 4)


# Values per lane of the widest warp kernel that runs winsor and linfit (kernels/combine.cu).
_ITERATIVE_SIRIL_ITEMS = 32


def choose_combine_kernel(n_frames: int, options: CombineOptions) -> KernelChoice:
    """The kernel for combining ``n_frames`` values per pixel with ``options``.

    Mean, sum, min and max without rank or sigma rejection stream through one pass; everything
    else sorts: in one thread's registers up to 64 frames, across a warp up to 2048.
    """
    if not _needs_order_statistics(options):
        return KernelChoice("combine_accumulate", THREADS_PER_BLOCK, THREADS_PER_BLOCK)
    for size in GPU_REGISTER_SIZES:
        if n_frames <= size:
            return _small(size)
    if options.reject == "ccdclip" and n_frames > CCDCLIP_MAX_GPU_FRAMES:
        raise SkystackError(f"the GPU backend clips at most {CCDCLIP_MAX_GPU_FRAMES} frames per "
                            f"pixel with --reject ccdclip (got {n_frames}); use --backend cpu")
    for items in WARP_ITEMS:
        if n_frames <= 32 * items:
            if items > _ITERATIVE_SIRIL_ITEMS and options.reject in ("winsor", "linfit"):
                # kernels/combine.cu compiles them out of the widest kernel (RunsIterativeSiril).
                raise SkystackError(
                    f"the GPU backend runs --reject {options.reject} on at most "
                    f"{32 * _ITERATIVE_SIRIL_ITEMS} frames per pixel (got {n_frames}); "
                    "use --backend cpu")
            return _warp(items)
    raise SkystackError(f"the GPU backend sorts at most {MAX_GPU_FRAMES} frames per pixel for "
                        f"{options.method}/{options.reject} (got {n_frames}); use --backend cpu")


# The INTERP codes of kernels/sk_resample.cuh (enum Interp), by regrid.interp method name.
INTERP_CODES = {"bilinear": 0, "nearest": 1, "lanczos3": 2, "lanczos4": 3}


def reproject_kernel_name(interp: str | bool, conserve_flux: bool) -> str:
    """The ``reproject_tile`` instantiation for an interpolation (a method name; a bool means
    nearest or not, as before the Lanczos kernels) and flux conservation."""
    if isinstance(interp, bool):
        interp = "nearest" if interp else "bilinear"
    return f"reproject_tile<{INTERP_CODES[interp]}, {int(bool(conserve_flux))}>"


def name_expressions(source: str) -> list[str]:
    """Every kernel of one translation unit of :data:`SOURCES` that the backend may launch."""
    if source == "combine.cu":
        return (["decode_frames", "combine_accumulate"]
                + [_small(s).name for s in GPU_REGISTER_SIZES]
                + [_warp(i).name for i in WARP_ITEMS])
    if source == "reproject.cu":
        return ([reproject_kernel_name(interp, flux) for interp in INTERP_CODES
                 for flux in (False, True)] + ["coverage_expmap"])
    raise SkystackError(f"unknown CUDA source {source!r}")


def all_name_expressions() -> list[str]:
    """Every kernel the backend may launch (CuPy instantiates these; CI compiles them all)."""
    return [name for source in SOURCES for name in name_expressions(source)]


def source_of(name: str) -> str:
    """The translation unit that defines kernel ``name`` (a name expression)."""
    for source in SOURCES:
        if name in name_expressions(source):
            return source
    raise SkystackError(f"unknown kernel {name!r}")


def instantiation_unit(source: str = "combine.cu") -> str:
    """The assembled ``source`` plus references that make nvcc instantiate every template
    kernel it defines."""
    refs = ",\n    ".join(f"(void*)&{name}" for name in name_expressions(source))
    return assemble_source(source) + f"\nvoid* skystack_all_kernels[] = {{\n    {refs}}};\n"

