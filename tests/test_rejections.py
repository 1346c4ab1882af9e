"""winsor, linfit and pctclip rejection (Siril's definitions; skystack.backends.cpu.rejections):
the CPU kernels, the GPU per-pixel code compiled for the host and the GPU streaming loop on the
fake device, against the independent NumPy references of tests/reference.py."""

from __future__ import annotations

import ctypes
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import skystack
from skystack.backends.cpu import CpuBackend
from skystack.backends.gpu.kernels import choose_combine_kernel
from skystack.backends.kernel_interface import Reject, kernel_params
from skystack.clip_efficiency import value_clip_factors
from skystack.io.inputs import load_frames
from skystack.pipeline import ArraySink, combine_frames
from tests.fake_device import FakeDevice, FakeGpuBackend
from tests.reference import keep_mask, make_stack, reduce_kept

CASES = [
    ("winsor", dict(sigma_low=3.0, sigma_high=3.0, maxiters=5)),
    ("winsor", dict(sigma_low=2.0, sigma_high=2.5, maxiters=0)),
    ("linfit", dict(sigma_low=3.0, sigma_high=3.0, maxiters=5)),
    ("linfit", dict(sigma_low=2.0, sigma_high=1.5, maxiters=0)),
    ("pctclip", dict(pctclip_low=0.2, pctclip_high=0.1)),
    ("pctclip", dict(pctclip_low=0.05, pctclip_high=0.03)),
]


def _check(img, unc, cnt, cube, reject, opts, method, factor=1.0):
    """``factor``: the product's UNCCLIP (a value-clipped mean's UNCERT is the winsorized SE
    times it: skystack.clip_efficiency, tested against ground truth in
    test_uncertainty_rejection.py)."""
    keep = keep_mask(cube, reject, **opts)
    value, unc_ref, count = reduce_kept(cube, keep, method)
    unc_ref = unc_ref * factor
    np.testing.assert_array_equal(cnt, count)
    rtol = 1e-6 if method == "median" else 1e-5
    np.testing.assert_allclose(img, value, rtol=rtol, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(unc, unc_ref, rtol=1e-4, atol=1e-4, equal_nan=True)


def _cpu(cube, **kw):
    r = skystack.combine(cube, backend="cpu", max_tile_rows=6, **kw)
    return r.data, r.uncertainty.array, r.count, r.meta.get("UNCCLIP", 1.0)


@pytest.mark.parametrize("n", [3, 15, 40])
@pytest.mark.parametrize("reject,opts", CASES)
@pytest.mark.parametrize("method", ["mean", "median"])
def test_cpu_matches_reference(n, method, reject, opts):
    cube = make_stack(n=n, shape=(13, 17), seed=n + len(reject), outlier_fraction=0.06)
    img, unc, cnt, factor = _cpu(cube, method=method, reject=reject, **opts)
    _check(img, unc, cnt, cube, reject, opts, method, factor)



@pytest.mark.parametrize("maxiters,nans", [(5, 0.03), (0, 0.0)])
def test_winsor_whole_chunks_match_reference(maxiters, nans):
    """winsor steps hundreds of pixels in lockstep (backends/cpu/rejections.winsor_lanes:
    lanes leave as they converge, a few need many more steps or iterations than the rest):
    one tile of whole sorted chunks, with heavy tails, with NaNs and pixels of 0-2 valid values
    or with every value valid (a path of its own), keeps exactly the reference's values."""
    cube = make_stack(n=25, shape=(48, 64), seed=18, outlier_fraction=0.05, nan_fraction=nans,
                      dead_pixels=nans > 0)
    rng = np.random.default_rng(18)
    cube[:, 20:30] += (rng.standard_t(2, (25, 10, 64)) * 8).astype(np.float32)
    opts = dict(sigma_low=2.5, sigma_high=3.0, maxiters=maxiters)
    r = skystack.combine(cube, backend="cpu", threads=1, method="mean", reject="winsor", **opts)
    _check(r.data, r.uncertainty.array, r.count, cube, "winsor", opts, "mean",
           r.meta["UNCCLIP"])


def test_winsor_lockstep_sigma_is_the_definitions():
    """The refined sigma of every lane of a lockstep group (cpu/rejections._winsor_refine:
    converged lanes must keep their sigma while the others step on) equals the definition's,
    on lanes that need from 2 to 20+ steps and partial ranges."""
    from skystack.backends.cpu.rejections import _winsor_refine
    from tests.reference import winsor_sigma

    rng = np.random.default_rng(7)
    nf, g = 25, 600
    xs = np.sort(rng.standard_t(2, (nf, g)) * 10 + 1000, axis=0)
    a = rng.integers(0, 4, g)
    b = nf - rng.integers(0, 4, g)
    med = np.array([np.median(xs[a[j]:b[j], j]) for j in range(g)])
    inside = (np.arange(nf)[:, None] >= a) & (np.arange(nf)[:, None] < b)
    d = np.where(inside, xs - med, 0.0)
    pre1 = np.vstack([np.zeros(g), np.cumsum(d, axis=0)])
    pre2 = np.vstack([np.zeros(g), np.cumsum(d * d, axis=0)])
    sig = np.array([np.std(xs[a[j]:b[j], j], ddof=1) for j in range(g)])
    _winsor_refine(xs, pre1, pre2, g, a, b, med, (b - a).astype(np.float64), sig,
                   np.empty((13, g)), np.empty((5, g), np.int64))
    want = [winsor_sigma(xs[a[j]:b[j], j], med[j]) for j in range(g)]
    np.testing.assert_allclose(sig, want, rtol=1e-10)

def test_rejections_remove_outliers_and_keep_the_rest():
    """One cosmic ray per pixel, far above Gaussian noise: each method drops it (and pctclip
    nothing else at 30 % of the median)."""
    rng = np.random.default_rng(1)
    cube = rng.normal(1000.0, 10.0, (20, 8, 9)).astype(np.float32)
    cube[7] += 5000.0
    for reject, opts in [("winsor", {}), ("linfit", {}), ("pctclip", dict(pctclip_low=0.3,
                                                                         pctclip_high=0.3))]:
        img, _, cnt, _ = _cpu(cube, reject=reject, **opts)
        assert (cnt <= 19).all(), reject
        clean = np.delete(cube, 7, axis=0).astype(np.float64)
        assert np.abs(img - clean.mean(0)).max() < 15.0, reject
    assert (_cpu(cube, reject="pctclip", pctclip_low=0.3, pctclip_high=0.3)[2] == 19).all()


def test_linfit_follows_a_gradient_that_sigclip_clips():
    """Values spread evenly (a gradient across frames) lie on a line: linfit keeps them all."""
    cube = np.linspace(0.0, 100.0, 30, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4),
                                                                                 np.float32)
    assert (_cpu(cube, reject="linfit", sigma=1.0)[2] == 30).all()
    assert (_cpu(cube, reject="sigclip", sigma=1.0)[2] < 30).all()


def test_pctclip_median_zero_rejects_nothing_and_negative_uses_magnitude():
    cube = np.zeros((5, 2, 2), np.float32)
    cube[:, 0, 0] = [-3.0, 0.0, 0.0, 0.0, 50.0]          # median 0: no relative distance
    cube[:, 0, 1] = [-100.0, -101.0, -99.0, -150.0, -60.0]  # median -100: |median| scales
    cube[:, 1, :] = 7.0
    img, _, cnt, _ = _cpu(cube, reject="pctclip", pctclip_low=0.2, pctclip_high=0.2)
    assert cnt[0, 0] == 5 and img[0, 0] == pytest.approx(47.0 / 5)
    assert cnt[0, 1] == 3 and img[0, 1] == pytest.approx(-100.0)
    assert (cnt[1] == 5).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 24), st.integers(0, 2**32 - 1), st.sampled_from(["winsor", "linfit"]))
def test_permutation_invariant_and_constant_data_untouched(n, seed, reject):
    rng = np.random.default_rng(seed)
    cube = rng.standard_t(3, (n, 3, 4)).astype(np.float32) * 10 + 100
    a = _cpu(cube, reject=reject, sigma=2.0)
    b = _cpu(cube[rng.permutation(n)], reject=reject, sigma=2.0)
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    const = np.full((n, 2, 3), 42.5, np.float32)
    img, _, cnt, _ = _cpu(const, reject=reject, sigma=0.5)
    assert (cnt == n).all() and (img == 42.5).all()


def test_streamed_fake_gpu_equals_cpu_and_reference():
    cube = make_stack(n=11, shape=(21, 19), seed=5, outlier_fraction=0.06)
    frames = load_frames(list(cube))
    for reject, opts in CASES[::2]:
        options = skystack.combine_options(method="mean", reject=reject, **opts)
        results = []
        for backend in (FakeGpuBackend(FakeDevice()), CpuBackend(threads=1)):
            sink = ArraySink(cube.shape[1:])
            combine_frames(frames, options, backend, [sink], max_tile_rows=4)
            results.append(sink)
        gpu, cpu = results
        np.testing.assert_array_equal(gpu.image, cpu.image)
        np.testing.assert_array_equal(gpu.count, cpu.count)
        np.testing.assert_array_equal(gpu.uncertainty, cpu.uncertainty)
        clip = value_clip_factors(options, None, len(cube))
        _check(gpu.image, gpu.uncertainty, gpu.count, cube, reject, opts, "mean",
               1.0 if clip is None else np.sqrt(clip.scatter))


def test_model_uncertainty_uses_the_kept_count():
    """UNCERT of the noise model after winsor: sqrt(mean_k var_k / kept), var_k from the CCD
    equation at the combined value (no scale, unit weights)."""
    from astropy.nddata import CCDData

    gain, rdnoise = 2.0, 5.0
    rng = np.random.default_rng(4)
    frames = []
    for k in range(9):
        data = (rng.poisson(800.0 * gain, (10, 12)) + rng.normal(0, rdnoise, (10, 12))) / gain
        if k == 4:
            data[:5] += 30000.0  # rejected: kept <= 8 there
        frames.append(CCDData(data.astype(np.float32), unit="adu",
                              meta={"GAIN": gain, "RDNOISE": rdnoise}))
    r = skystack.combine(frames, reject="winsor", uncertainty="model", backend="cpu")
    assert (r.count[:5] <= 8).all() and (r.count[5:] == 9).mean() > 0.8  # kept counts vary
    var_k = np.maximum(r.data.astype(np.float64), 0) / gain + (rdnoise / gain) ** 2
    # Times the winsor clip's factor (skystack.clip_efficiency), the header's UNCCLIP.
    np.testing.assert_allclose(r.uncertainty.array,
                               np.sqrt(var_k / r.count) * r.meta["UNCCLIP"], rtol=1e-5)


def test_options_codes_and_validation():
    assert (Reject.WINSOR, Reject.LINFIT, Reject.PCTCLIP) == (5, 6, 10)
    opts = skystack.combine_options(reject="pctclip", pctclip_low=0.3, pctclip_high=0.05)
    rec = kernel_params(opts)
    assert rec["reject"] == 10 and rec["pctclip_lo"] == 0.3 and rec["pctclip_hi"] == 0.05
    with pytest.raises(skystack.SkystackError, match="--pctclip-low"):
        skystack.combine_options(reject="pctclip", pctclip_low=-0.1)
    with pytest.raises(skystack.SkystackError, match="--pctclip-high"):
        skystack.combine_options(reject="pctclip", pctclip_high=math.inf)


def test_cli_options_reach_the_combine(tmp_path):
    from astropy.io import fits

    from skystack.cli import main

    cube = np.full((5, 4, 4), 100.0, np.float32)
    cube[2] = 125.0  # 25 % above the median
    paths = []
    for k, frame in enumerate(cube):
        paths.append(str(tmp_path / f"f{k}.fits"))
        fits.PrimaryHDU(frame).writeto(paths[-1])
    for high, kept in [("0.3", 5), ("0.2", 4)]:
        out = tmp_path / f"out{high}.fits"
        assert main(["combine", *paths, "-o", str(out), "-q", "--reject", "pctclip",
                     "--pctclip-high", high]) == 0
        with fits.open(out) as hl:
            count = next(h.data for h in hl if h.name == "COUNT")
        assert (count == kept).all()


# -- the GPU per-pixel code, compiled for the host ----------------------------------------------
@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    from tests.test_cuda_host import HARNESS, build_host_harness

    lib = build_host_harness(HARNESS, tmp_path_factory.mktemp("rej") / "sk_harness.so")
    lib.sk_host_combine.restype = ctypes.c_int
    return lib


def _host(lib, cube, path, **kw):
    opts = skystack.combine_options(**kw)
    n = cube.shape[0]
    nmax = 0
    if path == 1:
        name = choose_combine_kernel(n, opts).name
        nmax = int(re.search(r"<(\d+)>", name).group(1)) if name.startswith("combine_small") \
            else 64
    block = np.ascontiguousarray(cube, np.float32).reshape(n, -1)
    npix = block.shape[1]
    ones32, zeros32, ones64 = np.ones(n, np.float32), np.zeros(n, np.float32), np.ones(n)
    params = kernel_params(opts)
    img, unc = np.empty(npix, np.float32), np.empty(npix, np.float32)
    cnt = np.empty(npix, np.int32)

    def ptr(a):
        return a.ctypes.data_as(ctypes.c_void_p)

    assert lib.sk_host_combine(ptr(block), n, ctypes.c_longlong(npix), ptr(ones32),
                               ptr(zeros32), ptr(ones64), ptr(params), path, nmax, ptr(img),
                               ptr(unc), ptr(cnt)) == 0
    shape = cube.shape[1:]
    return img.reshape(shape), unc.reshape(shape), cnt.reshape(shape)


@pytest.mark.parametrize("path,n", [(1, 5), (1, 24), (1, 64), (2, 15), (2, 100)])
@pytest.mark.parametrize("reject,opts", CASES)
def test_host_compiled_cuda_matches_reference_and_cpu(harness, path, n, reject, opts):
    cube = make_stack(n=n, shape=(9, 13), seed=3 * n + len(reject), outlier_fraction=0.06)
    got = _host(harness, cube, path, method="mean", reject=reject, **opts)
    _check(*got, cube, reject, opts, "mean")
    cpu = _cpu(cube, method="mean", reject=reject, **opts)
    np.testing.assert_array_equal(got[2], cpu[2])


def test_bench_specs_and_labels():
    from skystack.bench.methods import parse_method

    w = parse_method("winsor")
    assert w.kwargs == dict(method="mean", reject="winsor", sigma_low=3.0, sigma_high=3.0,
                            maxiters=5)
    assert w.label == "mean+winsor(3σ)"
    lf = parse_method("median+linfit:sigma_low=2,sigma_high=4,maxiters=0")
    assert lf.label == "median+linfit(-2σ/+4σ,∞ it)"
    p = parse_method("mean+pctclip:pctclip_low=0.3,pctclip_high=0.05")
    assert p.kwargs["pctclip_low"] == 0.3 and p.label == "mean+pctclip(-0.3/+0.05×median)"


def test_gpu_refuses_winsor_and_linfit_beyond_the_kernels_that_run_them():
    """combine.cu compiles winsor/linfit out of the 64-values-per-lane warp kernel (they would
    spill registers): the chooser must never send them there."""
    for reject in ("winsor", "linfit"):
        opts = skystack.combine_options(reject=reject)
        assert choose_combine_kernel(1024, opts).name.startswith("combine_warp<32,")
        with pytest.raises(skystack.SkystackError, match="at most 1024 frames"):
            choose_combine_kernel(1025, opts)
    pct = skystack.combine_options(reject="pctclip")
    assert choose_combine_kernel(2048, pct).name.startswith("combine_warp<64,")
