"""Hot and low-response pixels against the local level (skystack.night.defects, via the night's
bad-pixel mask): amplifier glow, gradients and vignetting are not defects."""

from __future__ import annotations

import numpy as np
import pytest

from skystack.io.inputs import load_frames
from skystack.night.defects import find_hot_pixels, find_low_response, local_level
from skystack.night.masters import badpix_mask

SHAPE = (256, 256)
GAIN = 1.5  # e-/ADU
READ_NOISE = 2.5  # ADU, of a master made of a few frames


def _glowing_dark(seed: int = 1):
    """A master dark (ADU, bias-subtracted) with a strong amplifier glow in one corner (600 ADU,
    falling off over 30 px), a gradient of 25 ADU across the chip, shot and read noise, and
    known hot pixels: 80 isolated ones, a 2x2 cluster and a hot column segment."""
    rng = np.random.default_rng(seed)
    ny, nx = SHAPE
    yy, xx = np.mgrid[:ny, :nx]
    level = 4.0 + 25.0 * xx / (nx - 1) + 600.0 * np.exp(-np.hypot(yy - (ny - 1), xx) / 30.0)
    dark = level + rng.normal(0.0, 1.0, SHAPE) * np.sqrt(READ_NOISE**2 + level / GAIN)
    hot = np.zeros(SHAPE, bool)
    hot.flat[rng.choice(ny * nx, 80, replace=False)] = True
    hot[40:42, 200:202] = True
    hot[30:130, 100] = True
    dark[hot] += rng.uniform(60.0, 600.0, int(hot.sum()))
    return dark.astype(np.float32), hot, level


def test_glow_and_gradient_are_not_hot():
    dark, hot, level = _glowing_dark()
    frame = load_frames([dark])[0]
    mask, counts = badpix_mask(SHAPE, frame, 60.0, [])
    found = mask.astype(bool)
    # Where the glow's shot noise (up to 20 ADU) hides a 60-ADU hot pixel it cannot be found;
    # everything else is.
    assert found[hot].mean() >= 0.97
    visible = hot & (np.sqrt(READ_NOISE**2 + level / GAIN) * 5 < 50)
    assert found[visible].all()
    assert (found & ~hot).mean() <= 0.002
    # The glowing corner (more than 5x the 5-sigma noise above the median there) stays clean.
    assert (level - np.median(level) > 100).sum() > 500
    assert counts["hot"] == int(found.sum())
    assert 5.0 <= counts["dark_threshold_adu"] < 30.0


def test_bands_give_the_whole_frame_result():
    dark, _, _ = _glowing_dark(2)
    whole, t_whole = find_hot_pixels(lambda r0, r1: dark[r0:r1], SHAPE, band_rows=4096)
    reads = []

    def read(r0, r1):
        reads.append((r0, r1))
        return dark[r0:r1]

    banded, t_banded = find_hot_pixels(read, SHAPE, band_rows=16)
    assert len(reads) == SHAPE[0] // 16 and max(r1 - r0 for r0, r1 in reads) == 16 + 4
    assert np.array_equal(whole, banded) and t_whole == t_banded


def test_vignetted_flat_keeps_its_corners():
    """A fast system's flat: corners at 35 % of the centre, a dust shadow; dead pixels and a
    weak column segment are bad, the vignetted corners are not."""
    rng = np.random.default_rng(4)
    ny, nx = SHAPE
    yy, xx = np.mgrid[:ny, :nx]
    r2 = ((yy - ny / 2) ** 2 + (xx - nx / 2) ** 2) / ((ny / 2) ** 2 + (nx / 2) ** 2)
    flat = (1.0 - 0.65 * r2) * (1.0 - 0.3 * np.exp(-np.hypot(yy - 60, xx - 180) ** 2 / 200.0))
    flat *= 1.0 + rng.normal(0.0, 0.01, SHAPE)
    dead = np.zeros(SHAPE, bool)
    dead.flat[rng.choice(ny * nx, 40, replace=False)] = True
    dead[200:220, 30] = True
    flat[dead] *= 0.3
    flat[5, 5] = np.nan
    dead[5, 5] = True
    flat = (flat / np.nanmedian(flat)).astype(np.float32)
    assert np.nanmin(flat[~dead]) < 0.45  # vignetted corners, below the old absolute 0.5
    mask, counts = badpix_mask(SHAPE, None, float("nan"), [load_frames([flat])[0]])
    found = mask.astype(bool)
    assert found[dead].all()
    assert (found & ~dead).mean() <= 0.002
    assert counts == {"hot": 0, "low": int(found.sum()), "dark_threshold_adu": None,
                      "dark_exptime": pytest.approx(float("nan"), nan_ok=True)}
    # The same through the helper, in bands.
    assert np.array_equal(find_low_response(lambda r0, r1: flat[r0:r1], SHAPE, band_rows=16),
                          found)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 9), (64, 33)])
def test_local_level_is_scipys_separable_median(shape):
    from scipy import ndimage

    rng = np.random.default_rng(sum(shape))
    for data in (rng.normal(0, 1, shape), rng.integers(0, 4, shape)):  # ties too
        data = data.astype(np.float32)
        rows = ndimage.median_filter(data, size=(1, 5), mode="reflect")
        expected = ndimage.median_filter(rows, size=(5, 1), mode="reflect")
        assert np.array_equal(local_level(data), expected)
