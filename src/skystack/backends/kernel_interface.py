"""The interface of the combine kernels, defined once for the CPU (Numba) and GPU (CUDA) backends.

A combine kernel is given a frame-major block of values, the frames' scale, zero and weights, its
outputs, and one record of run-time options (:data:`PARAMS_DTYPE`, built from
:class:`~skystack.config.CombineOptions` by :func:`kernel_params`). Both backends read the record
by field name: the Numba kernels as a numba ``Record`` of this dtype, the CUDA kernels as
``sk::CombineParams``, the C struct of ``kernels/sk_params.cuh``. That header, with the
:class:`Method` and :class:`Reject` codes as C enums, is generated from this module
(``python -m skystack.backends.kernel_interface kernels/sk_params.cuh``) and checked in; a test
fails when it is stale, and another compiles it for the host and compares the size and every
field's offset with this dtype.

The dtype is built with ``align=True``: each field at a multiple of its own alignment and the
record padded to its largest one, which is how a C compiler lays out the struct. So the record's
bytes are the struct's bytes, and CuPy passes them to a kernel by value (a NumPy array of size one
is passed by value: the driver copies ``sizeof(CombineParams)`` bytes from its data).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from ..config import CombineOptions

__all__ = ["Method", "Reject", "PARAMS_DTYPE", "kernel_params", "cuda_header"]


class Method(IntEnum):
    """How the kept values of a pixel are combined (``--method``)."""

    MEAN = 0
    SUM = 1
    MEDIAN = 2
    MIN = 3
    MAX = 4


class Reject(IntEnum):
    """Which values of a pixel are rejected before combining (``--reject``)."""

    NONE = 0
    SIGCLIP = 1
    MINMAX = 2
    RANGE = 3
    PERCENTILE = 4
    WINSOR = 5
    LINFIT = 6
    ESD = 7
    CCDCLIP = 8
    PCLIP = 9
    PCTCLIP = 10


# Names of the Reject codes in C, where NONE alone would be too generic.
_C_REJECT_PREFIX = "REJ_"

# The fields of the record, in order: (name, type, what it means). Flags are int32 (0 or 1), as in
# C, rather than bool, whose size C++ does not fix.
_FIELDS: tuple[tuple[str, type, str], ...] = (
    ("method", np.int32, "Method"),
    ("reject", np.int32, "Reject"),
    ("weighted", np.int32, "weighted mean / sum (order-statistics path re-reads frames)"),
    ("use_range", np.int32, "reject raw values outside [range_lo, range_hi]"),
    ("range_lo", np.float32, "raw values, inclusive; -inf / +inf where not given"),
    ("range_hi", np.float32, ""),
    ("use_median", np.int32, "sigclip centre: median (else mean)"),
    ("use_mad", np.int32, "sigclip spread: MAD (else std, ddof = 0)"),
    ("sigma_lo", np.float64, "sigclip bounds, in units of the spread"),
    ("sigma_hi", np.float64, ""),
    ("maxiters", np.int32, "< 0: iterate until nothing changes"),
    ("nlow", np.int32, "minmax: values dropped at each end"),
    ("nhigh", np.int32, ""),
    ("plow", np.float64, "percentile: percent of the valid values dropped at each end"),
    ("phigh", np.float64, ""),
    ("pctclip_lo", np.float64, "pctclip: largest relative distance below the median kept"),
    ("pctclip_hi", np.float64, "pctclip: largest relative distance above the median kept"),
    ("esd_alpha", np.float64, "esd: significance of the generalized ESD test"),
    ("esd_max_frac", np.float64, "esd: most outliers, a fraction of the valid values"),
    ("gain", np.float64, "ccdclip: e-/ADU of the raw (unscaled) values"),
    ("rdnoise", np.float64, "ccdclip: read noise, e-"),
    ("snoise", np.float64, "ccdclip: sensitivity noise, a fraction of the signal"),
    ("pclip", np.float64, "pclip: percentile pixel, a fraction (|p| < 1) or number of values"),
)

#: The record of run-time options every combine kernel reads (``sk::CombineParams`` in C).
PARAMS_DTYPE = np.dtype([(name, kind) for name, kind, _ in _FIELDS], align=True)

_C_TYPES = {np.dtype(np.int32): "int", np.dtype(np.float32): "float",
            np.dtype(np.float64): "double"}

def kernel_params(options: CombineOptions) -> np.ndarray:
    """The kernels' record of ``options``: a 0-d array of :data:`PARAMS_DTYPE`.

    Pass ``record[()]`` (a ``numpy.void``) to a Numba kernel and the array itself (size one, so
    passed by value) to a CUDA kernel. ``maxiters = 0`` (iterate until nothing changes) becomes
    -1; an open range end becomes -inf / +inf (float32, the raw pixels' type).
    """
    rec = np.zeros((), PARAMS_DTYPE)
    rec["method"] = Method[options.method.upper()]
    rec["reject"] = Reject[options.reject.upper()]
    rec["weighted"] = options.weighted
    rec["use_range"] = options.reject == "range"
    rec["range_lo"] = -np.inf if options.range_low is None else options.range_low
    rec["range_hi"] = np.inf if options.range_high is None else options.range_high
    rec["use_median"] = options.center == "median"
    rec["use_mad"] = options.spread == "mad"
    rec["sigma_lo"] = options.sigma_low
    rec["sigma_hi"] = options.sigma_high
    rec["maxiters"] = options.maxiters if options.maxiters > 0 else -1
    rec["nlow"] = options.nlow
    rec["nhigh"] = options.nhigh
    rec["plow"] = options.plow
    rec["phigh"] = options.phigh
    rec["pctclip_lo"] = options.pctclip_low
    rec["pctclip_hi"] = options.pctclip_high
    rec["esd_alpha"] = options.esd_alpha
    rec["esd_max_frac"] = options.esd_max_frac
    # Unresolved (no ccdclip): NaN, never read by the kernels.
    rec["gain"] = np.nan if options.gain is None else options.gain
    rec["rdnoise"] = np.nan if options.rdnoise is None else options.rdnoise
    rec["snoise"] = options.snoise
    rec["pclip"] = options.pclip
    return rec


def _c_enum(name: str, members, prefix: str = "") -> str:
    body = ", ".join(f"{prefix}{m.name} = {int(m)}" for m in members)
    return f"enum {name} {{ {body} }};"


def cuda_header() -> str:
    """C++ source of ``kernels/sk_params.cuh``: the codes and ``sk::CombineParams``.

    The header also asserts, at compile time, the struct's size and every field's offset as
    NumPy lays out :data:`PARAMS_DTYPE`, so a compiler that lays it out otherwise stops.
    """
    cmd = "python -m skystack.backends.kernel_interface kernels/sk_params.cuh"
    width = max(len(f"{_C_TYPES[PARAMS_DTYPE[n]]} {n};") for n in PARAMS_DTYPE.names)
    lines = [
        f"// GENERATED by `{cmd}`: do not edit.",
        "// The combine kernels' codes and run-time options, from skystack/backends/",
        "// kernel_interface.py; the CPU backend's Numba kernels read the same record by name.",
        "// Plain C++ (no headers), so that NVRTC, nvcc and host compilers all take it.",
        "#pragma once",
        "",
        "namespace sk {",
        "",
        _c_enum("Method", Method),
        _c_enum("Reject", Reject, _C_REJECT_PREFIX),
        "",
        "// How to combine: the run-time options of one combine (CombineOptions, config.py),",
        "// passed to every combine kernel by value.",
        "struct CombineParams {",
    ]
    for name, _, comment in _FIELDS:
        decl = f"{_C_TYPES[PARAMS_DTYPE[name]]} {name};"
        lines.append(f"  {decl:<{width}}  // {comment}" if comment else f"  {decl}")
    lines += [
        "};",
        "",
        "// The layout of numpy.dtype(..., align=True): the bytes Python passes are this struct.",
        f"static_assert(sizeof(CombineParams) == {PARAMS_DTYPE.itemsize}, "
        '"CombineParams differs from PARAMS_DTYPE");',
    ]
    # NVRTC has no offsetof (no <stddef.h>, no __builtin_offsetof); nvcc and host compilers,
    # which lay out the struct by the same ABI, check the offsets.
    lines.append("#if !defined(__CUDACC_RTC__)")
    for name in PARAMS_DTYPE.names:
        offset = PARAMS_DTYPE.fields[name][1]
        lines.append(f"static_assert(__builtin_offsetof(CombineParams, {name}) == {offset}, "
                     f'"CombineParams::{name} is not at offset {offset}");')
    lines += ["#endif", "", "}  // namespace sk"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from ..generated import write_generated_header

    write_generated_header(cuda_header, "skystack.backends.kernel_interface")
