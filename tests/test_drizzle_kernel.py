"""skystack's Numba drizzle kernels (skystack.regrid.drizzle_kernel) against the drizzle
package's own C kernel on the same pixel maps, and the parallel passes' promise that chunks of
one pass never write the same output pixel."""

import numpy as np
import pytest
from drizzle.resample import Drizzle
from hypothesis import given, settings
from hypothesis import strategies as st

from skystack.regrid.drizzle_kernel import (
    KERNEL_CODES,
    chunk_passes,
    chunk_row_reach,
    drizzle_chunks,
    row_extents,
)


def _affine_map(shape, angle_deg, scale, shift, out_shape):
    """Output x, y of every input pixel centre: rotated, scaled (output pixels per input
    pixel side) and shifted, centred in an output array of ``out_shape``."""
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    x -= (cols - 1) / 2
    y -= (rows - 1) / 2
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    mx = scale * (c * x - s * y) + (out_shape[1] - 1) / 2 + shift[0]
    my = scale * (s * x + c * y) + (out_shape[0] - 1) / 2 + shift[1]
    return mx, my


def _ours(data, weight, mx, my, kernel, pixfrac, ratio, out_shape, chunks=None):
    planes = [np.zeros(out_shape) for _ in range(5)]
    if chunks is None:
        chunks = np.array([[0, data.shape[0], 0, data.shape[1]]], np.int64)
    drizzle_chunks(data, weight, mx, my, chunks, KERNEL_CODES[kernel], pixfrac, ratio, 0.0,
                   *planes)
    return planes


def _package(data, weight, mx, my, kernel, pixfrac, ratio, out_shape):
    drz = Drizzle(kernel=kernel, out_shape=out_shape, disable_ctx=True)
    drz.add_image(np.where(np.isfinite(data), data, 0).astype(np.float32), 1.0,
                  np.dstack([mx, my]), data2=np.ones_like(data), weight_map=weight,
                  pixfrac=pixfrac, pixel_scale_ratio=ratio, in_units="cps")
    return drz.out_img, drz.out_wht, drz.out_img2[0]


def _compare(kernel, pixfrac, angle, scale, shift, seed=0, holes=True):
    rng = np.random.default_rng(seed)
    shape = (23, 29)
    data = rng.normal(100, 10, shape).astype(np.float32)
    weight = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if holes:
        data[5:8, 4:9] = np.nan  # masked pixels: the package gets weight 0 there
        weight[np.isnan(data)] = 0
        weight[15, 20] = 0
    # The output is large enough to hold every drop: the package's scanner loses nothing.
    side = int(np.ceil(scale * 40)) + 12
    out_shape = (side, side + 3)
    mx, my = _affine_map(shape, angle, scale, shift, out_shape)
    ratio = 1.0 / scale  # output pixel side in input pixels
    sw, swv, sw2, _, fw = _ours(data, weight, mx, my, kernel, pixfrac, ratio, out_shape)
    img, wht, var = _package(data, weight, mx, my, kernel, pixfrac, ratio, out_shape)
    covered = wht > 0
    assert covered.sum() > 50
    np.testing.assert_array_equal(sw > 0, covered)
    np.testing.assert_allclose(sw, wht, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fw, sw)  # one frame: its own weight is all the weight
    with np.errstate(all="ignore"):
        np.testing.assert_allclose((swv / sw)[covered], img[covered], rtol=1e-5)
        np.testing.assert_allclose((sw2 / sw ** 2)[covered], var[covered], rtol=1e-4)


@pytest.mark.parametrize("kernel", ["square", "turbo", "point"])
@pytest.mark.parametrize("pixfrac", [1.0, 0.6, 0.25])
@pytest.mark.parametrize("angle, scale", [(0.0, 1.0), (1.3, 1.0), (37.0, 1.0), (90.0, 1.0),
                                          (-12.0, 2.0), (5.0, 0.5)])
def test_kernels_match_the_drizzle_package(kernel, pixfrac, angle, scale):
    _compare(kernel, pixfrac, angle, scale, (0.37, -0.21))


@settings(max_examples=40, deadline=None)
@given(kernel=st.sampled_from(["square", "turbo", "point"]),
       pixfrac=st.floats(0.1, 1.0),
       angle=st.floats(-180, 180),
       scale=st.floats(0.4, 2.5),
       sx=st.floats(-0.5, 0.5), sy=st.floats(-0.5, 0.5),
       seed=st.integers(0, 1000))
def test_kernels_match_the_drizzle_package_on_random_maps(kernel, pixfrac, angle, scale, sx, sy,
                                                         seed):
    _compare(kernel, pixfrac, angle, scale, (sx, sy), seed)


def test_whole_pixel_shift_pours_each_value_into_one_pixel():
    # pixfrac 1, no rotation, integer shift: every drop is exactly one output pixel.
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    mx, my = _affine_map((3, 4), 0.0, 1.0, (0.0, 0.0), (5, 6))
    sw, swv, sw2, swdd, _ = _ours(data, np.ones_like(data), mx, my, "square", 1.0, 1.0, (5, 6))
    inner = (slice(1, 4), slice(1, 5))
    np.testing.assert_allclose(sw[inner], 1.0, rtol=1e-12)
    np.testing.assert_allclose(swv[inner], data, rtol=1e-6)
    assert sw.sum() == pytest.approx(12.0, rel=1e-12)
    np.testing.assert_allclose(swdd[inner], data.astype(float) ** 2, rtol=1e-6)


def test_nan_positions_drop_only_their_pixels():
    data = np.ones((10, 10), np.float32)
    mx, my = _affine_map((10, 10), 3.0, 1.0, (0.2, 0.1), (16, 16))
    mx[4, 6] = np.nan
    sw, *_ = _ours(data, np.ones_like(data), mx, my, "point", 1.0, 1.0, (16, 16))
    assert sw.sum() == pytest.approx(99.0)


@pytest.mark.parametrize("angle", [0.0, 0.8, 30.0, 45.0, 90.0, 135.0])
@pytest.mark.parametrize("kernel, pixfrac, scale", [("square", 1.0, 1.0), ("turbo", 0.7, 1.0),
                                                    ("square", 0.8, 2.0), ("square", 1.0, 0.5)])
def test_chunks_of_a_pass_never_write_the_same_output_pixel(angle, kernel, pixfrac, scale):
    rng = np.random.default_rng(1)
    shape = (70, 90)
    data = rng.normal(5, 1, shape).astype(np.float32)
    side = int(scale * 120) + 10
    out_shape = (side, side)
    mx, my = _affine_map(shape, angle, scale, (0.3, 0.4), out_shape)
    # A band of the output: drops beyond its rows are left out, not wrapped.
    band = (slice(side // 4, 3 * side // 4), slice(None))
    my_band = my - band[0].start
    band_shape = (band[0].stop - band[0].start, side)
    pfo = pixfrac * scale / 2 if kernel == "turbo" else 0.0
    for chunks in (np.array([[r, min(70, r + 8), 0, 90] for r in range(0, 70, 8)]),
                   np.array([[0, 70, c, min(90, c + 8)] for c in range(0, 90, 8)])):
        chunks = chunks.astype(np.int64)
        reach = chunk_row_reach(my_band, chunks, 1.0 + pfo)
        written = []
        for c in range(len(chunks)):
            planes = _ours(data, np.ones_like(data), mx, my_band, kernel, pixfrac, 1 / scale,
                           band_shape, chunks[c:c + 1])
            rows = np.flatnonzero(planes[0].any(axis=1))
            if rows.size:  # every row a chunk writes lies in its bound
                assert reach[c, 0] <= rows[0] and rows[-1] <= reach[c, 1]
            written.append(planes[0] != 0)
        passes = chunk_passes(reach)
        live = [c for c in range(len(chunks)) if reach[c, 0] <= reach[c, 1]]
        assert sorted(np.concatenate(passes).tolist()) == live
        assert not any(written[c].any() for c in range(len(chunks)) if c not in live)
        for members in passes:
            overlap = np.sum([written[c] for c in members], axis=0)
            assert overlap.max(initial=0) <= 1
        # The passes together give the serial sums.
        whole = _ours(data, np.ones_like(data), mx, my_band, kernel, pixfrac, 1 / scale,
                      band_shape)
        parts = [np.zeros(band_shape) for _ in range(5)]
        for members in passes:
            drizzle_chunks(data, np.ones_like(data), mx, my_band, chunks[members],
                           KERNEL_CODES[kernel], pixfrac, 1 / scale, 0.0, *parts)
        np.testing.assert_allclose(parts[0], whole[0], rtol=1e-12, atol=1e-12)


def test_interval_colouring_uses_the_fewest_passes():
    reach = np.array([[0, 4], [3, 8], [5, 9], [10, 12], [1, 0], [9, 11]], np.int64)
    passes = chunk_passes(reach)
    assert len(passes) == 2  # at most two ranges overlap at any row
    assert 4 not in np.concatenate(passes)  # the empty range is never run
    for members in passes:
        spans = sorted(reach[m].tolist() for m in members)
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))


def test_row_extents_and_area_sample():
    mx, my = _affine_map((40, 50), 20.0, 1.5, (0, 0), (100, 100))
    my[7] = np.nan
    lo, hi, areas = row_extents(mx, my, stride=4)
    valid = np.arange(40) != 7
    np.testing.assert_allclose(lo[valid], my[valid].min(axis=1))
    np.testing.assert_allclose(hi[valid], my[valid].max(axis=1))
    assert lo[7] == np.inf and hi[7] == -np.inf
    np.testing.assert_allclose(areas, 1.5 ** 2, rtol=1e-9)
