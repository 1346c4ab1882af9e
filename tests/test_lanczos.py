"""Clamped Lanczos-3/-4 resampling (skystack.regrid.interp.lanczos3/4) on the CPU, in the
host-compiled CUDA code and in the (fake-device) GPU stack loop.

No peer in the environment has a Lanczos resampler (scipy.ndimage and reproject offer splines,
bilinear and nearest only), so the references are an independent NumPy implementation written
here straight from the definition (``numpy.sinc``, explicit loops) and known truth: a band-limited
signal shifted by a sub-pixel offset, constants, total flux, and a sharp star that must not ring.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits

import skystack
from skystack.backends.gpu.stack_streaming import (
    band_view,
    frame_regions,
    layout_tile,
    pack_tile,
    stack_geometry,
)
from skystack.errors import SkystackError
from skystack.io.reader import Tile
from skystack.regrid import pixel_area_ratio, pixel_map, resample
from skystack.regrid.interp import reach
from skystack.stacking import Grid
from tests.fake_device import FakeDevice, FakeGpuBackend
from tests.test_cuda_reproject import C_LL, _ptr, rh, scene  # noqa: F401  (fixtures)
from tests.test_gpu_stack import _write_frames
from tests.test_reproject_core import SHAPE_OUT, make_wcs

METHODS = {"lanczos3": 3, "lanczos4": 4}
INTERP_CODE = {"bilinear": 0, "nearest": 1, "lanczos3": 2, "lanczos4": 3}


def lanczos_reference(image: np.ndarray, x: np.ndarray, y: np.ndarray, a: int,
                      clamp: bool = True) -> np.ndarray:
    """Straight from the definition, one position at a time: snap as reproject (outside
    [-0.5, n - 0.5) is NaN), the bilinear 2x2 window x0 = min(floor(c), n - 2) (NaN there gives
    NaN; its range is the clamp), taps x0 - a + 1 .. x0 + a with weights
    sinc(d) sinc(d / a) normalised per axis, taps outside the image or NaN dropped and the
    2-D weights renormalised over the rest."""
    ny, nx = image.shape
    out = np.full(x.shape, np.nan)
    for idx in np.ndindex(x.shape):
        cx, cy = float(x[idx]), float(y[idx])
        if not (-0.5 <= cx < nx - 0.5 and -0.5 <= cy < ny - 0.5):
            continue
        cx = min(max(cx, 0.0), nx - 1.0)
        cy = min(max(cy, 0.0), ny - 1.0)
        x0 = min(math.floor(cx), nx - 2) if nx > 1 else 0
        y0 = min(math.floor(cy), ny - 2) if ny > 1 else 0
        window = image[y0:y0 + 2, x0:x0 + 2].astype(np.float64)
        if np.isnan(window).any():
            continue
        taps_x = np.arange(x0 - a + 1, x0 + a + 1)
        taps_y = np.arange(y0 - a + 1, y0 + a + 1)
        wx = np.sinc(cx - taps_x) * np.sinc((cx - taps_x) / a)
        wy = np.sinc(cy - taps_y) * np.sinc((cy - taps_y) / a)
        wx /= wx.sum()
        wy /= wy.sum()
        num = den = 0.0
        for j, w_j in zip(taps_y, wy):
            for i, w_i in zip(taps_x, wx):
                if 0 <= j < ny and 0 <= i < nx and not np.isnan(image[j, i]):
                    num += w_j * w_i * float(image[j, i])
                    den += w_j * w_i
        value = num / den
        if clamp:
            value = min(max(value, window.min()), window.max())
        out[idx] = value
    return out


def _positions(rng, shape, n):
    """Random positions over and just beyond the image, some on pixel centres and edges."""
    ny, nx = shape
    x = rng.uniform(-1.0, nx, n)
    y = rng.uniform(-1.0, ny, n)
    x[:20] = np.round(x[:20])              # pixel centres
    y[20:40] = rng.choice([-0.5, -0.25, 0, ny - 1, ny - 0.75, ny - 0.5], 20)
    x[40:50] = np.nan
    return x.reshape(1, -1), y.reshape(1, -1)


@pytest.mark.parametrize("method", METHODS)
def test_matches_numpy_reference_with_edges_and_nan(method):
    rng = np.random.default_rng(1)
    image = rng.normal(100, 20, (23, 31)).astype(np.float32)
    image[5, 7] = np.nan
    image[15:17, 20:22] = np.nan
    image[:, 30] = np.nan
    x, y = _positions(rng, image.shape, 1500)
    got = resample(image, x, y, method)
    want = lanczos_reference(image, x, y, METHODS[method])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-4, equal_nan=True)
    # Meaningful: edges, the NaN holes and clamping all occur among these positions.
    assert np.isnan(got).sum() > 50 and np.isfinite(got).sum() > 1000
    assert not np.allclose(want, lanczos_reference(image, x, y, METHODS[method], clamp=False),
                           equal_nan=True)


@pytest.mark.parametrize("method", METHODS)
def test_single_row_and_column_images(method):
    image = np.arange(7, dtype=np.float32).reshape(1, 7)
    x = np.array([[0.0, 2.3, 5.9, 6.4]])
    y = np.array([[0.0, -0.4, 0.3, 0.0]])
    got = resample(image, x, y, method)
    np.testing.assert_allclose(got, lanczos_reference(image, x, y, METHODS[method]), rtol=1e-6,
                               atol=1e-12)
    got_t = resample(image.T.copy(), y, x, method)
    np.testing.assert_allclose(got_t, got, rtol=1e-6)


def _wave(x, y):
    return np.sin(2 * np.pi * 0.06 * x + 0.3) * np.cos(2 * np.pi * 0.045 * y - 0.2)


@pytest.mark.parametrize("method", METHODS)
def test_band_limited_shift_beats_bilinear(method):
    """A low-frequency sinusoid sampled on the pixels and resampled at a sub-pixel shift: the
    Lanczos error is a small fraction of bilinear's (RMS; at the wave's extrema the clamp to
    the 2x2 window costs up to bilinear's error, so the maximum error is only bounded by it)."""
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float64)
    image = _wave(xx, yy).astype(np.float32)
    x, y = xx + 0.37, yy - 0.41
    truth = _wave(x, y)
    inner = (slice(6, -6), slice(6, -6))
    err = {m: resample(image, x, y, m)[inner] - truth[inner] for m in ("bilinear", method)}
    rms = {m: float(np.sqrt(np.mean(e ** 2))) for m, e in err.items()}
    assert rms[method] < 0.25 * rms["bilinear"], rms
    assert np.abs(err[method]).max() <= np.abs(err["bilinear"]).max() + 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_identity_and_constant(method):
    rng = np.random.default_rng(2)
    image = rng.normal(size=(20, 24)).astype(np.float32)
    yy, xx = np.mgrid[0:20, 0:24].astype(np.float64)
    np.testing.assert_array_equal(resample(image, xx, yy, method), image)
    const = np.full((20, 24), 7.25, np.float32)
    const[3, 3] = np.nan  # holes and edges: the renormalised weights keep a constant exact
    got = resample(const, xx * 0.93 + 0.7, yy * 1.04 - 0.3, method)
    finite = np.isfinite(got)
    assert finite.mean() > 0.85
    np.testing.assert_array_equal(got[finite], np.float32(7.25))


def _star(sigma: float, shape=(25, 25), centre=(12.3, 11.6), sky=10.0, flux=1000.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    r2 = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2
    return (sky + flux * np.exp(-r2 / (2 * sigma ** 2)) / (2 * np.pi * sigma ** 2)
            ).astype(np.float32), xx, yy


@pytest.mark.parametrize("method", METHODS)
def test_clamp_stops_ringing_next_to_a_star(method):
    """An undersampled star (FWHM 1.4 px) on a flat sky, shifted by a fraction of a pixel:
    nothing drops below the sky, while the same kernel without the clamp rings well below it
    (so the test can fail)."""
    image, xx, yy = _star(0.6)
    x, y = xx + 0.5, yy + 0.3
    got = resample(image, x, y, method)
    assert np.nanmin(got) >= 10.0
    unclamped = lanczos_reference(image, x, y, METHODS[method], clamp=False)
    assert np.nanmin(unclamped) < 10.0 - 5.0


@pytest.mark.parametrize("method", METHODS)
def test_clamp_flux_bias_of_sampled_stars_is_small(method):
    """The clamp lifts negative lobes, so it biases the flux of undersampled stars (measured:
    a few per cent at FWHM 1.4 px); at FWHM 2.8 px the bias stays below 1 %."""
    for dx, dy in ((0.5, 0.3), (0.21, 0.77)):
        image, xx, yy = _star(1.2)
        got = resample(image, xx + dx, yy + dy, method)
        flux = np.nansum(got[4:-4, 4:-4] - 10.0)
        assert abs(flux / 1000.0 - 1.0) < 0.01, flux


@pytest.mark.parametrize("method", METHODS)
def test_flux_conserving_resampling_keeps_total_flux(method):
    """A smooth source resampled onto a grid of 0.8x smaller pixels, shifted and rotated, with
    the pixel-area ratio: its total flux is kept (to 0.1 %)."""
    yy, xx = np.mgrid[0:80, 0:80].astype(np.float64)
    image = (5000 * np.exp(-((xx - 41.3) ** 2 + (yy - 38.6) ** 2) / (2 * 3.0 ** 2))
             ).astype(np.float32)
    ro, co = np.mgrid[0:100, 0:100].astype(np.float64)
    th = np.deg2rad(7.0)
    x = 0.8 * (np.cos(th) * co - np.sin(th) * ro) + 12.3
    y = 0.8 * (np.sin(th) * co + np.cos(th) * ro) - 1.7
    values = resample(image, x, y, method) * pixel_area_ratio(x, y).astype(np.float32)
    assert np.isclose(np.nansum(values), image.sum(), rtol=1e-3)
    assert np.isfinite(values[30:70, 30:70]).all()


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return _write_frames(tmp_path_factory.mktemp("lanczos_stack"))


@pytest.mark.parametrize("method", METHODS)
def test_stack_tiles_equal_whole_image(frames, method):
    """The CPU stack reads bands of rows per output tile, with the Lanczos margin: small tiles
    give exactly the one-tile result (a band missing a row raises instead)."""
    small = skystack.stack(frames, backend="cpu", method="mean", interp=method, max_tile_rows=5)
    whole = skystack.stack(frames, backend="cpu", method="mean", interp=method)
    np.testing.assert_array_equal(small.data, whole.data)
    np.testing.assert_array_equal(small.coverage, whole.coverage)
    bilinear = skystack.stack(frames, backend="cpu", method="mean")
    np.testing.assert_array_equal(whole.coverage, bilinear.coverage)  # same footprint
    assert not np.array_equal(whole.data, bilinear.data, equal_nan=True)


def test_band_missing_rows_raises():
    from skystack.regrid.interp import lanczos3_band

    image = np.arange(200, dtype=np.float32).reshape(20, 10)
    x = np.array([[4.5]])
    y = np.array([[10.5]])
    out = np.empty((1, 1), np.float32)
    lanczos3_band(image[7:15], 7, 20, x, y, out)  # rows 8..13 needed: present
    np.testing.assert_allclose(out, resample(image, x, y, "lanczos3"))
    with pytest.raises(ValueError, match="lacks rows"):
        lanczos3_band(image[9:15], 9, 20, x, y, out)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(SkystackError, match="lanczos5"):
        reach("lanczos5")
    with pytest.raises(SkystackError, match="interp"):
        skystack.stack(["nothing.fits"], interp="lanczos5")


@pytest.mark.parametrize("kw", [dict(interp="lanczos3"), dict(interp="lanczos4"),
                                dict(interp="lanczos3", conserve_flux=True, reject="sigclip")],
                         ids=["lanczos3", "lanczos4", "lanczos3-flux"])
def test_fake_gpu_stack_equals_cpu_stack(frames, kw):
    """The GPU stack loop stages bands with the Lanczos margin (on the NumPy stand-in device,
    which samples the staged band only): the CPU stack's result bit for bit."""
    device = FakeDevice()
    gpu = FakeGpuBackend(device)
    got = skystack.stack(frames, backend=gpu, method="mean", max_tile_rows=7, **kw)
    want = skystack.stack(frames, backend="cpu", method="mean", max_tile_rows=7, **kw)
    np.testing.assert_array_equal(got.data, want.data)
    np.testing.assert_array_equal(got.coverage, want.coverage)
    np.testing.assert_array_equal(got.uncertainty.array, want.uncertainty.array)
    assert device.resamples == gpu.last_stats.n_tiles > 1


@pytest.mark.parametrize("method", METHODS)
def test_frame_regions_hold_every_lanczos_tap(method):
    a = METHODS[method]
    shape_in = (120, 150)
    wcs_in = make_wcs(shape_in, 25.0, [150.1, 2.2], scale_arcsec=1.2, sip=True)
    out_shape = (110, 130)
    wcs_out = make_wcs(out_shape, 0.0, [150.1 + 0.025, 2.2 - 0.004], scale_arcsec=1.3, sip=False)
    geom = stack_geometry([wcs_in], [shape_in], Grid(wcs_out, out_shape))
    tiles = [Tile(r, min(r + 23, out_shape[0]), c, min(c + 60, out_shape[1]))
             for r in range(0, out_shape[0], 23) for c in range(0, out_shape[1], 60)]
    x, y = pixel_map(wcs_in, wcs_out, out_shape)
    for margin, must_hold in ((reach(method), True), (1, False)):
        held = []
        for tile, reg in zip(tiles, frame_regions(geom, 0, tiles, margin)):
            tx, ty = x[tile.r0:tile.r1, tile.c0:tile.c1], y[tile.r0:tile.r1, tile.c0:tile.c1]
            ok = (tx >= -0.5) & (tx < shape_in[1] - 0.5) & (ty >= -0.5) & (ty < shape_in[0] - 0.5)
            if reg is None:
                assert not ok.any()
                continue
            x0 = np.minimum(np.floor(np.clip(tx[ok], 0, None)), shape_in[1] - 2)
            y0 = np.minimum(np.floor(np.clip(ty[ok], 0, None)), shape_in[0] - 2)
            held.append(bool((np.maximum(x0 - a + 1, 0) >= reg.c0).all()
                             and (np.minimum(x0 + a, shape_in[1] - 1) < reg.c1).all()
                             and (np.maximum(y0 - a + 1, 0) >= reg.r0).all()
                             and (np.minimum(y0 + a, shape_in[0] - 1) < reg.r1).all()))
        assert all(held) if must_hold else not all(held)


# -- the CUDA code compiled for the host ---------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_cuda_sample_equals_numba(rh, method):  # noqa: F811
    rng = np.random.default_rng(3)
    image = rng.normal(100, 20, (37, 45)).astype(np.float32)
    image[10, 11] = np.nan
    image[20:23, 30:32] = np.nan
    x, y = _positions(rng, image.shape, 4000)
    x, y = np.ascontiguousarray(x.ravel()), np.ascontiguousarray(y.ravel())
    got = np.empty(x.size, np.float32)
    rh.sk_host_sample(_ptr(image), 37, 45, _ptr(x), _ptr(y), C_LL(x.size), INTERP_CODE[method],
                      _ptr(got))
    want = resample(image, x, y, method)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("tile", [Tile(0, SHAPE_OUT[0], 0, SHAPE_OUT[1]), Tile(37, 101, 50, 300),
                                  Tile(150, 153, 200, 203)], ids=["whole", "inner", "3x3"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("flux", [False, True], ids=["", "flux"])
def test_cuda_staged_tile_equals_cpu_stack_planes(rh, scene, tile, method, flux):  # noqa: F811
    """reproject_tile<LANCZOS*, FLUX> on a staged tile (bands with the Lanczos margin) against
    the CPU's planes: the same to float32 rounding (the sines come from different code)."""
    geom = scene["geom"]
    regions = [frame_regions(geom, k, [tile], reach(method))[0] for k in range(2)]
    layout = layout_tile(geom, tile, regions, interp=method, conserve_flux=flux)
    s = layout.spec
    buf = np.full(s.nbytes, 0xAB, np.uint8)
    pack_tile(buf, geom, layout)
    for k, reg in enumerate(regions):
        if reg is not None:
            band_view(buf, layout, k)[...] = scene["images"][k][reg.r0:reg.r1, reg.c0:reg.c1]
    block = np.full((2, *tile.shape), -12345.0, np.float32)
    rh.sk_host_reproject_staged(_ptr(buf), 2, s.tile_rows, s.tile_cols, s.node_cols, s.pr,
                                s.pc, C_LL(s.off_start_r), C_LL(s.off_start_c),
                                C_LL(s.off_w_r), C_LL(s.off_w_c), s.edge_order,
                                INTERP_CODE[method], int(flux), _ptr(block))
    for k in range(2):
        wcs = scene["wcs_in"] if k == 0 else scene["wcs_far"]
        x, y = pixel_map(wcs, scene["wcs_out"], SHAPE_OUT, rows=slice(tile.r0, tile.r1))
        x, y = x[:, tile.c0:tile.c1], y[:, tile.c0:tile.c1]
        want = resample(scene["images"][k], x, y, method)
        if flux:
            want *= pixel_area_ratio(x, y).astype(np.float32)
        np.testing.assert_array_equal(np.isnan(block[k]), np.isnan(want))
        np.testing.assert_allclose(block[k], want, rtol=1e-6, equal_nan=True)
    assert np.isfinite(block[0]).any()


@pytest.mark.parametrize("a", [3, 4])
def test_cpu_weight_table_is_within_3e8_of_the_definition(a):
    """The CPU interpolates its weights in a table (1/4096 px steps): against sinc(d) sinc(d/a)
    normalised, at random t and at the ends (exact there)."""
    from skystack.regrid.interp import _table_weights, _weight_table

    table = _weight_table(a)
    w = np.empty(2 * a)
    rng = np.random.default_rng(4)
    worst = 0.0
    for t in np.concatenate([[0.0, 1.0], rng.uniform(0, 1, 400)]):
        _table_weights(t, a, table, w)
        d = t + (a - 1 - np.arange(2 * a))
        want = np.sinc(d) * np.sinc(d / a)
        want /= want.sum()
        worst = max(worst, float(np.abs(w - want).max()))
        if t in (0.0, 1.0):
            np.testing.assert_array_equal(w, want.round(12))
    assert 1e-10 < worst < 3e-8


def test_night_stacks_with_lanczos(tmp_path):
    """`night --interp lanczos3`: the stack is resampled with it (INTERP card), the choice is
    part of the stack's recipe (a bilinear rerun is refused as stale, not silently kept), the
    default leaves existing fingerprints alone, and a bad name is a clear error."""
    from skystack.night.run import run_night
    from tests.tiny_night import write_flat, write_lights

    raw = tmp_path / "raw"
    raw.mkdir()
    write_flat(raw, "flat", "V")
    write_lights(raw, "light", "M1", "V")
    out = tmp_path / "out"
    first = run_night(raw, out, backend="cpu", previews=False, interp="lanczos3")
    stack = next(p.path for p in first.products if p.kind == "stack")
    assert fits.getheader(stack)["INTERP"] == "lanczos3"
    with pytest.raises(SkystackError, match="stacks"):
        run_night(raw, out, backend="cpu", previews=False, interp="bilinear")
    with pytest.raises(SkystackError, match="lanczos5"):
        run_night(raw, tmp_path / "out2", backend="cpu", previews=False, interp="lanczos5")
    again = run_night(raw, out, backend="cpu", previews=False, overwrite=True)
    assert fits.getheader(stack)["INTERP"] == "bilinear"
    assert {p.kind: p.status for p in again.products}["stack"] == "built"


def test_cli_reproject_with_lanczos4_and_flux(tmp_path, frames):
    """`skystack reproject --interp lanczos4 --conserve-flux`: the API's reproject applies the
    kernel (checked against resample + pixel_area_ratio on the same pixel map)."""
    from skystack.cli import main

    src, ref = frames[0], frames[2]
    out = tmp_path / "r.fits"
    assert main(["reproject", src, "--reference", ref, "--interp", "lanczos4",
                 "--conserve-flux", "-o", str(out), "--quiet"]) == 0
    got = fits.getdata(out)
    assert fits.getheader(out)["INTERP"] == "lanczos4"
    from astropy.wcs import WCS

    x, y = pixel_map(WCS(fits.getheader(src)), WCS(fits.getheader(ref)), got.shape)
    want = resample(fits.getdata(src), x, y, "lanczos4") \
        * pixel_area_ratio(x, y).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    assert np.isfinite(got).mean() > 0.5


@pytest.mark.gpu
def test_real_gpu_lanczos_stack_matches_cpu(frames):
    """On a GPU machine: reproject_tile<LANCZOS3/4> against the CPU stack."""
    from skystack.backends.gpu import probe

    usable, reason = probe()
    if not usable:
        pytest.skip(reason)
    from skystack.backends.gpu.backend import GpuBackend

    for kw in (dict(interp="lanczos3"), dict(interp="lanczos4", conserve_flux=True)):
        got = skystack.stack(frames, backend=GpuBackend(), method="mean", max_tile_rows=7, **kw)
        cpu = skystack.stack(frames, backend="cpu", method="mean", max_tile_rows=7, **kw)
        np.testing.assert_array_equal(got.coverage, cpu.coverage)
        np.testing.assert_allclose(got.data, cpu.data, rtol=1e-6, equal_nan=True)
