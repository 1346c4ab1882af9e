"""skystack.night.inspect: calibration statistics recovered against the synthetic night's truth."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std

from skystack.demo_data import write_sample_night
from skystack.night import inspect as insp
from skystack.night.inspect import format_inspect_table, inspect_frames
from skystack.night.scan import scan

SHAPE = (256, 256)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return write_sample_night(tmp_path_factory.mktemp("night"), filters=("B", "V"), n_bias=5,
                              n_dark=3, n_flat=3, n_light=0, shape=SHAPE)


@pytest.fixture(scope="module")
def report(night):
    return inspect_frames(night.directory)


def test_groups(report, night):
    assert [len(b.files) for b in report.biases] == [5]
    assert [(len(d.files), d.exptime) for d in report.darks] == [(3, 60.0)]
    assert sorted((f.filter, len(f.files)) for f in report.flats) == [("B", 3), ("V", 3)]
    assert report.darks[0].bias == report.biases[0].key
    assert all(f.bias == report.biases[0].key and f.dark == report.darks[0].key
               for f in report.flats)
    assert report.scan.skipped == [] and report.plots == []


def test_bias_level_and_read_noise(report, night):
    truth = night.truth
    b = report.biases[0]
    # Each frame's median is the bias level plus the median of the column pattern, within the
    # noise of a median of 65536 pixels (~0.03 ADU) and the 1-ADU quantisation.
    expected_level = truth["bias_level"] + float(np.median(truth["bias_columns"]))
    assert len(b.levels) == 5
    for level in (*b.levels, b.level):
        assert abs(level - expected_level) <= 1.0
    # Two pairs of 65536 pixels: the estimate's own scatter is ~0.4 %.
    assert b.n_pairs == 2
    assert b.read_noise_adu == pytest.approx(truth["read_noise"], rel=0.03)
    assert b.gain == truth["gain"]
    assert b.read_noise_e == pytest.approx(truth["read_noise"] * truth["gain"], rel=0.03)


def test_read_noise_independent_of_fixed_pattern(tmp_path):
    """A strong column pattern common to all biases does not enter the read noise."""
    rng = np.random.default_rng(5)
    pattern = 1000 + 50 * rng.standard_normal(128)[None, :]
    for i in range(2):
        data = pattern + rng.normal(0, 3.0, (128, 128))
        h = fits.Header([("IMAGETYP", "BIAS")])
        fits.PrimaryHDU(data.astype(np.float32), header=h).writeto(tmp_path / f"b{i}.fits")
    b = inspect_frames(tmp_path).biases[0]
    assert b.read_noise_adu == pytest.approx(3.0, rel=0.03)
    assert math.isnan(b.read_noise_e) and math.isnan(b.gain)  # no GAIN keyword


def test_dark_current(report, night):
    truth = night.truth
    d = report.darks[0]
    hot = np.zeros(SHAPE, bool)
    hot[tuple(truth["hot_pixels"].T)] = True
    # The typical pixel's current: the median over 32x32 blocks of the truth's block means (hot
    # pixels left out), which the glowing corner (40x the current) hardly moves; the mean over
    # the chip is 40 % higher.
    current = np.where(hot, np.nan, truth["dark_current"] / truth["gain"])  # ADU/s
    blocks = current.reshape(8, 32, 8, 32).transpose(0, 2, 1, 3).reshape(64, -1)
    expected = float(np.median(np.nanmean(blocks, axis=1)))
    assert float(np.nanmean(current)) > 1.3 * expected
    # Per-pixel noise of (master dark - master bias) is ~5 ADU: the median of 64 block means
    # is good to ~0.03 ADU, i.e. ~0.6 % of the 4 ADU accumulated in 60 s; noise on the glow's
    # tail moves the median of the blocks up by ~1.5 %.
    assert d.rate_adu_s == pytest.approx(expected, rel=0.03)
    assert d.rate_e_s == pytest.approx(expected * truth["gain"], rel=0.03)
    assert d.levels and all(abs(v - 1004) < 3 for v in d.levels)


def test_hot_pixels(report, night):
    truth = {tuple(p) for p in night.truth["hot_pixels"].tolist()}
    d = report.darks[0]
    found = {tuple(p) for p in d.hot_pixels.tolist()}
    assert d.n_hot == len(found) == len(d.hot_pixels)
    assert len(truth) == 66
    # The faintest hot pixels (10x the mean current) gain 40 ADU in 60 s, 8 sigma of the map.
    assert len(found & truth) >= 0.95 * len(truth)
    assert len(found - truth) <= 2
    assert d.hot_threshold_adu_s == pytest.approx(d.hot_threshold_adu / 60.0)
    assert 0.1 < d.hot_threshold_adu_s < 1.0 / night.truth["gain"]


def test_flat_uniformity(report, night):
    truth = night.truth
    for f in report.flats:
        flat = truth["flat"][f.filter]
        # Robust RMS: the truth's, plus ~0.4 % of photon noise in quadrature.
        expected_rms = 100 * float(mad_std(flat))
        assert math.hypot(expected_rms, 0.25) - 0.15 < f.rms_percent < math.hypot(
            expected_rms, 0.6) + 0.15
        b = SHAPE[0] // 10
        corners = [flat[:b, :b], flat[:b, -b:], flat[-b:, :b], flat[-b:, -b:]]
        c0 = (SHAPE[0] - b) // 2
        expected_ratio = np.mean([np.median(c) for c in corners]) / np.median(
            flat[c0:c0 + b, c0:c0 + b])
        assert f.corner_ratio == pytest.approx(expected_ratio, abs=0.01)
        assert f.corner_ratio < 0.95  # the vignetting is seen
        # Level: the median of each raw flat is bias + the lamp level of the truth.
        levels = truth["flat_level"][f.filter]
        assert f.levels == pytest.approx(levels + truth["bias_level"], abs=30)
        assert f.signal == pytest.approx(np.median(levels), rel=0.01)
        # Pixel-to-pixel: PRNU 0.5 % plus photon noise ~0.4 %, no dust at that scale.
        assert 0.4 < f.pixel_rms_percent < 1.0
        assert f.n_low == 0


def test_dead_pixels_in_flats(tmp_path, night):
    for p in [*night.bias, *night.flat["V"]]:
        shutil.copy(p, tmp_path)
    dead = np.array([[3, 4], [100, 200], [255, 0], [128, 129], [60, 61]])
    for p in night.flat["V"]:
        with fits.open(tmp_path / p.name, mode="update") as hdul:
            data = hdul[0].data.astype(np.float64)
            bias = night.truth["bias_level"]
            data[tuple(dead.T)] = bias + 0.3 * (data[tuple(dead.T)] - bias)
            hdul[0].data = data.astype(np.uint16)
    (f,) = inspect_frames(tmp_path).flats
    assert sorted(map(tuple, f.low_pixels.tolist())) == sorted(map(tuple, dead.tolist()))
    assert f.n_low == 5


def test_no_bias(tmp_path, night):
    for p in night.dark:
        shutil.copy(p, tmp_path)
    (d,) = inspect_frames(tmp_path).darks
    assert d.bias is None and math.isnan(d.rate_adu_s)
    assert any("no bias" in n for n in d.notes)
    truth = {tuple(p) for p in night.truth["hot_pixels"].tolist()}
    found = {tuple(p) for p in d.hot_pixels.tolist()}
    assert len(found & truth) >= 0.9 * len(truth) and len(found - truth) <= 3
    assert "no bias" in format_inspect_table(inspect_frames(tmp_path))


def test_unreadable_frame_is_a_note(tmp_path, night):
    for p in night.bias:
        shutil.copy(p, tmp_path)
    cut = tmp_path / "bias_cut.fits"
    cut.write_bytes(night.bias[0].read_bytes()[: 2880 + 1000])  # header + a bit of data
    (tmp_path / "junk.fits").write_text("junk")
    result = scan(tmp_path)
    assert len(result.by_role("bias")) == 6  # the header of the cut file is fine
    report = inspect_frames(result)
    (b,) = report.biases
    assert len(b.files) == 5 and str(cut) not in b.files
    assert any(n.startswith(f"{cut}: cannot read pixels") for n in b.notes)
    assert b.read_noise_adu == pytest.approx(night.truth["read_noise"], rel=0.03)
    table = format_inspect_table(report)
    assert "bias_cut.fits: cannot read pixels" in table and "junk.fits" in table


def test_single_bias_has_no_read_noise(tmp_path, night):
    shutil.copy(night.bias[0], tmp_path)
    (b,) = inspect_frames(tmp_path).biases
    assert math.isnan(b.read_noise_adu) and b.n_pairs == 0 and b.notes


def test_median_combine_in_row_blocks(night, monkeypatch):
    """Small blocks (many passes) give the plain per-pixel median of the frames."""
    frames = scan(night.dark).frames
    monkeypatch.setattr(insp, "BLOCK_BYTES", 3 * SHAPE[1] * 4 * 7)  # 7 rows per block
    bias = np.full(SHAPE, 3.5, np.float32)
    got = insp._median_combine(frames, bias=bias)
    stack = np.stack([fits.getdata(p).astype(np.float64) for p in night.dark])
    np.testing.assert_allclose(got, np.median(stack, axis=0) - 3.5, rtol=1e-6)


def test_plots(tmp_path, night):
    import matplotlib
    import matplotlib.image as mpimg

    backend = matplotlib.get_backend()
    plot_dir = tmp_path / "plots"
    report = inspect_frames(night.directory, plot_dir=plot_dir)
    names = sorted(os.listdir(plot_dir))
    assert names == ["bias.png", "dark_60s.png", "flat_B.png", "flat_V.png"]
    assert sorted(report.plots) == sorted(str(plot_dir / n) for n in names)
    for n in names:
        img = mpimg.imread(plot_dir / n)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    assert matplotlib.get_backend() == backend  # no global backend switch


def test_format_inspect_table(report):
    table = format_inspect_table(report)
    b, d = report.biases[0], report.darks[0]
    assert f"{b.read_noise_adu:.3f}" in table and f"{b.read_noise_e:.3f}" in table
    assert f"{d.rate_adu_s:.4g}" in table
    dark_row = next(line for line in table.splitlines() if line.startswith("60 s"))
    assert str(d.n_hot) in dark_row.split()
    for f in report.flats:
        row = next(line for line in table.splitlines() if line.startswith(f"{f.filter} bin"))
        assert f"{f.rms_percent:.2f}" in row and f"{f.corner_ratio:.3f}" in row


def test_flats_get_the_dark_the_night_would_subtract(tmp_path):
    """One dark rule for night and inspect (masters.choose_dark): flats of 2 s with darks of
    10 s and 100 s get the dark current of the longest dark (the best measured rate, scaled
    to 2 s), not of the closest one."""
    from skystack.night.masters import choose_dark

    sample = write_sample_night(tmp_path / "raw", filters=("V",), n_bias=3, n_dark=2,
                                dark_exptimes=(10.0, 100.0), n_flat=2, n_light=0,
                                shape=(64, 64))
    report = inspect_frames(sample.directory)
    darks = {d.exptime: d.key for d in report.darks}
    assert sorted(darks) == [10.0, 100.0]
    (flat,) = report.flats
    assert flat.dark == choose_dark(darks, 2.0, bias_subtracted=True)[0] == darks[100.0]
