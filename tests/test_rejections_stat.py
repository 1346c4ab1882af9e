"""The esd, ccdclip and pclip rejections: CPU (Numba) and the host build of the GPU code against
independent NumPy/SciPy references (tests/reference.py), the GPU streaming loop (fake device)
against the CPU, ccdclip against frames simulated with a known noise model, and the options'
resolution (headers, scaled frames)."""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import skystack
from skystack.backends.cpu import CpuBackend
from skystack.backends.cpu.rejections_stat import student_t_two_tailed
from skystack.backends.gpu.kernels import choose_combine_kernel
from skystack.backends.kernel_interface import kernel_params
from skystack.bench.methods import parse_method
from skystack.core.records import FrameParams, TileOutputs
from skystack.errors import SkystackError
from skystack.io.inputs import load_frames
from skystack.pipeline import ArraySink, combine_frames
from tests.fake_device import FakeDevice, FakeGpuBackend
from tests.reference import keep_mask, make_stack, reduce_kept
from tests.test_cuda_host import HARNESS, build_host_harness

CASES = [
    ("esd", dict()),
    ("esd", dict(esd_alpha=0.2, esd_max_frac=0.45)),
    ("ccdclip", dict(gain=1.0, rdnoise=5.0, snoise=0.0, sigma_low=3.0, sigma_high=3.0)),
    ("ccdclip", dict(gain=0.5, rdnoise=2.0, snoise=0.01, center="mean", sigma_low=2.0,
                     sigma_high=2.5)),
    ("pclip", dict()),
    ("pclip", dict(pclip=2, sigma_low=2.5, sigma_high=2.0)),
    ("pclip", dict(pclip=0.3)),
]
METHODS = ("mean", "median", "sum")


def _check(img, unc, cnt, cube, reject, opts, method, factor=1.0):
    """``factor``: the product's UNCCLIP (a value-clipped mean's UNCERT is the winsorized SE
    times it: skystack.clip_efficiency, tested against ground truth in
    test_uncertainty_rejection.py)."""
    keep = keep_mask(cube, reject, **opts)
    value, unc_ref, count = reduce_kept(cube, keep, method)
    unc_ref = unc_ref * factor
    np.testing.assert_array_equal(cnt, count)
    np.testing.assert_allclose(img, value, rtol=1e-5, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(unc, unc_ref, rtol=1e-4, atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("n", [3, 8, 25])
@pytest.mark.parametrize("reject,opts", CASES)
@pytest.mark.parametrize("method", METHODS)
def test_cpu_matches_reference(n, method, reject, opts):
    cube = make_stack(n=n, shape=(9, 13), seed=n + 31 * len(reject) + len(method))
    r = skystack.combine(cube, backend="cpu", threads=1, method=method, reject=reject, **opts)
    _check(r.data, r.uncertainty.array, r.count, cube, reject, opts, method,
           r.meta.get("UNCCLIP", 1.0))


def test_student_t_quantile_accuracy_cpu():
    """Hill's approximation against scipy over the df and p the ESD test uses (p = alpha /
    (n - i + 1) for alpha up to 0.5 and n up to 2048): relative error below 2e-5."""
    worst = 0.0
    for df in (1, 2, 3, 4, 5, 7, 10, 15, 24, 40, 64, 100, 300, 1000, 2047):
        for p in np.geomspace(1e-6, 0.5, 40):
            ref = stats.t.ppf(1 - p / 2, df)
            worst = max(worst, abs(student_t_two_tailed(p, df) / ref - 1))
    assert worst < 2e-5


# --- the host build of the GPU code -------------------------------------------------------------
@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    lib = build_host_harness(HARNESS, tmp_path_factory.mktemp("rej2") / "sk_rej2.so")
    lib.sk_host_student_t.restype = ctypes.c_double
    lib.sk_host_student_t.argtypes = [ctypes.c_double, ctypes.c_int]
    return lib


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def host_combine(lib, cube, path, *, scale=None, zero=None, **kw):
    """The GPU per-pixel code compiled for the host: path 1 = registers (combine_small), 2 =
    array column (the warp kernel's logic)."""
    n = cube.shape[0]
    opts = skystack.combine_options(**kw)
    choice = choose_combine_kernel(n, opts)
    nmax = int(choice.name.split("<")[1].split(">")[0]) if path == 1 else 0
    block = np.ascontiguousarray(cube, np.float32).reshape(n, -1)
    npix = block.shape[1]
    sc = np.ones(n, np.float32) if scale is None else np.full(n, scale, np.float32)
    zr = np.zeros(n, np.float32) if zero is None else np.full(n, zero, np.float32)
    w = np.ones(n, np.float64)
    params = kernel_params(opts)
    img, unc, cnt = (np.empty(npix, np.float32), np.empty(npix, np.float32),
                     np.empty(npix, np.int32))
    assert lib.sk_host_combine(_ptr(block), ctypes.c_int(n), ctypes.c_longlong(npix), _ptr(sc),
                               _ptr(zr), _ptr(w), _ptr(params), path, nmax, _ptr(img),
                               _ptr(unc), _ptr(cnt)) == 0
    shape = cube.shape[1:]
    return img.reshape(shape), unc.reshape(shape), cnt.reshape(shape)


def test_student_t_quantile_accuracy_cuda(harness):
    for df in (1, 2, 3, 5, 24, 300, 2047):
        for p in np.geomspace(1e-6, 0.5, 15):
            got = harness.sk_host_student_t(float(p), df)
            assert abs(got / stats.t.ppf(1 - p / 2, df) - 1) < 2e-5
            assert abs(got / student_t_two_tailed(p, df) - 1) < 1e-12


@pytest.mark.parametrize("path", [1, 2])
@pytest.mark.parametrize("n", [3, 8, 25])
@pytest.mark.parametrize("reject,opts", CASES)
def test_cuda_host_matches_reference(harness, path, n, reject, opts):
    cube = make_stack(n=n, shape=(9, 13), seed=n + 7 * len(reject) + path)
    for method in ("mean", "median"):
        got = host_combine(harness, cube, path, method=method, reject=reject, **opts)
        _check(*got, cube, reject, opts, method)


@pytest.mark.parametrize("path", [1, 2])
def test_ccdclip_scaled_frames_cuda_and_cpu(harness, path):
    """A common scale and zero: the noise model is applied to the raw values."""
    raw = make_stack(n=12, shape=(9, 13), seed=5)
    s, z = 2.5, -40.0
    cube = (raw * np.float32(s) + np.float32(z)).astype(np.float32)
    opts = dict(gain=2.0, rdnoise=4.0, snoise=0.0, sigma_low=2.0, sigma_high=2.0)
    keep = keep_mask(cube, "ccdclip", scale=s, zero=z, **opts)
    # The same kept values as clipping the raw frames with the model.
    np.testing.assert_array_equal(keep, keep_mask(raw, "ccdclip", **opts))
    value, unc, count = reduce_kept(cube, keep, "mean")
    img, _, cnt = host_combine(harness, raw, path, method="mean", reject="ccdclip", scale=s,
                               zero=z, **opts)
    np.testing.assert_array_equal(cnt, count)
    np.testing.assert_allclose(img, value, rtol=1e-5, atol=1e-3, equal_nan=True)
    # The CPU kernel given the same normalisation.
    npix = cnt.size
    out = TileOutputs(np.empty(npix, np.float32), np.empty(npix, np.float32),
                      np.empty(npix, np.int32))
    CpuBackend(threads=1).combine_tile(
        raw.reshape(12, -1), skystack.combine_options(method="mean", reject="ccdclip", **opts),
        FrameParams(np.full(12, s, np.float32), np.full(12, z, np.float32), np.ones(12)), out)
    np.testing.assert_array_equal(out.count.reshape(cnt.shape), count)


# --- properties --------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(5, 30), st.integers(0, 2**31 - 1), st.floats(50.0, 1e5))
def test_esd_removes_a_gross_outlier_and_keeps_clean_data(n, seed, size):
    rng = np.random.default_rng(seed)
    col = rng.normal(1000.0, 10.0, n).astype(np.float32)
    col[seed % n] += np.float32(size * 10)  # > 50 sigma
    cube = col[:, None, None]
    r = skystack.combine(cube, backend="cpu", threads=1, method="mean", reject="esd",
                         esd_max_frac=0.45)
    kept = int(r.count[0, 0])
    assert n - math.floor(0.45 * n) <= kept <= n - 1  # the outlier went, at most r_max did
    assert abs(r.data[0, 0] - 1000.0) < 30.0


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 40), st.integers(0, 2**31 - 1), st.floats(-0.9, 5.0))
def test_pclip_keeps_the_median_pixels_and_matches_reference(n, seed, pclip):
    if abs(pclip) < 0.01:
        pclip = -0.5
    rng = np.random.default_rng(seed)
    cube = rng.standard_cauchy((n, 1, 3)).astype(np.float32)
    r = skystack.combine(cube, backend="cpu", threads=1, method="median", reject="pclip",
                         pclip=pclip, sigma=1.0)
    keep = keep_mask(cube, "pclip", pclip=pclip, sigma_low=1.0, sigma_high=1.0)
    np.testing.assert_array_equal(r.count, keep.sum(0))
    assert (r.count >= min(n, 2 - n % 2)).all()  # the middle value(s) are never rejected


def test_pclip_iraf_help_examples():
    """IRAF's help: 10 pixels, pclip = 2 uses the 8th pixel; pclip = -0.5 the 3rd."""
    x = np.arange(1.0, 11.0)
    x[[0, 9]] = [-100.0, 100.0]
    med = 5.5
    for pclip, pixel in ((2, 8), (-0.5, 3)):
        spread = abs(med - x[pixel - 1])
        expect = (x >= med - spread) & (x <= med + spread)
        r = skystack.combine(x.astype(np.float32)[:, None, None], backend="cpu", threads=1,
                             reject="pclip", pclip=pclip, sigma=1.0)
        assert r.count[0, 0] == expect.sum()


# --- ccdclip against the truth, options and their resolution ----------------------------------
def _ccd_frames(n, shape, gain, rdnoise_e, level, seed):
    rng = np.random.default_rng(seed)
    electrons = rng.poisson(level * gain, (n, *shape)) + rng.normal(0, rdnoise_e, (n, *shape))
    return (electrons / gain).astype(np.float32)


def test_ccdclip_rejects_the_normal_fraction_for_known_noise():
    gain, rdnoise, level, k = 2.0, 6.0, 400.0, 2.0
    cube = _ccd_frames(25, (48, 48), gain, rdnoise, level, seed=11)
    r = skystack.combine(cube, backend="cpu", method="mean", reject="ccdclip", gain=gain,
                         rdnoise=rdnoise, sigma=k)
    rejected = 1 - r.count.sum() / cube.size
    expect = 2 * stats.norm.sf(k)  # one round; later rounds add little for Gaussian noise
    assert expect * 0.9 < rejected < expect * 1.25, (rejected, expect)
    # A wrong gain (noise model 2x too wide) rejects far fewer: the test can fail.
    r = skystack.combine(cube, backend="cpu", method="mean", reject="ccdclip", gain=gain / 4,
                         rdnoise=rdnoise / 4, sigma=k)
    assert 1 - r.count.sum() / cube.size < expect / 10


def _hdus(cube, gains, rdnoises):
    out = []
    for frame, g, rn in zip(cube, gains, rdnoises):
        h = fits.PrimaryHDU(frame)
        if g is not None:
            h.header["GAIN"] = g
        if rn is not None:
            h.header["RDNOISE"] = rn
        out.append(h)
    return out


def test_ccdclip_gain_from_headers_and_uncert_model():
    gain, rdnoise = 2.0, 6.0
    cube = _ccd_frames(6, (16, 16), gain, rdnoise, 300.0, seed=2)
    cube[2, 3, 4] = 5000.0
    r = skystack.combine(_hdus(cube, [gain] * 6, [rdnoise] * 6), backend="cpu",
                         reject="ccdclip", uncertainty="model")
    keep = keep_mask(cube, "ccdclip", gain=gain, rdnoise=rdnoise)
    assert not keep[2, 3, 4]
    value, _, count = reduce_kept(cube, keep, "mean")
    np.testing.assert_array_equal(r.count, count)
    np.testing.assert_allclose(r.data, value, rtol=1e-5)
    # UNCERT of the noise model for a mean of COUNT frames of one gain (independent formula).
    expect = np.sqrt((np.maximum(value, 0) / gain + (rdnoise / gain) ** 2) / count)
    # Times the clip's factor (skystack.clip_efficiency: for ccdclip the skipped mean's formula
    # at c = 3), the header's UNCCLIP.
    from scipy.stats import norm

    from skystack.clip_efficiency import skipped_mean_variance

    assert r.meta["UNCCLIP"] == pytest.approx(
        np.sqrt(skipped_mean_variance(3.0)[0] * (2 * norm.cdf(3.0) - 1)), rel=1e-5)
    np.testing.assert_allclose(r.uncertainty.array, expect * r.meta["UNCCLIP"], rtol=1e-4)


def test_ccdclip_needs_agreeing_noise_and_one_normalisation():
    cube = _ccd_frames(4, (8, 8), 2.0, 5.0, 300.0, seed=3)
    with pytest.raises(SkystackError, match="differs"):
        skystack.combine(_hdus(cube, [2.0, 2.0, 2.1, 2.0], [5.0] * 4), reject="ccdclip")
    with pytest.raises(SkystackError, match="no RDNOISE"):
        skystack.combine(_hdus(cube, [2.0] * 4, [5.0, None, 5.0, 5.0]), reject="ccdclip")
    with pytest.raises(SkystackError, match="no GAIN"):
        skystack.combine(cube, reject="ccdclip")
    cube[1] *= 1.5
    with pytest.raises(SkystackError, match="normalised differently"):
        skystack.combine(cube, reject="ccdclip", gain=2.0, rdnoise=5.0, scale="median")


@pytest.mark.parametrize("name,value", [("esd_alpha", 0.0), ("esd_max_frac", 1.0),
                                        ("gain", -1.0), ("rdnoise", -0.1), ("snoise", -1.0),
                                        ("pclip", 0.0)])
def test_invalid_options_are_one_line_errors(name, value):
    with pytest.raises(SkystackError, match=f"--{name.replace('_', '-')}"):
        skystack.combine_options(reject="esd", **{name: value})


def test_bench_aliases_and_cli_options():
    assert parse_method("esd").reject == "esd"
    assert parse_method("pclip").kwargs["pclip"] == -0.5
    ccd = parse_method("ccdclip")
    assert ccd.kwargs["gain"] > 0 and "ccdclip" in ccd.label
    assert parse_method("mean+ccdclip:sigma=2").label.endswith("rn=hdr,sn=0)")
    from skystack.cli import build_parser
    a = build_parser().parse_args(["combine", "x.fits", "-o", "y.fits", "--reject", "esd",
                                   "--esd-alpha", "0.01", "--pclip", "3", "--gain", "1.5"])
    assert (a.reject, a.esd_alpha, a.pclip, a.gain, a.rdnoise) == ("esd", 0.01, 3.0, 1.5, None)


@pytest.mark.parametrize("reject,opts", [("esd", {}), ("pclip", {}),
                                         ("ccdclip", dict(gain=1.0, rdnoise=5.0))])
def test_gpu_streaming_equals_cpu(tmp_path, reject, opts):
    cube = make_stack(n=9, shape=(21, 17), seed=4, dead_pixels=False)
    paths = []
    for k, frame in enumerate(cube):
        paths.append(str(tmp_path / f"f{k}.fits"))
        fits.PrimaryHDU(frame).writeto(paths[-1])
    frames = load_frames(paths)
    options = skystack.combine_options(method="mean", reject=reject, **opts)
    sinks = []
    for backend in (FakeGpuBackend(FakeDevice()), CpuBackend(threads=1)):
        sinks.append(ArraySink(frames[0].shape))
        combine_frames(frames, options, backend, [sinks[-1]], max_tile_rows=5)
    gpu, cpu = sinks
    np.testing.assert_array_equal(gpu.image, cpu.image)
    np.testing.assert_array_equal(gpu.count, cpu.count)
    keep = keep_mask(cube, reject, **opts)
    np.testing.assert_array_equal(cpu.count, keep.sum(0))


def test_gpu_refuses_ccdclip_beyond_its_frame_limit():
    opts = skystack.combine_options(reject="ccdclip", gain=1.0, rdnoise=1.0)
    assert choose_combine_kernel(1024, opts).name.startswith("combine_warp<32")
    with pytest.raises(SkystackError, match="at most 1024 frames"):
        choose_combine_kernel(1025, opts)


def test_product_header_records_the_options(tmp_path):
    cube = _ccd_frames(4, (8, 8), 2.0, 5.0, 300.0, seed=6)
    out = tmp_path / "c.fits"
    skystack.combine(_hdus(cube, [2.0] * 4, [5.0] * 4), str(out), reject="ccdclip", sigma=2.5)
    h = fits.getheader(out)
    assert (h["REJECT"], h["CCDGAIN"], h["CCDRDN"], h["SIGLOW"]) == ("ccdclip", 2.0, 5.0, 2.5)
    skystack.combine(cube, str(out), reject="esd", esd_alpha=0.01, overwrite=True)
    assert fits.getheader(out)["ESDALPHA"] == 0.01


def test_ccdclip_refuses_flux_conserving_stacks():
    from skystack.rejection_noise import check_ccdclip_resampling

    opts = skystack.combine_options(reject="ccdclip", gain=1.0, rdnoise=1.0)
    check_ccdclip_resampling(opts, False)
    with pytest.raises(SkystackError, match="flux-conserving"):
        check_ccdclip_resampling(opts, True)


@pytest.mark.parametrize("reject,opts", CASES[::2])
def test_weighted_mean_of_the_kept_values(reject, opts):
    cube = make_stack(n=10, shape=(7, 9), seed=12)
    w = np.linspace(0.5, 2.0, 10)
    r = skystack.combine(cube, backend="cpu", threads=1, method="mean", reject=reject,
                         weights=list(w), **opts)
    keep = keep_mask(cube, reject, **opts)
    value, unc, count = reduce_kept(cube, keep, "mean", w)
    np.testing.assert_array_equal(r.count, count)
    np.testing.assert_allclose(r.data, value, rtol=1e-5, atol=1e-4, equal_nan=True)
    unc = unc * r.meta["UNCCLIP"]  # the clip's factor for these weights (clip_efficiency)
    np.testing.assert_allclose(r.uncertainty.array, unc, rtol=1e-4, atol=1e-4, equal_nan=True)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [9, 40, 300])
def test_real_gpu_equals_cpu(n):
    """On a GPU machine: the register and warp kernels give the CPU's kept counts."""
    from skystack.backends.gpu import probe

    usable, reason = probe()
    if not usable:
        pytest.skip(reason)
    cube = make_stack(n=n, shape=(33, 47), seed=n)
    for reject, opts in CASES:
        for method in ("mean", "median"):
            got = skystack.combine(cube, backend="gpu", method=method, reject=reject, **opts)
            cpu = skystack.combine(cube, backend="cpu", method=method, reject=reject, **opts)
            np.testing.assert_array_equal(got.count, cpu.count)
            np.testing.assert_allclose(got.data, cpu.data, rtol=1e-6, equal_nan=True)


def test_uncert_propagated_for_pclip():
    """--uncertainty propagate: frames of known sigma 3 give 3 / sqrt(COUNT) for the mean."""
    from astropy.nddata import CCDData, StdDevUncertainty

    cube = make_stack(n=7, shape=(8, 9), seed=8, nan_fraction=0.0, dead_pixels=False)
    frames = [CCDData(f, unit="adu", uncertainty=StdDevUncertainty(np.full(f.shape, 3.0)))
              for f in cube]
    r = skystack.combine(frames, backend="cpu", reject="pclip", uncertainty="propagate")
    keep = keep_mask(cube, "pclip")
    np.testing.assert_array_equal(r.count, keep.sum(0))
    assert (r.count < 7).any()
    np.testing.assert_allclose(r.uncertainty.array,
                               3.0 / np.sqrt(r.count) * r.meta["UNCCLIP"], rtol=1e-5)
    assert r.meta["UNCCLIP"] > 1.0
