"""The GPU reprojection code without a GPU: its per-pixel code (kernels/sk_resample.cuh), compiled
for the host by tests/cuda/resample_harness.cu and fed staged tiles packed by the GPU stack loop's
own code, against ``reproject.reproject_interp`` (the reference) and the CPU backend.

The frame is the one of test_reproject_core: 300×400, TAN-SIP, rotated 20°, NaN pixels, a NaN
border column; the output grid is rotated -5°, of another pixel scale, and overlaps it in part.
Compiling reproject.cu for sm_90 (no spills) and with NVRTC is in test_cuda_host.py.

These need ``nvcc``; they skip where it is missing unless SKYSTACK_REQUIRE_NVCC=1 (set by CI).
"""

from __future__ import annotations

import ctypes
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.wcs import WCS

from skystack.backends.gpu.stack_streaming import (
    band_view,
    frame_regions,
    layout_tile,
    pack_tile,
    stack_geometry,
)
from skystack.io.reader import Tile
from skystack.regrid import pixel_area_ratio, pixel_map, resample
from skystack.regrid.pixmap import node_map
from skystack.stacking import Grid
from tests.test_cuda_host import _nvcc, build_host_harness
from tests.test_reproject_core import (
    ARCSEC,
    SHAPE_IN,
    SHAPE_OUT,
    _reproject_rules,
    exact_map,
    make_wcs,
    near_edges,
)

reproject = pytest.importorskip("reproject")

HARNESS = Path(__file__).parent / "cuda" / "resample_harness.cu"
C_LL = ctypes.c_longlong


@pytest.fixture(scope="module")
def rh(tmp_path_factory):
    return build_host_harness(HARNESS,
                              tmp_path_factory.mktemp("resample_harness") / "sk_resample.so")


def _ptr(a: np.ndarray):
    assert a.flags.c_contiguous
    return a.ctypes.data_as(ctypes.c_void_p)


@pytest.fixture(scope="module")
def scene():
    wcs_in = make_wcs(SHAPE_IN, 20.0, [150.1, 2.2])
    wcs_out = make_wcs(SHAPE_OUT, -5.0, [150.1 + 80 * 1.2 * ARCSEC, 2.2 + 60 * 1.2 * ARCSEC],
                       scale_arcsec=1.1, sip=False)
    # A second frame far off to the side: it covers the right part of the grid only.
    wcs_far = make_wcs(SHAPE_IN, 3.0, [150.1 - 300 * 1.2 * ARCSEC, 2.2 + 60 * 1.2 * ARCSEC])
    rng = np.random.default_rng(20240602)
    image = (1000 + 50 * rng.standard_normal(SHAPE_IN)).astype(np.float32)
    image[rng.integers(0, SHAPE_IN[0], 40), rng.integers(0, SHAPE_IN[1], 40)] = np.nan
    image[100:104, 200:207] = np.nan
    image[:, 0] = np.nan
    far = (500 + 20 * rng.standard_normal(SHAPE_IN)).astype(np.float32)
    ref = {order: reproject.reproject_interp((image, wcs_in), wcs_out, SHAPE_OUT, order=order)
           for order in ("bilinear", "nearest-neighbor")}
    x_exact, y_exact = exact_map(wcs_in, wcs_out, SHAPE_OUT)
    grid = Grid(wcs_out, SHAPE_OUT)
    geom = stack_geometry([wcs_in, wcs_far], [SHAPE_IN, SHAPE_IN], grid)
    return dict(wcs_in=wcs_in, wcs_out=wcs_out, wcs_far=wcs_far, images=[image, far], ref=ref,
                x_exact=x_exact, y_exact=y_exact, grid=grid, geom=geom)


def host_reproject(rh, scene, tile: Tile, *, nearest=False, flux=False):
    """The staged tile of both frames (packed as the GPU loop packs it) through the host build
    of reproject_tile: (frames, rows, cols) float32, and the layout."""
    geom = scene["geom"]
    regions = [frame_regions(geom, k, [tile])[0] for k in range(2)]
    layout = layout_tile(geom, tile, regions, nearest=nearest, conserve_flux=flux)
    s = layout.spec
    buf = np.full(s.nbytes, 0xAB, np.uint8)  # poison: gaps must never be read
    pack_tile(buf, geom, layout)
    for k, reg in enumerate(regions):
        if reg is not None:
            band_view(buf, layout, k)[...] = scene["images"][k][reg.r0:reg.r1, reg.c0:reg.c1]
    block = np.full((2, *tile.shape), -12345.0, np.float32)
    rh.sk_host_reproject_staged(_ptr(buf), 2, s.tile_rows, s.tile_cols, s.node_cols, s.pr,
                                s.pc, C_LL(s.off_start_r), C_LL(s.off_start_c),
                                C_LL(s.off_w_r), C_LL(s.off_w_c), s.edge_order, int(nearest),
                                int(flux), _ptr(block))
    assert not (block == -12345.0).any()
    return block, layout


def cpu_reproject(scene, k: int, tile: Tile, method: str, flux: bool) -> np.ndarray:
    """What the CPU stack puts in frame k's plane of the tile (stacking._FrameResampler.fill)."""
    wcs = scene["wcs_in"] if k == 0 else scene["wcs_far"]
    x, y = pixel_map(wcs, scene["wcs_out"], SHAPE_OUT, rows=slice(tile.r0, tile.r1))
    x, y = x[:, tile.c0:tile.c1], y[:, tile.c0:tile.c1]
    values = resample(scene["images"][k], x, y, method)
    if flux:
        values *= pixel_area_ratio(x, y).astype(np.float32)
    return values


WHOLE = Tile(0, SHAPE_OUT[0], 0, SHAPE_OUT[1])


@pytest.mark.parametrize("nearest,order,edges", [(False, "bilinear", "integer"),
                                                 (True, "nearest-neighbor", "half")])
def test_kernel_code_matches_reproject_interp(rh, scene, nearest, order, edges):
    block, _ = host_reproject(rh, scene, WHOLE, nearest=nearest)
    got = block[0]
    ref, ref_fp = scene["ref"][order]
    xe, ye = scene["x_exact"], scene["y_exact"]
    ambiguous = near_edges(xe, SHAPE_IN[1], edges) | near_edges(ye, SHAPE_IN[0], edges)
    both = np.isfinite(got) & np.isfinite(ref) & ~ambiguous
    rel = np.abs(got[both] - ref[both]) / np.abs(ref[both])
    assert rel.max() < 1e-5
    assert not np.any((np.isfinite(got) != (ref_fp > 0)) & ~ambiguous)
    # Meaningful: a partial overlap with holes punched by the input's NaN pixels.
    inside = (xe > 1) & (xe < SHAPE_IN[1] - 2) & (ye > 1) & (ye < SHAPE_IN[0] - 2)
    assert 0.2 < inside.mean() < 0.9
    assert np.sum(inside & ~np.isfinite(got)) > (40 if nearest else 100)


@pytest.mark.parametrize("tile", [WHOLE, Tile(37, 101, 50, 300), Tile(0, 2, 0, 380),
                                  Tile(300, 320, 200, 380), Tile(150, 153, 200, 203)],
                         ids=["whole", "inner", "two-rows", "corner", "3x3"])
@pytest.mark.parametrize("nearest", [False, True], ids=["bilinear", "nearest"])
@pytest.mark.parametrize("flux", [False, True], ids=["", "flux"])
def test_kernel_code_equals_cpu_backend(rh, scene, tile, nearest, flux):
    """Bit for bit the CPU stack's planes: same coordinates, windows, weights and rounding."""
    block, layout = host_reproject(rh, scene, tile, nearest=nearest, flux=flux)
    method = "nearest" if nearest else "bilinear"
    for k in range(2):
        want = cpu_reproject(scene, k, tile, method, flux)
        np.testing.assert_array_equal(block[k], want, err_msg=f"frame {k}")
        if layout.regions[k] is None:
            assert np.isnan(want).all()
    assert np.isfinite(block[0]).any()


def test_far_frame_is_skipped_where_it_cannot_reach(rh, scene):
    """The far frame's band is left out of tiles it cannot cover (its plane is NaN)."""
    tiles = [Tile(r, min(r + 40, SHAPE_OUT[0]), c, c + 95)
             for r in range(0, SHAPE_OUT[0], 40) for c in range(0, SHAPE_OUT[1], 95)]
    regions = frame_regions(scene["geom"], 1, tiles)
    skipped = [t for t, reg in zip(tiles, regions) if reg is None]
    assert 0 < len(skipped) < len(tiles)
    for tile in skipped[:3]:
        block, _ = host_reproject(rh, scene, tile)
        assert np.isnan(block[1]).all()


def test_coordinate_map_is_pixel_map_bit_for_bit(rh, scene):
    for rows in (slice(0, SHAPE_OUT[0]), slice(37, 101), slice(319, 320)):
        nm = node_map(scene["wcs_in"], scene["wcs_out"], SHAPE_OUT, rows=rows)
        want_x, want_y = pixel_map(scene["wcs_in"], scene["wcs_out"], SHAPE_OUT, rows=rows)
        shape = want_x.shape
        x = np.empty(shape)
        y = np.empty(shape)
        start_r = nm.start_r.astype(np.int32)
        start_c = nm.start_c.astype(np.int32)
        rh.sk_host_map(_ptr(start_r), _ptr(start_c), _ptr(nm.w_r), _ptr(nm.w_c), shape[0],
                       shape[1], nm.node_x.shape[1], nm.w_r.shape[1], nm.w_c.shape[1],
                       _ptr(nm.node_x), _ptr(nm.node_y), _ptr(x), _ptr(y))
        np.testing.assert_array_equal(x, want_x)
        np.testing.assert_array_equal(y, want_y)
        err = np.hypot(x - scene["x_exact"][rows], y - scene["y_exact"][rows])
        assert np.nanmax(err) < 1e-6


def test_coordinate_map_with_invalid_nodes(rh, scene):
    """Beyond the horizon of the input's projection nodes are NaN: NaN pixels, as on the CPU."""
    wide = WCS(naxis=2)
    wide.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wide.wcs.crval = [150.1, 2.2]
    wide.wcs.crpix = [60.3, 50.7]
    wide.wcs.cdelt = [-0.6, 0.6]
    wide.wcs.set()
    shape = (110, 120)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nm = node_map(scene["wcs_in"], wide, shape, step=8)
        want_x, want_y = pixel_map(scene["wcs_in"], wide, shape, step=8)
    assert 0.2 < np.isnan(nm.node_x).mean() < 0.9
    x = np.empty(shape)
    y = np.empty(shape)
    rh.sk_host_map(_ptr(nm.start_r.astype(np.int32)), _ptr(nm.start_c.astype(np.int32)),
                   _ptr(nm.w_r), _ptr(nm.w_c), shape[0], shape[1], nm.node_x.shape[1], 4, 4,
                   _ptr(nm.node_x), _ptr(nm.node_y), _ptr(x), _ptr(y))
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)


@pytest.mark.parametrize("shape", [(4, 5), (1, 5), (4, 1), (2, 2), (300, 400)])
def test_edge_and_nan_rules(rh, shape):
    """At the exact rule boundaries: reproject's sampling step (clip + scipy) and the CPU."""
    ny, nx = shape
    rng = np.random.default_rng(4)
    image = rng.uniform(1, 2, shape).astype(np.float32)
    if ny > 1 and nx > 2:
        image[1, 2] = np.nan
    special = np.array([-0.7, -0.5, -0.5000001, -0.2, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.2,
                        np.nextafter(0.5, 0.0), np.nextafter(-0.5, 0.0), np.nan, -np.inf,
                        np.inf])
    cx = np.concatenate([special, [nx - 1.0, nx - 0.75, nx - 0.5, np.nextafter(nx - 0.5, 0.0),
                                   nx - 0.5000001, np.nextafter(nx - 1.0, 0.0)]])
    cy = np.concatenate([special, [ny - 1.0, ny - 0.75, ny - 0.5, np.nextafter(ny - 0.5, 0.0),
                                   ny - 0.5000001, np.nextafter(ny - 1.0, 0.0)]])
    x, y = (np.ascontiguousarray(a.ravel()) for a in np.meshgrid(cx, cy))
    for nearest, order, method in ((0, 1, "bilinear"), (1, 0, "nearest")):
        got = np.empty(x.size, np.float32)
        rh.sk_host_sample(_ptr(image), ny, nx, _ptr(x), _ptr(y), C_LL(x.size), nearest,
                          _ptr(got))
        np.testing.assert_array_equal(got, resample(image, x, y, method), err_msg=method)
        finite = np.isfinite(x) & np.isfinite(y)
        want = _reproject_rules(image, x[finite], y[finite], order)
        np.testing.assert_array_equal(np.isnan(got[finite]), np.isnan(want), err_msg=method)
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[finite][ok], want[ok], rtol=1e-6, err_msg=method)
        assert np.isnan(got[~finite]).all()


def test_coverage_and_expmap(rh):
    rng = np.random.default_rng(5)
    block = rng.normal(size=(7, 13, 17)).astype(np.float32)
    block[rng.random(block.shape) < 0.3] = np.nan
    block[0, 0, :3] = [np.inf, -np.inf, np.nan]
    exptime = np.array([30, 60.5, 0, 12.25, 300, 1e-3, 7], np.float32)
    cov = np.empty(13 * 17, np.int32)
    exp = np.empty(13 * 17, np.float32)
    rh.sk_host_coverage(_ptr(block), 7, C_LL(13 * 17), _ptr(exptime), _ptr(cov), _ptr(exp))
    covered = np.isfinite(block)
    np.testing.assert_array_equal(cov.reshape(13, 17), covered.sum(0))
    want = np.zeros((13, 17), np.float32)
    for k in range(7):  # the CPU stack's float32 sum, frame by frame
        np.add(want, exptime[k], out=want, where=covered[k])
    np.testing.assert_array_equal(exp.reshape(13, 17), want)


def test_device_code_has_no_fused_float64_multiply_add(tmp_path):
    """nvcc and NVRTC fuse a * b + c by default; the coordinates and samples must round each
    product and sum as the CPU does (sk::dmul/dadd), or an ulp could flip a window."""
    from skystack.backends.gpu.kernels import instantiation_unit

    src = tmp_path / "reproject_all.cu"
    src.write_text(instantiation_unit("reproject.cu"))
    ptx = tmp_path / "reproject.ptx"
    proc = subprocess.run([_nvcc(), "-std=c++17", "-arch=sm_90", "-ptx", str(src), "-o",
                           str(ptx)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = ptx.read_text()
    assert "mul.rn.f64" in text and "fma.rn.f64" not in text
