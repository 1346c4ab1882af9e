"""``--uncertainty scatter|model|propagate`` and the effective GAIN/RDNOISE, against simulated
CCD frames of known gain and read noise, numpy propagation and the CCD equation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty, VarianceUncertainty

import skystack
from skystack.cli import main
from skystack.errors import SkystackError

GAIN, RDNOISE = 2.0, 6.0  # e-/ADU, e-
LEVELS = np.array([0.0, 4.0, 40.0, 400.0, 4000.0])  # true signal, ADU (bias-subtracted)
ROWS, COLS_PER_LEVEL = 1024, 8


def _truth():
    return np.repeat(LEVELS, COLS_PER_LEVEL)[None, :].repeat(ROWS, axis=0)


def _ccd_frames(n, seed=0, gain=GAIN, rdnoise=RDNOISE, key="RDNOISE", **extra):
    """n bias-subtracted frames in ADU: Poisson electrons + Gaussian read noise, / gain."""
    rng = np.random.default_rng(seed)
    truth = _truth()
    gains = np.broadcast_to(gain, n)
    frames = []
    for k in range(n):
        g = float(gains[k])
        electrons = rng.poisson(truth * g) + rng.normal(0, rdnoise, truth.shape)
        meta = {"GAIN": g, key: rdnoise, **extra}
        frames.append(CCDData((electrons / g).astype(np.float32), unit="adu", meta=meta))
    return frames, truth


def _per_level(a):
    return [a[:, i * COLS_PER_LEVEL:(i + 1) * COLS_PER_LEVEL] for i in range(len(LEVELS))]


def _check_against_truth(result, truth, tol, max_spread=0.05):
    """The model's UNCERT matches the true scatter of the product at every signal level, and is
    itself nearly noise-free (unlike the scatter between a few frames)."""
    err = np.asarray(result.data, np.float64) - truth
    unc = result.uncertainty.array
    for e, s in zip(_per_level(err), _per_level(unc)):
        true_sd = e.std()
        assert np.mean(s) == pytest.approx(true_sd, rel=tol)
        if max_spread is not None:
            assert np.std(s) / np.mean(s) < max_spread


@pytest.mark.parametrize("method,n,tol", [("mean", 5, 0.03), ("sum", 5, 0.03),
                                          ("median", 15, 0.06)])
def test_model_matches_the_true_scatter(method, n, tol):
    frames, truth = _ccd_frames(n)
    result = skystack.combine(frames, method=method, uncertainty="model", backend="cpu")
    assert result.meta["UNCMETH"] == "model"
    _check_against_truth(result, truth * (n if method == "sum" else 1), tol)


def test_scatter_is_the_noisy_estimate_model_replaces():
    frames, truth = _ccd_frames(5)
    result = skystack.combine(frames, uncertainty="scatter", backend="cpu")
    assert result.meta["UNCMETH"] == "scatter"
    unc = result.uncertainty.array
    assert np.std(unc[:, -8:]) / np.mean(unc[:, -8:]) > 0.2  # chi with 4 dof: ~35 %


def test_model_after_sigclip_uses_the_kept_count():
    frames, truth = _ccd_frames(7, seed=2)
    rng = np.random.default_rng(9)
    hits = rng.random(truth.shape) < 0.02
    frames[3].data[hits] += 20000.0  # cosmic rays: rejected, so COUNT = 6 there
    result = skystack.combine(frames, reject="sigclip", sigma=5, spread="mad",
                              uncertainty="model", backend="cpu")
    assert (result.count[hits] <= 6).all()
    unc = result.uncertainty.array
    bright = truth == 4000
    ratio = (np.median(unc[bright & (result.count == 6)])
             / np.median(unc[bright & (result.count == 7)]))
    assert ratio == pytest.approx(math.sqrt(7 / 6), rel=0.01)
    # COUNT varies, so does UNCERT; a clipped mean of few values is a little noisier than
    # sigma/sqrt(kept) (which values are kept depends on them): 5 %.
    _check_against_truth(result, truth, 0.05, max_spread=None)


def test_model_with_scale_and_weights_matches_the_true_scatter():
    """Frames of different exposure (signal) scaled to the first, weighted by exposure."""
    rng = np.random.default_rng(4)
    truth = _truth()
    frames = []
    for t in (1.0, 2.0, 4.0, 2.0):
        e = rng.poisson(truth * t * GAIN) + rng.normal(0, RDNOISE, truth.shape)
        frames.append(CCDData((e / GAIN).astype(np.float32), unit="adu",
                              meta={"GAIN": GAIN, "RDNOISE": RDNOISE, "EXPTIME": t}))
    result = skystack.combine(frames, scale="exposure", weights="exptime",
                              uncertainty="model", backend="cpu")
    _check_against_truth(result, truth, 0.04)


@pytest.mark.parametrize("method,gain,rdnoise", [
    ("mean", GAIN * 5, RDNOISE * math.sqrt(5)),
    ("sum", GAIN, RDNOISE * math.sqrt(5)),
    ("median", GAIN * 2 * 5 / math.pi, RDNOISE * math.sqrt(2 * 5 / math.pi)),
])
@pytest.mark.parametrize("key", ["RDNOISE", "READNOIS", "RON"])
def test_effective_gain_and_read_noise(method, gain, rdnoise, key):
    frames, _ = _ccd_frames(5, key=key)
    header = skystack.combine(frames, method=method, backend="cpu").meta
    assert header["GAIN"] == pytest.approx(gain, rel=1e-12)
    assert header["RDNOISE"] == pytest.approx(rdnoise, rel=1e-12)
    assert "effective" in header.comments["GAIN"] and "effective" in header.comments["RDNOISE"]


def test_effective_keywords_obey_the_ccd_equation_of_the_product():
    """var(product) = X / GAIN + (RDNOISE / GAIN)**2, measured on the simulated mean."""
    frames, truth = _ccd_frames(5, seed=7)
    result = skystack.combine(frames, backend="cpu")
    g, r = result.meta["GAIN"], result.meta["RDNOISE"]
    for level, e in zip(LEVELS, _per_level(result.data - truth)):
        assert e.std() == pytest.approx(math.sqrt(level / g + (r / g) ** 2), rel=0.03)


def test_mixed_gains_combine_harmonically():
    frames, truth = _ccd_frames(3, gain=[1.0, 2.0, 4.0], seed=3)
    result = skystack.combine(frames, uncertainty="model", backend="cpu")
    assert result.meta["GAIN"] == pytest.approx(9 / (1 + 0.5 + 0.25))
    assert "harmonic" in result.meta.comments["GAIN"]
    _check_against_truth(result, truth, 0.03)


def test_gain_not_copied_when_not_derivable():
    frames, _ = _ccd_frames(3)
    del frames[1].meta["GAIN"]
    header = skystack.combine(frames, backend="cpu").meta
    assert "GAIN" not in header and header["UNCMETH"] == "scatter"
    header = skystack.combine(_ccd_frames(3)[0], method="max", backend="cpu").meta
    assert "GAIN" not in header and "RDNOISE" not in header
    assert any("max" in str(h) for h in header["HISTORY"])
    # A GAIN that is not a number is ignored by default, an error when the model is asked for.
    frames, _ = _ccd_frames(2)
    frames[0].meta["GAIN"] = "N/A"
    assert "GAIN" not in skystack.combine(frames, backend="cpu").meta
    with pytest.raises(SkystackError, match=r"ccddata\[0\]: GAIN = 'N/A' is not a positive"):
        skystack.combine(frames, uncertainty="model")


def test_model_without_gain_is_a_one_line_error(tmp_path, capsys):
    paths = []
    for k in range(3):
        p = tmp_path / f"f{k}.fits"
        fits.PrimaryHDU(np.ones((8, 8), np.float32),
                        header=fits.Header({"GAIN": 2.0} if k != 1 else {})).writeto(p)
        paths.append(str(p))
    with pytest.raises(SkystackError, match="f0.fits: no RDNOISE"):
        skystack.combine(paths, uncertainty="model")
    assert main(["combine", *paths, "-o", str(tmp_path / "o.fits"), "--uncertainty",
                 "model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "f0.fits" in err and "RDNOISE" in err


def test_auto_default(tmp_path):
    frames, _ = _ccd_frames(3)
    assert skystack.combine(frames, backend="cpu").meta["UNCMETH"] == "model"
    # Raw integer data still holds its bias level: the model would count it as signal.
    raw = []
    for k in range(3):
        p = tmp_path / f"raw{k}.fits"
        fits.PrimaryHDU(np.full((8, 8), 1000 + k, np.uint16),
                        header=fits.Header({"GAIN": 2.0, "RDNOISE": 5.0})).writeto(p)
        raw.append(str(p))
    assert skystack.combine(raw, backend="cpu").meta["UNCMETH"] == "scatter"
    bias = _ccd_frames(3, IMAGETYP="Bias Frame")[0]
    assert skystack.combine(bias, backend="cpu").meta["UNCMETH"] == "scatter"
    out = tmp_path / "cli.fits"
    assert main(["combine", *raw, "-o", str(out), "-q", "--uncertainty", "model"]) == 0
    assert fits.getheader(out)["UNCMETH"] == "model"


# -- propagate --------------------------------------------------------------------------------
def _sigma_frames(n=4, shape=(30, 40), seed=1, kind=StdDevUncertainty):
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 5, (n, *shape)).astype(np.float32)
    sigma = rng.uniform(0.5, 3.0, (n, *shape)).astype(np.float32)
    frames = []
    for k in range(n):
        unc = kind(sigma[k] ** 2) if kind is VarianceUncertainty else kind(sigma[k])
        frames.append(CCDData(data[k], unit="electron", uncertainty=unc,
                              meta={"EXPTIME": 1.0 + k}))
    return frames, data, sigma.astype(np.float64)


@pytest.mark.parametrize("kind", [StdDevUncertainty, VarianceUncertainty])
def test_propagate_mean_and_sum_equal_numpy(kind):
    frames, _, sigma = _sigma_frames(kind=kind)
    n = len(frames)
    mean = skystack.combine(frames, uncertainty="propagate", backend="cpu")
    assert mean.meta["UNCMETH"] == "propagate"
    np.testing.assert_allclose(mean.uncertainty.array, np.sqrt((sigma**2).sum(0)) / n,
                               rtol=1e-5)
    total = skystack.combine(frames, method="sum", uncertainty="propagate", backend="cpu")
    np.testing.assert_allclose(total.uncertainty.array, np.sqrt((sigma**2).sum(0)), rtol=1e-5)
    w = np.array([1.0, 2.0, 3.0, 4.0])[:, None, None]
    weighted = skystack.combine(frames, weights="exptime", uncertainty="propagate",
                                backend="cpu")
    np.testing.assert_allclose(weighted.uncertainty.array,
                               np.sqrt((w**2 * sigma**2).sum(0)) / w.sum(), rtol=1e-5)


def test_propagate_from_fits_uncert_extensions_and_stack(tmp_path):
    from astropy.wcs import WCS

    frames, _, sigma = _sigma_frames()
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 30.0]
    w.wcs.crpix = [20.5, 15.5]
    w.wcs.cd = [[-1 / 3600, 0], [0, 1 / 3600]]
    paths = []
    for k, f in enumerate(frames):
        f.wcs = w
        p = tmp_path / f"s{k}.fits"
        f.write(p)
        paths.append(str(p))
    want = np.sqrt((sigma**2).sum(0)) / len(frames)
    out = tmp_path / "c.fits"
    assert main(["combine", *paths, "-o", str(out), "-q", "--uncertainty", "propagate"]) == 0
    np.testing.assert_allclose(fits.getdata(out, "UNCERT"), want, rtol=1e-5)
    # A stack onto the frames' own grid resamples nothing: the same propagation.
    stacked = skystack.stack(paths, reference=paths[0], uncertainty="propagate", backend="cpu")
    np.testing.assert_allclose(stacked.uncertainty.array, want, rtol=1e-5)


def test_propagate_without_uncertainty_is_a_one_line_error(tmp_path):
    frames = [CCDData(np.ones((4, 4)), unit="adu") for _ in range(2)]
    with pytest.raises(SkystackError, match=r"ccddata\[0\]: no uncertainty to propagate"):
        skystack.combine(frames, uncertainty="propagate")


def test_invalid_uncertainty_choice():
    with pytest.raises(SkystackError, match="invalid --uncertainty"):
        skystack.combine([np.ones((3, 3))] * 2, uncertainty="guess")


# -- the same UNCERT on every path ------------------------------------------------------------
def test_gpu_paths_give_the_cpu_uncertainty(tmp_path):
    """The fake device's combine and stack loops (tests/fake_device.py) get the model and the
    propagated uncertainty of the CPU path, bit for bit: both are computed after the combine."""
    from skystack.backends.cpu import CpuBackend
    from skystack.io.inputs import load_frames
    from skystack.pipeline import ArraySink, combine_frames
    from tests.fake_device import FakeDevice, FakeGpuBackend
    from tests.test_gpu_stack import _write_frames

    frames, _, _ = _sigma_frames(n=5, shape=(33, 29))
    for f in frames:
        f.meta.update(GAIN=1.5, RDNOISE=4.0)
    loaded = load_frames(frames)
    for mode in ("model", "propagate"):
        options = skystack.combine_options(method="mean", reject="sigclip", sigma=2.0,
                                           uncertainty=mode)
        got, want = ArraySink(loaded[0].shape), ArraySink(loaded[0].shape)
        combine_frames(loaded, options, FakeGpuBackend(FakeDevice()), [got], max_tile_rows=4)
        combine_frames(loaded, options, CpuBackend(threads=1), [want], max_tile_rows=4)
        np.testing.assert_array_equal(got.uncertainty, want.uncertainty)
        assert not np.array_equal(got.uncertainty, _scatter(loaded, options))

    paths = _write_frames(tmp_path)
    for p in paths:
        fits.setval(p, "GAIN", value=1.5)
        fits.setval(p, "RDNOISE", value=4.0)
    kw = dict(method="mean", reject="sigclip", sigma=2.5, uncertainty="model", max_tile_rows=7)
    got = skystack.stack(paths, backend=FakeGpuBackend(FakeDevice()), **kw)
    want = skystack.stack(paths, backend="cpu", **kw)
    assert got.meta["UNCMETH"] == "model"
    np.testing.assert_array_equal(got.uncertainty.array, want.uncertainty.array)
    np.testing.assert_array_equal(got.data, want.data)


def _scatter(loaded, options):
    import dataclasses

    from skystack.backends.cpu import CpuBackend
    from skystack.pipeline import ArraySink, combine_frames

    sink = ArraySink(loaded[0].shape)
    combine_frames(loaded, dataclasses.replace(options, uncertainty="scatter"),
                   CpuBackend(threads=1), [sink])
    return sink.uncertainty
