"""The combine kernels' interface (skystack/backends/kernel_interface.py), defined once: the
generated C header is current, the C struct has the NumPy record's layout, the record follows the
options, and every GPU kernel launch passes what the kernel's C signature declares (checked without
a GPU, on the NumPy stand-in device's runs of the real tile loops)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import skystack
from skystack.backends.gpu.device import CupyDevice
from skystack.backends.gpu.kernels import SOURCES, assemble_source, kernels_dir
from skystack.backends.kernel_interface import (
    PARAMS_DTYPE,
    Method,
    Reject,
    cuda_header,
    kernel_params,
)
from skystack.config import METHODS, REJECTIONS
from skystack.io.inputs import load_frames
from skystack.pipeline import ArraySink, combine_frames
from tests.fake_device import FakeDevice, FakeGpuBackend
from tests.reference import make_stack


def test_params_header_is_generated_from_kernel_interface():
    committed = (kernels_dir() / "sk_params.cuh").read_text()
    assert committed == cuda_header(), (
        "kernels/sk_params.cuh is stale: run "
        "python -m skystack.backends.kernel_interface kernels/sk_params.cuh")


def test_codes_cover_every_option():
    assert sorted(m.name.lower() for m in Method) == sorted(METHODS)
    assert sorted(r.name.lower() for r in Reject) == sorted(REJECTIONS)


def _host_compiler() -> str:
    """A C++ compiler for host code: the system's, else nvcc (the harness's compiler)."""
    found = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if found:
        return found
    from tests.test_cuda_host import _nvcc  # skips, or fails where SKYSTACK_REQUIRE_NVCC=1

    return _nvcc()


def test_params_struct_layout_equals_the_dtype(tmp_path):
    """A host program prints sizeof and offsetof of sk::CombineParams: NumPy's layout."""
    names = PARAMS_DTYPE.names
    prints = "\n".join(f'  std::printf("{n} %zu\\n", offsetof(sk::CombineParams, {n}));'
                       for n in names)
    src = tmp_path / "layout.cpp"
    src.write_text('#include <cstddef>\n#include <cstdio>\n#include "sk_params.cuh"\n'
                   "int main() {\n"
                   '  std::printf("sizeof %zu\\n", sizeof(sk::CombineParams));\n'
                   f"{prints}\n  return 0;\n}}\n")
    exe = tmp_path / "layout"
    cxx = _host_compiler()
    lang = ["-x", "c++"] if os.path.basename(cxx) != "nvcc" else []
    proc = subprocess.run([cxx, *lang, "-std=c++17", f"-I{kernels_dir()}", str(src), "-o",
                           str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    got = dict(line.split() for line in out.splitlines())
    assert int(got.pop("sizeof")) == PARAMS_DTYPE.itemsize
    assert {n: int(v) for n, v in got.items()} == {
        n: PARAMS_DTYPE.fields[n][1] for n in names}


def test_kernel_params_follow_the_options():
    opts = skystack.combine_options(method="median", reject="sigclip", center="mean",
                                    spread="mad", sigma_low=2.5, sigma_high=4.0, maxiters=0,
                                    nlow=2, nhigh=3, plow=5.0, phigh=7.5)
    p = kernel_params(opts)
    assert p.shape == () and p.dtype == PARAMS_DTYPE
    assert (p["method"], p["reject"]) == (Method.MEDIAN, Reject.SIGCLIP)
    assert (p["use_median"], p["use_mad"], p["weighted"], p["use_range"]) == (0, 1, 0, 0)
    assert (p["sigma_lo"], p["sigma_hi"], p["maxiters"]) == (2.5, 4.0, -1)  # 0: until converged
    assert (p["nlow"], p["nhigh"], p["plow"], p["phigh"]) == (2, 3, 5.0, 7.5)
    assert p["range_lo"] == -np.inf and p["range_hi"] == np.inf

    opts = skystack.combine_options(method="sum", reject="range", high=1e5, maxiters=4,
                                    weights=[1.0, 2.0])
    p = kernel_params(opts)
    assert (p["method"], p["reject"], p["use_range"], p["weighted"]) == (
        Method.SUM, Reject.RANGE, 1, 1)
    assert p["range_lo"] == -np.inf and p["range_hi"] == np.float32(1e5)
    assert p["maxiters"] == 4 and (p["use_median"], p["use_mad"]) == (1, 0)
    # Weights change only a mean or a sum: a weighted median reads as unweighted.
    assert kernel_params(skystack.combine_options(method="median", weights=[1.0, 2.0])
                         )["weighted"] == 0


# -- every GPU launch against the kernels' C signatures --------------------------------------
_KERNEL = re.compile(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)")
_MACRO = re.compile(r"#define\s+(\w+)\s*\\\n((?:.*\\\n)*.*)")
# C parameter types -> the NumPy type passed by value, or the element type behind a pointer.
_C_SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32, "double": np.float64,
              "unsigned char": np.uint8}


def _c_params(text: str) -> list[tuple[str, bool]]:
    """(type, is pointer) of each parameter of a C parameter list."""
    params = []
    for decl in text.split(","):
        decl = re.sub(r"\b(const|__restrict__)\b", " ", decl)
        pointer = "*" in decl
        words = decl.replace("*", " ").split()
        params.append((" ".join(words[:-1]), pointer))  # the last word is the name
    return params


def kernel_signatures() -> dict[str, list[tuple[str, bool]]]:
    """Every ``__global__`` kernel of the assembled sources: its parameters' types."""
    sigs = {}
    for source in SOURCES:
        text = assemble_source(source)
        macros = {m.group(1): m.group(2).replace("\\\n", " ") for m in _MACRO.finditer(text)}
        for m in _KERNEL.finditer(text):
            params = m.group(2).strip()
            sigs[m.group(1)] = _c_params(macros.get(params, params))
    return sigs


def _check_launch(name: str, args: tuple, sigs: dict) -> None:
    params = sigs[name.split("<")[0]]
    assert len(args) == len(params), f"{name}: {len(args)} arguments for {len(params)}"
    for i, ((ctype, pointer), arg) in enumerate(zip(params, args)):
        where = f"{name} argument {i} ({ctype}{' *' if pointer else ''})"
        if pointer:  # a device array (here a NumPy array of at least one dimension)
            assert isinstance(arg, np.ndarray) and arg.ndim >= 1, where
            assert arg.dtype == np.dtype(_C_SCALARS[ctype]), f"{where}: {arg.dtype}"
        elif ctype == "sk::CombineParams":  # by value: a NumPy array of size one
            assert isinstance(arg, np.ndarray) and arg.shape == (), where
            assert arg.dtype == PARAMS_DTYPE, where
        else:
            assert type(arg) is _C_SCALARS[ctype], f"{where}: {type(arg)}"


class LaunchCheckingDevice(FakeDevice):
    """The stand-in device, whose kernels also go through :class:`CupyDevice`'s launch code
    with a recording kernel in place of CuPy's, so that the loop's real buffers are checked
    against each kernel's C signature."""

    def __init__(self) -> None:
        super().__init__()
        self.sigs = kernel_signatures()
        self.launched: list[str] = []
        cupy_like = object.__new__(CupyDevice)  # no CuPy: only the launch code is used
        cupy_like.sm_count = 4
        cupy_like.kernel = self._recording_kernel
        self.cupy_like = cupy_like

    def _recording_kernel(self, name: str):
        def launch(grid, block, args, shared_mem=0):
            _check_launch(name, args, self.sigs)
            self.launched.append(name)
        return launch

    def decode(self, staged, tables, n_frames, npix, block, stream) -> None:
        CupyDevice.decode(self.cupy_like, staged, tables, n_frames, npix, block,
                          contextlib.nullcontext())
        super().decode(staged, tables, n_frames, npix, block, stream)

    def combine(self, block, n_frames, npix, choice, options, params, outs, stream) -> None:
        CupyDevice.combine(self.cupy_like, block, n_frames, npix, choice, options, params, outs,
                           contextlib.nullcontext())
        super().combine(block, n_frames, npix, choice, options, params, outs, stream)

    def resample(self, staged, spec, block, stream) -> None:
        CupyDevice.resample(self.cupy_like, staged, spec, block, contextlib.nullcontext())
        super().resample(staged, spec, block, stream)

    def coverage(self, block, n_frames, npix, exptimes, coverage, expmap, stream) -> None:
        CupyDevice.coverage(self.cupy_like, block, n_frames, npix, exptimes, coverage, expmap,
                            contextlib.nullcontext())
        super().coverage(block, n_frames, npix, exptimes, coverage, expmap, stream)


def test_signature_parser_reads_the_combine_arguments():
    sigs = kernel_signatures()
    assert sigs["combine_small"] == sigs["combine_warp"] == sigs["combine_accumulate"]
    assert ("sk::CombineParams", False) in sigs["combine_accumulate"]
    assert sigs["coverage_expmap"] == [("float", True), ("int", False), ("long long", False),
                                       ("float", True), ("int", True), ("float", True)]
    with pytest.raises(AssertionError, match="argument 1"):
        _check_launch("coverage_expmap", (np.zeros(4, np.float32), 3, np.int64(4),
                                          np.zeros(3, np.float32), np.zeros(4, np.int32),
                                          np.zeros(4, np.float32)), sigs)


def test_every_gpu_launch_matches_its_kernel_signature(tmp_path):
    """decode and combine (files through the combine loop), resample and coverage (the stack
    loop): every argument has the type of the kernel's parameter, the options one struct."""
    from tests.test_gpu_stack import _write_frames
    from tests.test_gpu_streaming import _write_mixed_stack

    cube = make_stack(n=6, shape=(12, 17), seed=5)
    frames = load_frames(_write_mixed_stack(tmp_path, cube))
    device = LaunchCheckingDevice()
    for kw in (dict(method="mean"), dict(method="median", reject="sigclip")):
        combine_frames(frames, skystack.combine_options(**kw), FakeGpuBackend(device),
                       [ArraySink(cube.shape[1:])], max_tile_rows=6)
    stack_dir = tmp_path / "stack"
    stack_dir.mkdir()
    skystack.stack(_write_frames(stack_dir), backend=FakeGpuBackend(device), method="mean",
                   max_tile_rows=40)
    assert {n.split("<")[0] for n in device.launched} == {
        "decode_frames", "combine_accumulate", "combine_small", "reproject_tile",
        "coverage_expmap"}
