"""The GPU kernels without a GPU: nvcc compiles every kernel, and the per-pixel algorithms of the
kernels, compiled for the host, match the NumPy / astropy references.

These need ``nvcc``; they skip where it is missing unless SKYSTACK_REQUIRE_NVCC=1 (set by CI),
in which case a missing compiler is a failure.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import skystack
from skystack.backends.gpu.kernels import (
    SOURCES,
    all_name_expressions,
    choose_combine_kernel,
    instantiation_unit,
    kernels_dir,
    name_expressions,
)
from skystack.backends.kernel_interface import kernel_params
from skystack.networks import GPU_REGISTER_SIZES, cuda_header
from tests.reference import keep_mask, make_stack, reduce_kept
from tests.test_combine import METHODS, REJECTIONS

HARNESS = Path(__file__).parent / "cuda" / "host_harness.cu"


def _nvcc() -> str:
    found = shutil.which("nvcc") or next(
        (p for p in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc") if os.path.exists(p)), None)
    if found is None:
        if os.environ.get("SKYSTACK_REQUIRE_NVCC") == "1":
            pytest.fail("nvcc not found but SKYSTACK_REQUIRE_NVCC=1")
        pytest.skip("nvcc not found")
    return found


def test_network_header_is_generated_from_networks_py():
    committed = (kernels_dir() / "sk_networks.cuh").read_text()
    assert committed == cuda_header(), (
        "kernels/sk_networks.cuh is stale: run python -m skystack.networks kernels/sk_networks.cuh")


def compile_for_hopper(source: str, tmp_path) -> dict[str, str]:
    """nvcc -arch=sm_90 -Xptxas -v of every instantiation of ``source``: ptxas's report (the
    lines after 'Compiling entry function') per mangled kernel name."""
    nvcc = _nvcc()
    src = tmp_path / f"all_{source}"
    src.write_text(instantiation_unit(source))
    proc = subprocess.run([nvcc, "-std=c++17", "-arch=sm_90", "-Xptxas", "-v", "-c", str(src),
                           "-o", str(tmp_path / "all.o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    chunks = proc.stderr.split("Compiling entry function '")[1:]
    return {c.split("'")[0]: c for c in chunks}


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_every_kernel_compiles_for_hopper_without_spills(tmp_path, source):
    """nvcc compiles every instantiation CuPy may request; register kernels must not spill."""
    reports = compile_for_hopper(source, tmp_path)
    assert len(reports) == len(name_expressions(source))
    spilled = [name for name, c in reports.items()
               if int(re.search(r"(\d+) bytes spill stores", c).group(1)) > 0]
    assert not spilled, f"kernels spill registers: {spilled}"


def _libnvrtc() -> str | None:
    """libnvrtc from the nvidia-cuda-nvrtc wheel (a test dependency on Linux) or a toolkit."""
    try:
        import nvidia.cuda_nvrtc as pkg

        roots = [Path(p) / "lib" for p in pkg.__path__]
    except ImportError:
        roots = []
    roots += [Path("/usr/local/cuda/lib64"), Path("/usr/lib/x86_64-linux-gnu")]
    for root in roots:
        found = sorted(root.glob("libnvrtc.so*")) if root.is_dir() else []
        if found:
            return str(found[0])
    return None


# The kernels NVRTC compiles per source (the combine templates are many: a sample of them).
NVRTC_NAMES = {
    "combine.cu": ["decode_frames", "combine_accumulate", "combine_small<16>",
                   "combine_warp<8, 3, 8>"],
    "reproject.cu": name_expressions("reproject.cu"),
}


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_nvrtc_compiles_the_source_cupy_loads(source):
    """The assembled source compiles under NVRTC (no system headers), as CuPy compiles it."""
    from skystack.backends.gpu.device import NVRTC_OPTIONS
    from skystack.backends.gpu.kernels import assemble_source

    path = _libnvrtc()
    if path is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12)")
    lib = ctypes.CDLL(path)
    names = NVRTC_NAMES[source]
    assert set(names) <= set(name_expressions(source))
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), assemble_source(source).encode(),
                                  source.encode(), 0, None, None) == 0
    for name in names:
        assert lib.nvrtcAddNameExpression(prog, name.encode()) == 0
    opts = [b"--gpu-architecture=compute_90", *(o.encode() for o in NVRTC_OPTIONS)]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    assert rc == 0, log.value.decode()[-3000:]
    for name in names:
        lowered = ctypes.c_char_p()
        assert lib.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(lowered)) == 0
        assert lowered.value
    lib.nvrtcDestroyProgram(ctypes.byref(prog))


def build_host_harness(source: Path, out: Path) -> ctypes.CDLL:
    """A host harness (tests/cuda/*.cu) compiled by nvcc into a shared library, loaded."""
    nvcc = _nvcc()
    proc = subprocess.run([nvcc, "-std=c++17", "-x", "cu", "-O2", "-shared", "-Xcompiler",
                           "-fPIC", f"-I{kernels_dir()}", str(source), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return ctypes.CDLL(str(out))


@pytest.fixture(scope="session")
def harness(tmp_path_factory):
    lib = build_host_harness(HARNESS, tmp_path_factory.mktemp("harness") / "sk_harness.so")
    lib.sk_host_combine.restype = ctypes.c_int
    return lib


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def host_combine(lib, cube, *, method="mean", reject="none", center="median", spread="std",
                 sigma_low=3.0, sigma_high=3.0, maxiters=5, nlow=1, nhigh=1, low=None,
                 high=None, plow=10.0, phigh=10.0, weights=None, scale=None, zero=None,
                 path=None):
    """Run the host build of the kernel that the GPU backend would choose for this combine."""
    n = cube.shape[0]
    opts = skystack.combine_options(
        method=method, reject=reject, center=center, spread=spread, sigma_low=sigma_low,
        sigma_high=sigma_high, maxiters=maxiters, nlow=nlow, nhigh=nhigh, low=low, high=high,
        plow=plow, phigh=phigh, weights=None if weights is None else list(weights))
    choice = choose_combine_kernel(n, opts)
    if path is None:
        path = 0 if choice.name == "combine_accumulate" else (
            1 if choice.name.startswith("combine_small") else 2)
    nmax = int(re.search(r"<(\d+)>", choice.name).group(1)) if path == 1 else 0
    block = np.ascontiguousarray(cube, np.float32).reshape(n, -1)
    npix = block.shape[1]
    sc = np.ones(n, np.float32) if scale is None else np.asarray(scale, np.float32)
    zr = np.zeros(n, np.float32) if zero is None else np.asarray(zero, np.float32)
    w = np.ones(n, np.float64) if weights is None else np.asarray(weights, np.float64)
    params = kernel_params(opts)  # the bytes the GPU kernels get by value
    img = np.empty(npix, np.float32)
    unc = np.empty(npix, np.float32)
    cnt = np.empty(npix, np.int32)
    rc = lib.sk_host_combine(
        _ptr(block), ctypes.c_int(n), ctypes.c_longlong(npix), _ptr(sc), _ptr(zr), _ptr(w),
        _ptr(params), path, nmax, _ptr(img), _ptr(unc), _ptr(cnt))
    assert rc == 0
    shape = cube.shape[1:]
    return img.reshape(shape), unc.reshape(shape), cnt.reshape(shape)


def _compare(got, cube, reject, opts, method, weights=None):
    img, unc, cnt = got
    keep = keep_mask(cube, reject, **opts)
    # Range rejection makes values invalid rather than trimming them: nothing winsorized.
    value, unc_ref, count = reduce_kept(cube, keep, method, weights,
                                        valid=keep if reject == "range" else None)
    np.testing.assert_array_equal(cnt, count)
    rtol = 1e-6 if method in ("median", "min", "max") else 1e-5
    np.testing.assert_allclose(img, value, rtol=rtol, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(unc, unc_ref, rtol=1e-4, atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("n", [3, 15, 40, 100])
@pytest.mark.parametrize("reject,opts", REJECTIONS)
@pytest.mark.parametrize("method", METHODS)
def test_kernel_pixel_code_matches_references(harness, n, method, reject, opts):
    cube = make_stack(n=n, shape=(11, 23), seed=n * 7 + len(method))
    kw = {("low" if k == "low" else k): v for k, v in opts.items()}
    got = host_combine(harness, cube, method=method, reject=reject, **kw)
    _compare(got, cube, reject, opts, method)


@pytest.mark.parametrize("n", [1, 2, 5, 12, 33, 64])
def test_register_path_every_size_matches_numpy_median(harness, n):
    cube = make_stack(n=n, shape=(9, 17), seed=n, dead_pixels=False, nan_fraction=0.0)
    img, _, cnt = host_combine(harness, cube, method="median", path=1)
    np.testing.assert_array_equal(img, np.median(cube, axis=0))
    assert (cnt == n).all()


@pytest.mark.parametrize("path", [1, 2])
@pytest.mark.parametrize("center,spread", [("median", "std"), ("mean", "std"),
                                           ("median", "mad"), ("mean", "mad")])
@pytest.mark.parametrize("maxiters", [0, 1, 5])
def test_sigclip_kept_counts_equal_astropy(harness, path, center, spread, maxiters):
    from astropy.stats import sigma_clip

    cube = make_stack(n=21, shape=(30, 30), seed=maxiters, outlier_fraction=0.08)
    clipped = sigma_clip(cube, sigma_lower=2.0, sigma_upper=2.5, cenfunc=center,
                         stdfunc="std" if spread == "std" else "mad_std",
                         maxiters=None if maxiters == 0 else maxiters, axis=0)
    img, _, cnt = host_combine(harness, cube, method="mean", reject="sigclip", center=center,
                               spread=spread, sigma_low=2.0, sigma_high=2.5, maxiters=maxiters,
                               path=path)
    np.testing.assert_array_equal(cnt, (~clipped.mask).sum(0))
    np.testing.assert_allclose(img, clipped.mean(axis=0).filled(np.nan), rtol=1e-5,
                               equal_nan=True)


@pytest.mark.parametrize("n", [12, 90])
@pytest.mark.parametrize("method", ["mean", "sum"])
@pytest.mark.parametrize("reject,opts", [("none", {}), ("minmax", dict(nlow=2, nhigh=2)),
                                         ("sigclip", dict(sigma_low=3.0, sigma_high=3.0))])
def test_weighted_kernel_code(harness, n, method, reject, opts):
    cube = make_stack(n=n, seed=7)
    weights = np.linspace(0.5, 3.0, n)
    got = host_combine(harness, cube, method=method, reject=reject, weights=weights, **opts)
    _compare(got, cube, reject, opts, method, weights=weights)


def test_scale_and_zero_are_applied_in_float32(harness):
    cube = make_stack(n=7, seed=4)
    scale = np.linspace(0.9, 1.1, 7).astype(np.float32)
    zero = np.linspace(-5, 5, 7).astype(np.float32)
    normalised = cube * scale[:, None, None] + zero[:, None, None]
    for method in ("mean", "median"):
        got = host_combine(harness, cube, method=method, reject="sigclip", scale=scale, zero=zero)
        _compare(got, normalised, "sigclip", {}, method)


def test_range_rejection_uses_raw_values(harness):
    cube = make_stack(n=9, seed=8)
    scale = np.full(9, 2.0, np.float32)
    img, _, cnt = host_combine(harness, cube, method="mean", reject="range", low=90.0,
                               high=110.0, scale=scale)
    keep = keep_mask(cube * np.float32(2.0), "range", low=90.0, high=110.0, raw=cube)
    value, _, count = reduce_kept(cube * np.float32(2.0), keep, "mean")
    np.testing.assert_array_equal(cnt, count)
    np.testing.assert_allclose(img, value, rtol=1e-6, equal_nan=True)


# FITS storage kinds of kernels/sk_decode.cuh
DECODE_CASES = [
    # (kind, BITPIX, dtype, bscale, bzero, blank)
    (0, 8, "u1", 1.0, 0.0, None),
    (0, 8, "u1", 1.0, -128.0, 7),
    (1, 16, ">i2", 1.0, 32768.0, None),
    (1, 16, ">i2", 1.0, 0.0, -32768),
    (1, 16, ">i2", 0.25, 100.5, 5),
    (2, 32, ">i4", 1.0, 0.0, None),
    (2, 32, ">i4", 1.0, 2147483648.0, 17),
    (2, 32, ">i4", 0.001, 3.0, None),
    (3, 64, ">i8", 1.0, 0.0, None),
    (3, 64, ">i8", 2.5, -1.0, 99),
    (4, -32, ">f4", 1.0, 0.0, None),
    (4, -32, ">f4", 1.7, 0.3, None),
    (5, -64, ">f8", 1.0, 0.0, None),
    (5, -64, ">f8", 0.5, 1e3, None),
]


@pytest.mark.parametrize("kind,bitpix,dtype,bscale,bzero,blank", DECODE_CASES)
def test_decode_matches_cpu_reader_and_astropy(harness, tmp_path, kind, bitpix, dtype, bscale,
                                               bzero, blank):
    """The GPU decode of raw big-endian bytes equals the CPU reader and astropy's data."""
    from astropy.io import fits

    from skystack.io.reader import RawFitsSource, Tile

    rng = np.random.default_rng(kind)
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        raw = rng.integers(max(info.min, -2**40), min(info.max, 2**40), (13, 29),
                           endpoint=True).astype(dt)
        if blank is not None:
            raw[3, 4] = blank
    else:
        raw = (rng.normal(0, 1e4, (13, 29))).astype(dt)
    hdu = fits.PrimaryHDU(raw.astype(dt.newbyteorder("=")))
    hdu.header["BSCALE"] = bscale
    hdu.header["BZERO"] = bzero
    if blank is not None:
        hdu.header["BLANK"] = blank
    path = str(tmp_path / "f.fits")
    # Write raw storage values untouched (no astropy rescaling) by building the file by hand.
    hdr = hdu.header.copy()
    hdr["BITPIX"] = bitpix
    with open(path, "wb") as f:
        f.write(hdr.tostring().encode("ascii"))
        data = raw.astype(dt).tobytes()
        f.write(data + b"\0" * (-len(data) % 2880))
    staged = np.frombuffer(raw.astype(dt).tobytes(), np.uint8).copy()
    out = np.empty(raw.size, np.float32)
    harness.sk_host_decode(_ptr(staged), kind, ctypes.c_double(bscale), ctypes.c_double(bzero),
                           ctypes.c_longlong(0 if blank is None else blank),
                           int(blank is not None), ctypes.c_longlong(raw.size), _ptr(out))
    got = out.reshape(raw.shape)
    src = RawFitsSource(path, len(hdr.tostring()), raw.shape, bitpix, bscale, bzero, blank)
    cpu = np.empty(raw.shape, np.float32)
    src.read(Tile(0, 13, 0, 29), cpu)
    np.testing.assert_array_equal(got, cpu)
    with fits.open(path, do_not_scale_image_data=True) as hl:
        stored = hl[0].data
        np.testing.assert_array_equal(stored, raw)
        ref = stored.astype(np.float64) * bscale + bzero
        if blank is not None:
            ref[stored == blank] = np.nan
    np.testing.assert_allclose(got, ref, rtol=2e-7, equal_nan=True)


@pytest.mark.parametrize("size", GPU_REGISTER_SIZES)
def test_generated_networks_sort_with_inf_padding(harness, size):
    rng = np.random.default_rng(size)
    for valid in sorted({1, size // 2, size}):
        v = np.full(size, np.inf, np.float32)
        v[:valid] = rng.normal(size=valid)
        rng.shuffle(v)
        expected = np.sort(v)
        harness.sk_host_sort(size, _ptr(v))
        np.testing.assert_array_equal(v, expected)


def test_kernel_choice_covers_frame_counts():
    med = skystack.combine_options(method="median")
    mean = skystack.combine_options(method="mean")
    assert choose_combine_kernel(500, mean).name == "combine_accumulate"
    assert choose_combine_kernel(5, med).name == "combine_small<8>"
    assert choose_combine_kernel(64, med).name == "combine_small<64>"
    assert choose_combine_kernel(65, med).name.startswith("combine_warp<4,")
    assert choose_combine_kernel(1000, med).name.startswith("combine_warp<32,")
    assert choose_combine_kernel(2048, med).name.startswith("combine_warp<64,")
    with pytest.raises(skystack.SkystackError, match="at most 2048"):
        choose_combine_kernel(2049, med)
    names = set(all_name_expressions())
    for n in range(1, 2049, 7):
        assert choose_combine_kernel(n, med).name in names
