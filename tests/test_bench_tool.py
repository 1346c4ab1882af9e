"""`skystack bench`: its metrics against known ground truth, and the command end to end."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from astropy.io import fits

import skystack
from skystack.bench import quality
from skystack.bench.methods import DEFAULT_METHODS, parse_method, parse_methods
from skystack.bench.truth import SyntheticStack, make_stack
from skystack.cli import main
from skystack.errors import SkystackError

SIGMA = 10.0


def noise_stack(n: int, shape=(96, 96), seed: int = 1) -> SyntheticStack:
    """Pure Gaussian noise of known sigma on a flat sky of 100: no stars, no artefacts."""
    rng = np.random.default_rng(seed)
    frames = (100.0 + SIGMA * rng.standard_normal((n, *shape))).astype(np.float32)
    none = np.zeros(shape, bool)
    return SyntheticStack(
        frames=frames, reference=np.full(shape, 100.0), variance=np.full(shape, SIGMA**2 / n),
        star_image=np.zeros(shape), sky=np.full(n, 100.0), fwhm=np.full(n, 3.0),
        star_x=np.zeros(0), star_y=np.zeros(0), star_flux=np.zeros(0),
        star_bright=np.zeros(0, bool), cr_mask=none.copy(), trail_mask=none.copy(),
        artefact_mask=none.copy(), background_mask=~none, frame_sigma=SIGMA, trail_frame=None,
        bright_sky_frames=(), seed=seed)


def _combine(stack, method="mean", **kw):
    return skystack.combine(stack.frames, backend="cpu", **parse_method(method).kwargs, **kw)


def test_noise_ratio_of_mean_and_median_on_pure_noise():
    stack = noise_stack(41)
    mean = quality.truth_quality(stack, _combine(stack, "mean").data)
    median = quality.truth_quality(stack, _combine(stack, "median").data)
    # 96^2 pixels: the ratio's own scatter is ~0.7 %.
    assert mean["noise_ratio"] == pytest.approx(1.0, abs=0.03)
    assert median["noise_ratio"] == pytest.approx(math.sqrt(math.pi / 2), abs=0.05)
    assert abs(mean["bg_bias_sigma"]) < 0.1
    assert mean["cr_rms_sigma"] is None and mean["faint_bias_pct"] is None


def test_cosmic_ray_left_by_mean_removed_by_sigclip():
    stack = noise_stack(21)
    ys, xs = np.array([10, 40, 41, 70]), np.array([12, 50, 50, 33])
    stack.frames[3, ys, xs] += 2000.0  # 200 sigma in one frame
    stack.cr_mask[ys, xs] = True
    stack.artefact_mask[:] = stack.cr_mask
    stack.background_mask &= ~stack.cr_mask
    plain = _combine(stack, "mean")
    clipped = _combine(stack, "sigclip")
    q_plain = quality.truth_quality(stack, plain.data, plain.count)
    q_clip = quality.truth_quality(stack, clipped.data, clipped.count)
    expected = 2000.0 / 21 / (SIGMA / math.sqrt(21))  # the CR spread over N, in sigma/sqrt(N)
    assert q_plain["cr_rms_sigma"] == pytest.approx(expected, rel=0.1)
    assert q_clip["cr_rms_sigma"] < 4.0
    assert q_clip["cr_max_sigma"] < 6.0


def test_perfect_stack_has_no_bias_and_real_stack_small_bias():
    stack = make_stack(6, (128, 128))
    phot = quality.Photometry.for_stack(stack)
    perfect = quality.truth_quality(stack, stack.reference, phot=phot)
    assert perfect["noise_ratio"] == 0.0
    assert perfect["bright_bias_pct"] == 0.0 and perfect["faint_bias_pct"] == 0.0
    assert perfect["cr_rms_sigma"] == 0.0
    median = _combine(stack, "median", zero="median")
    q = quality.truth_quality(stack, median.data, median.count, phot)
    assert abs(q["bright_bias_pct"]) < 2.0
    assert q["good_rejected_pct"] == 0.0
    assert q["cr_rms_sigma"] < 5.0


def test_rejected_fraction_of_clean_stack_matches_gaussian_tails():
    stack = noise_stack(60, (128, 128))
    r = _combine(stack, "mean+sigclip:center=mean,spread=std,sigma=3,maxiters=1")
    pct = quality.truth_quality(stack, r.data, r.count)["good_rejected_pct"]
    # One pass around the sample mean with the sample std (ddof 0): t = (x - mean) / std has
    # t^2 / (N - 1) ~ Beta(1/2, (N - 2) / 2) for Gaussian values, so the expected fraction is a
    # little below the 0.27 % of known mean and sigma. 60 x 128^2 values: ~5 % scatter.
    from scipy.stats import beta

    expected = 100.0 * beta.sf(9.0 / 59, 0.5, 58 / 2)
    assert pct == pytest.approx(expected, rel=0.15)


def test_leave_one_out_metrics_without_truth():
    stack = make_stack(8, (96, 96))
    ctx = quality.prepare_loo(stack.frames)
    assert ctx.outliers.any()
    for spec, lo, hi in (("mean", 0.85, 1.15), ("median", 1.0, 1.35)):
        kw = parse_method(spec).kwargs

        def comb(c, kw=kw):
            return skystack.combine(c, backend="cpu", zero="median", **kw).data

        r = skystack.combine(stack.frames, backend="cpu", zero="median", **kw)
        q = quality.loo_quality(ctx, stack.frames, comb, r.data, r.count)
        assert lo < q["noise_ratio"] < hi
        if spec == "mean":
            assert q["artefact_rms_sigma"] > 10.0
        else:
            assert q["artefact_rms_sigma"] < 3.0


def test_method_specs():
    assert parse_method("sigclip-mad").label == "mean+sigclip(median,mad,3σ)"
    assert parse_method("mean+minmax:nhigh=2").kwargs == {"method": "mean", "reject": "minmax",
                                                           "nlow": 1, "nhigh": 2}
    assert len(parse_methods(["mean", "mean", "median"])) == 2
    for bad in ("avg", "mean+clip", "mean+sigclip:sigma=x", "mean+sigclip:foo=1",
                "mean+sigclip:sigma=-1"):
        with pytest.raises(SkystackError):
            parse_method(bad)


def test_bench_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "--quick", "--size", "64x64", "--frames", "6", "--sweep", "4,8",
            "--repeats", "1", "--peers", "numpy,astropy,swarp", "--sections", "combine",
            "-o", str(out), "-q"]
    assert main(args) == 0
    for name in ("bench.md", "bench.csv", "bench.json", "time_vs_n.png", "noise.png",
                 "rejection.png"):
        assert (out / name).stat().st_size > 0
    rep = json.loads((out / "bench.json").read_text())
    assert rep["schema"] == "skystack-bench/1" and rep["mode"] == "synthetic"
    for key in ("settings", "machine", "data", "backends", "peers", "results", "sweep",
                "memory"):
        assert key in rep
    assert rep["backends"]["cpu"] == "ok"
    assert rep["backends"]["gpu"] == "ok" or rep["backends"]["gpu"].startswith("unavailable")
    sky = [r for r in rep["results"] if r["engine"] == "skystack" and r["backend"] == "cpu"]
    assert len(sky) == len(DEFAULT_METHODS)  # every default method
    for r in sky:
        assert r["seconds"] > 0 and r["mpix_frames_per_s"] > 0 and r["peak_rss_mib"] > 0
        assert r["noise_ratio"] > 0.8 and r["good_rejected_pct"] is not None
    assert any(r["engine"] == "numpy" and r["method"] == "median" for r in rep["results"])
    assert {r["n_frames"] for r in rep["sweep"]} == {4, 8}
    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(rep["results"]) + len(rep["sweep"])
    assert {"main", "sweep"} == {r["kind"] for r in rows}
    assert all(float(r["seconds"]) > 0 for r in rows if not r["error"])
    import matplotlib.image

    for name in ("time_vs_n.png", "noise.png", "rejection.png"):
        img = matplotlib.image.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 100
    assert "## Quality" in (out / "bench.md").read_text()

    # A second run must not replace the results without --overwrite.
    before = (out / "bench.json").read_bytes()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "bench.json").read_bytes() == before


def test_bench_inputs_leave_one_out(tmp_path):
    stack = make_stack(5, (64, 64))
    paths = []
    for k, frame in enumerate(stack.frames):
        p = tmp_path / f"light_{k}.fits"
        fits.writeto(p, frame)
        paths.append(str(p))
    out = tmp_path / "mine"
    assert main(["bench", "--inputs", *paths, "--methods", "mean", "median", "--peers",
                 "numpy", "--sweep", "", "--repeats", "1", "-o", str(out), "-q"]) == 0
    rep = json.loads((out / "bench.json").read_text())
    assert rep["mode"] == "inputs" and rep["data"]["n_frames"] == 5
    assert rep["sweep"] == []
    sky = {r["method"]: r for r in rep["results"] if r["engine"] == "skystack"}
    assert set(sky) == {"mean", "median"}
    assert sky["mean"]["artefact_rms_sigma"] > sky["median"]["artefact_rms_sigma"]
    assert 0.5 < sky["mean"]["noise_ratio"] < 1.5
    assert "faint_bias_pct" not in sky["mean"]


def test_bench_refuses_bad_options(tmp_path, capsys):
    assert main(["bench", "--peers", "iraf", "-o", str(tmp_path / "x")]) == 2
    assert "iraf" in capsys.readouterr().err
    assert main(["bench", "--inputs", str(tmp_path / "missing.fits"), "-o",
                 str(tmp_path / "y")]) == 2
