"""`skystack bench --sections resampling,weights`: the metrics against known ground truth, the
tables holding every contestant, and the command end to end."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from skystack.bench.dithered import make_dithered, make_unequal
from skystack.bench.resampling import (
    PEER_RESAMPLERS,
    SKYSTACK_RESAMPLERS,
    ResamplingTruth,
    binned_std,
    resampled_quality,
    run_resampling,
)
from skystack.bench.weighting import WEIGHTINGS, run_weighting, weighted_quality
from skystack.cli import main


@pytest.fixture(scope="module")
def dithered():
    return make_dithered(6, (192, 192), seed=3)


@pytest.fixture(scope="module")
def resampling_run():
    return run_resampling(6, (192, 192), seed=3)


@pytest.fixture(scope="module")
def weighting_run():
    return run_weighting(8, (192, 192), seed=3)


def test_binned_std_matches_numpy_block_means():
    rng = np.random.default_rng(0)
    r = rng.standard_normal((64, 64))
    mask = np.ones_like(r, bool)
    mask[:4, :4] = False  # the first block is left out
    blocks = r.reshape(16, 4, 16, 4).mean(axis=(1, 3)).ravel()[1:]
    assert binned_std(r, mask) == pytest.approx(blocks.std(), rel=1e-12)


def test_resampling_metrics_respond_to_the_truth(dithered):
    ref = ResamplingTruth.for_stack(dithered)
    rng = np.random.default_rng(1)
    white = rng.normal(0.0, dithered.ideal_sigma, dithered.truth.shape)
    ideal = resampled_quality(dithered, dithered.truth + white, ref)
    assert ideal["noise_ratio"] == pytest.approx(1.0, abs=0.05)
    assert ideal["noise_correlation"] == pytest.approx(1.0, abs=0.2)
    assert ideal["flux_ratio"] == pytest.approx(1.0, abs=0.01)
    assert ideal["fwhm_ratio"] == pytest.approx(1.0, abs=0.05)
    # Smoothed (correlated) noise: less noise per pixel, far more in 4x4 blocks than 1/4.
    smooth = resampled_quality(dithered, dithered.truth + uniform_filter(white, 3) * 3, ref)
    assert smooth["noise_correlation"] > 2.0
    # A deliberately wrong flux (stars 5 % faint) shows as a bias; broadened stars as FWHM.
    faint = resampled_quality(dithered, dithered.truth - 0.05 * dithered.star_image + white,
                              ref)
    assert faint["flux_ratio"] == pytest.approx(0.95, abs=0.01)
    assert faint["flux_bias_pct"] == pytest.approx(-5.0, abs=1.0)
    blurred = dithered.truth - dithered.star_image + uniform_filter(dithered.star_image, 3)
    assert resampled_quality(dithered, blurred + white, ref)["fwhm_ratio"] > 1.1


def test_resampling_table_holds_every_method_and_ranks_them(resampling_run):
    rows = resampling_run["rows"]
    sky = {r["method"]: r for r in rows if r["engine"] == "skystack"}
    assert set(sky) == {r.label for r in SKYSTACK_RESAMPLERS}
    for r in rows:
        assert "error" not in r, r
        assert r["seconds"] > 0 and r["time_ratio"] > 0
        assert r["flux_ratio"] == pytest.approx(1.0, abs=0.02)
    for p in PEER_RESAMPLERS:  # present or said to be absent
        assert any(r["engine"] == p.engine for r in rows) or \
            resampling_run["peers"][p.engine] != "ok"
    # Nearest neighbour moves each value by up to half a pixel: broader than Lanczos-3, but its
    # noise is not smoothed (about sigma / sqrt(N), uncorrelated); bilinear smooths the most.
    assert sky["nearest"]["fwhm_ratio"] > sky["lanczos3"]["fwhm_ratio"]
    assert sky["bilinear"]["fwhm_ratio"] > sky["lanczos3"]["fwhm_ratio"]
    assert sky["nearest"]["noise_ratio"] == pytest.approx(1.0, abs=0.1)
    assert sky["bilinear"]["noise_ratio"] < sky["lanczos3"]["noise_ratio"] < \
        sky["nearest"]["noise_ratio"]
    assert sky["bilinear"]["noise_correlation"] > sky["nearest"]["noise_correlation"] + 0.2
    # A smaller drop keeps more resolution and less smoothing than pixfrac 1.
    assert sky["drizzle pixfrac=0.6"]["noise_ratio"] > sky["drizzle pixfrac=1"]["noise_ratio"]
    # Independent references: reproject's bilinear and the drizzle package give skystack's
    # numbers (same algorithm), when installed.
    peers = {(r["engine"], r["method"]): r for r in rows if r["engine"] != "skystack"}
    if ("reproject", "bilinear") in peers:
        assert peers[("reproject", "bilinear")]["noise_ratio"] == \
            pytest.approx(sky["bilinear"]["noise_ratio"], rel=0.01)
    if ("drizzle", "drizzle pixfrac=1") in peers:
        assert peers[("drizzle", "drizzle pixfrac=1")]["noise_ratio"] == \
            pytest.approx(sky["drizzle pixfrac=1"]["noise_ratio"], rel=0.01)


def test_unequal_stack_optimal_sigma_is_the_inverse_variance_mean():
    us = make_unequal(4, (64, 64), seed=5)
    # Scaled to frame 0, frame k has noise sigma_k / a_k; the inverse-variance mean of those.
    s = us.frame_sigma / us.flux_scale
    assert us.optimal_sigma == pytest.approx(1.0 / math.sqrt(np.sum(1.0 / s**2)))
    assert us.equal_sigma > us.optimal_sigma
    assert us.flux_scale[0] == 1.0 and us.transparency[0] == 1.0


def test_weighting_table_ranks_weights_against_the_optimum(weighting_run):
    rows = {r["method"]: r for r in weighting_run["rows"]}
    assert set(rows) == {w.label for w in WEIGHTINGS}
    for r in rows.values():
        assert "error" not in r, r
        assert r["seconds"] > 0
    # Inverse-variance weights from the measured background noise reach the optimum on frames
    # of unequal noise; equal weights do not (their theoretical excess is in the data).
    assert rows["bgnoise"]["noise_vs_optimal"] == pytest.approx(1.0, abs=0.05)
    assert rows["none"]["noise_vs_optimal"] > rows["bgnoise"]["noise_vs_optimal"] + 0.05
    assert rows["none"]["noise_vs_optimal"] == pytest.approx(
        weighting_run["data"]["equal_vs_optimal"], rel=0.06)
    # Star scaling keeps the flux; scaling by the sky median does not when transparency varies.
    assert rows["bgnoise"]["flux_ratio"] == pytest.approx(1.0, abs=0.02)
    assert rows["bgnoise, scale median"]["flux_ratio"] < 0.8


def test_weighted_quality_sees_a_wrong_flux():
    us = make_unequal(4, (128, 128), seed=5)
    rng = np.random.default_rng(2)
    noise = rng.normal(0.0, us.optimal_sigma, us.reference.shape)
    right = weighted_quality(us, us.reference + noise)
    wrong = weighted_quality(us, us.reference - 0.1 * us.star_image + noise)
    assert right["flux_ratio"] == pytest.approx(1.0, abs=0.01)
    assert right["noise_vs_optimal"] == pytest.approx(1.0, abs=0.05)
    assert wrong["flux_ratio"] == pytest.approx(0.9, abs=0.01)


def test_bench_sections_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--sections", "resampling,weights", "--frames", "4", "--size",
                 "128x128", "--repeats", "1", "-o", str(out), "-q"]) == 0
    rep = json.loads((out / "bench.json").read_text())
    assert rep["settings"]["sections"] == ["resampling", "weights"]
    assert rep["results"] == [] and "resampling" in rep and "weights" in rep
    md = (out / "bench.md").read_text()
    assert "## Resampling" in md and "## Frame weights" in md and "## Quality" not in md
    for label in ("lanczos4", "drizzle pixfrac=0.6", "psf-signal"):
        assert f"| {label} |" in md
    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    kinds = [r["kind"] for r in rows]
    assert kinds.count("resampling") == len(rep["resampling"]["rows"])
    assert kinds.count("weights") == len(WEIGHTINGS)
    assert all(float(r["seconds"]) > 0 for r in rows if r["kind"] == "resampling")
    assert main(["bench", "--sections", "combine,warp", "-o", str(tmp_path / "x")]) == 2
    assert "warp" in capsys.readouterr().err
    assert main(["bench", "--sections", "resampling", "--inputs", "a.fits", "-o",
                 str(tmp_path / "y")]) == 2
