"""The GPU stack loop (resampling on the device into the tile block it combines), run on the NumPy
stand-in device of tests/fake_device.py, against the CPU stack; and, on a GPU machine, the real
CuPy path against reproject + NumPy and the CPU backend.

The stand-in resamples with the CPU code from the staged bytes, so these tests check what the
loop stages (node maps, tables, bands of input rows that hold every window), skips and
downloads, and its ordering; the kernel's own arithmetic is checked against the CPU without a GPU
in test_cuda_reproject.py.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from reproject import reproject_interp

import skystack
from skystack.backends.cpu import CpuBackend
from skystack.backends.gpu.stack_streaming import frame_regions, stack_geometry
from skystack.errors import SkystackError
from skystack.io.inputs import load_frames
from skystack.io.reader import Tile
from skystack.pipeline import ArraySink
from skystack.regrid import pixel_map
from skystack.stacking import Grid, frame_wcs, stack_frames
from tests.fake_device import FakeDevice, FakeGpuBackend
from tests.test_reproject_core import make_wcs
from tests.test_stack import _wcs

SHAPE = (70, 90)
EXPTIMES = [30.0, 45.0, 60.0, 20.0, 90.0]


def _write_frames(folder) -> list[str]:
    """Five dithered, rotated frames of one star field in different storage forms: float32 with
    NaN pixels, uint16 (BZERO), TAN-SIP, float64 with a MASK extension, and one shifted by about
    half a frame, whose footprint misses part of the union grid."""
    rng = np.random.default_rng(11)
    sky_shape = (200, 220)
    sky_wcs = _wcs(sky_shape, 150.0, 30.0, 0.0, 0.8)
    yy, xx = np.mgrid[: sky_shape[0], : sky_shape[1]]
    sky = np.full(sky_shape, 100.0)
    for _ in range(40):
        x0, y0 = rng.uniform(0, sky_shape[1]), rng.uniform(0, sky_shape[0])
        sky += rng.uniform(200, 2000) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 6.0)
    paths = []
    for k in range(5):
        dec_shift = 40.0 if k == 4 else rng.uniform(-4, 4)
        w = _wcs(SHAPE, 150.0 + rng.uniform(-4, 4) / 3600, 30.0 + dec_shift / 3600,
                 rng.uniform(-15, 15), 1.0, sip=(k == 2))
        data, _ = reproject_interp((sky, sky_wcs), w, shape_out=SHAPE, order="bilinear")
        data = (data + rng.normal(0, 3, SHAPE)).astype(np.float32)
        data[rng.random(SHAPE) < 0.01] += 3000  # cosmic rays
        hdr = w.to_header(relax=True)
        hdr["EXPTIME"] = EXPTIMES[k]
        p = folder / f"light_{k}.fits"
        if k == 0:
            data[rng.random(SHAPE) < 0.02] = np.nan
            data[30:33, 40:46] = np.nan
            fits.PrimaryHDU(data, header=hdr).writeto(p)
        elif k == 1:
            q = np.nan_to_num(data).round().clip(0, 65535).astype(np.uint16)
            fits.PrimaryHDU(q, header=hdr).writeto(p)  # astropy stores BZERO = 32768
        elif k == 3:
            mask = np.zeros(SHAPE, np.uint8)
            mask[10:14, :20] = 1
            fits.HDUList([fits.PrimaryHDU(data.astype(np.float64), header=hdr),
                          fits.ImageHDU(mask, name="MASK")]).writeto(p)
        else:
            fits.PrimaryHDU(data, header=hdr).writeto(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return _write_frames(tmp_path_factory.mktemp("gpu_stack"))


def _assert_same(got, want):
    np.testing.assert_array_equal(got.data, want.data)
    np.testing.assert_array_equal(got.uncertainty.array, want.uncertainty.array)
    np.testing.assert_array_equal(got.coverage, want.coverage)
    np.testing.assert_array_equal(got.expmap, want.expmap)
    np.testing.assert_array_equal(got.mask, want.mask)


CASES = [
    dict(method="mean"),
    dict(method="median"),
    dict(method="mean", reject="sigclip", sigma=2.5),
    dict(method="median", interp="nearest"),
    dict(method="mean", reject="sigclip", conserve_flux=True),
]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_gpu_path_stack_equals_cpu_stack(frames, kw):
    """Same tiles (max_tile_rows): image, uncertainty, coverage, EXPMAP and mask bit for bit."""
    device = FakeDevice()
    gpu = FakeGpuBackend(device)
    got = skystack.stack(frames, backend=gpu, max_tile_rows=7, **kw)
    want = skystack.stack(frames, backend="cpu", max_tile_rows=7, **kw)
    assert got.shape == want.shape and gpu.last_stats.n_tiles == -(-got.shape[0] // 7)
    assert device.resamples == gpu.last_stats.n_tiles
    _assert_same(got, want)
    # Meaningful: partial coverage, with the shifted frame absent from some tiles.
    assert got.coverage.max() == 5 and (got.coverage < 5).mean() > 0.2
    assert device.skipped_planes > 0
    np.testing.assert_array_equal(np.unique(got.expmap[got.coverage == 5]), [sum(EXPTIMES)])


def test_device_memory_budget_forces_many_tiles(frames):
    """A small GPU: the plan shrinks tiles until the buffers fit; results do not change."""
    free = 200_000
    device = FakeDevice(free=free)
    gpu = FakeGpuBackend(device)
    got = skystack.stack(frames, backend=gpu, method="median")
    want = skystack.stack(frames, backend="cpu", method="median")
    assert gpu.last_stats.n_tiles >= 20
    assert device.allocated_device <= free * 0.6  # streaming.DEVICE_MEMORY_FRACTION
    _assert_same(got, want)


def test_host_budget_splits_rows_into_column_tiles(frames):
    """A host budget below one output row of buffers: tiles become parts of rows, the pinned
    buffers stay within the budget, and the result is the CPU's."""
    loaded = load_frames(frames)
    wcs_list = [frame_wcs(f) for f in loaded]
    near = skystack.stack(frames, backend="cpu", method="mean").wcs.deepcopy()
    near.wcs.crpix = [near.wcs.crpix[0] + 250, near.wcs.crpix[1] - 20]
    grid = Grid(near, (40, 600))  # wide: most of it outside every frame
    budget = 150_000
    options = dataclasses.replace(skystack.combine_options(method="mean"), mem_limit=budget)
    device = FakeDevice()
    got = ArraySink(grid.shape)
    stats = stack_frames(loaded, grid, options, FakeGpuBackend(device), [got],
                         wcs_list=wcs_list)
    want = ArraySink(grid.shape)
    stack_frames(loaded, grid, skystack.combine_options(method="mean"), CpuBackend(threads=1),
                 [want], wcs_list=wcs_list)
    assert stats.n_tiles >= 2 * grid.shape[0] and stats.tile_shape[1] < grid.shape[1]
    assert device.allocated_pinned <= budget
    assert np.isfinite(want.image).mean() > 0.1
    for name in ("image", "uncertainty", "count", "mask"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    np.testing.assert_array_equal(got.extras["EXPMAP"], want.extras["EXPMAP"])


def test_out_of_memory_mid_run_resumes(frames, caplog):
    device = FakeDevice(fail_combine_at=3)
    with caplog.at_level("WARNING", logger="skystack"):
        got = skystack.stack(frames, backend=FakeGpuBackend(device), method="mean",
                             reject="sigclip", max_tile_rows=7)
    assert device.releases == 1 and "out of memory" in caplog.text
    _assert_same(got, skystack.stack(frames, backend="cpu", method="mean", reject="sigclip",
                                     max_tile_rows=7))


def test_progress_counts_tiles(frames):
    calls = []
    skystack.stack(frames, backend=FakeGpuBackend(FakeDevice()), method="mean",
                   max_tile_rows=20, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] == len(calls)


def test_flux_conservation_refuses_one_row_tiles(frames):
    with pytest.raises(SkystackError, match="conserve-flux"):
        skystack.stack(frames, backend=FakeGpuBackend(FakeDevice()), method="mean",
                       conserve_flux=True, max_tile_rows=1)


def _windows_inside(x, y, shape, region, nearest=False):
    """Whether every pixel that samples the frame reads only pixels of ``region``."""
    ny, nx = shape
    with np.errstate(invalid="ignore"):
        ok = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    if region is None:
        return not ok.any()
    cx = np.clip(x[ok], 0, nx - 1)
    cy = np.clip(y[ok], 0, ny - 1)
    if nearest:
        x0 = x1 = np.floor(cx + 0.5)
        y0 = y1 = np.floor(cy + 0.5)
    else:
        x0 = np.minimum(np.floor(cx), nx - 2)
        y0 = np.minimum(np.floor(cy), ny - 2)
        x1, y1 = x0 + 1, y0 + 1
    return bool((x0 >= region.c0).all() and (x1 < region.c1).all()
                and (y0 >= region.r0).all() and (y1 < region.r1).all())


@pytest.mark.parametrize("rot,scale,sip", [(20.0, 1.1, True), (90.0, 1.0, False),
                                           (-135.0, 3.0, True), (1.0, 0.25, False)])
def test_frame_regions_hold_every_window(rot, scale, sip):
    """The bands read per tile hold every pixel any window of the tile touches (checked with
    the CPU's coordinates), and a frame is skipped only where no pixel reaches it."""
    shape_in = (300, 400)
    wcs_in = make_wcs(shape_in, rot, [150.1, 2.2], scale_arcsec=1.2, sip=sip)
    out_shape = (260, 330)
    # Centred near the frame's east edge: partial overlap at every rotation and scale.
    wcs_out = make_wcs(out_shape, 0.0, [150.1 + 0.0667, 2.2 - 0.01], scale_arcsec=1.2 * scale,
                       sip=False)
    grid = Grid(wcs_out, out_shape)
    geom = stack_geometry([wcs_in], [shape_in], grid)
    tiles = [Tile(r, min(r + 37, out_shape[0]), c, min(c + 150, out_shape[1]))
             for r in range(0, out_shape[0], 37) for c in range(0, out_shape[1], 150)]
    regions = frame_regions(geom, 0, tiles)
    x, y = pixel_map(wcs_in, wcs_out, out_shape)
    read = needed = 0
    for tile, reg in zip(tiles, regions):
        tx = x[tile.r0:tile.r1, tile.c0:tile.c1]
        ty = y[tile.r0:tile.r1, tile.c0:tile.c1]
        assert _windows_inside(tx, ty, shape_in, reg), (tile, reg)
        assert _windows_inside(tx, ty, shape_in, reg, nearest=True), (tile, reg)
        if reg is not None:
            read += reg.shape[0] * reg.shape[1]
            needed += _smallest_box(tx, ty, shape_in)
    assert any(reg is None for reg in regions) and any(reg is not None for reg in regions)
    assert read < 1.5 * needed  # tight: measured 7-27 % more than the smallest boxes


def _smallest_box(x, y, shape) -> int:
    """Pixels of the smallest box holding every bilinear window of these coordinates."""
    ny, nx = shape
    with np.errstate(invalid="ignore"):
        ok = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    if not ok.any():
        return 0
    cy = np.floor(np.clip(y[ok], 0, ny - 1))
    cx = np.floor(np.clip(x[ok], 0, nx - 1))
    return int((min(cy.max() + 2, ny) - cy.min()) * (min(cx.max() + 2, nx) - cx.min()))


@pytest.mark.gpu
def test_real_gpu_stack_matches_reproject_and_cpu(frames):
    """On a GPU machine: resampling in reproject_tile, combine on the device block."""
    from skystack.backends.gpu import probe

    usable, reason = probe()
    if not usable:
        pytest.skip(reason)
    from skystack.backends.gpu.backend import GpuBackend

    for kw in (dict(method="median"), dict(method="mean", reject="sigclip"),
               dict(method="mean", interp="nearest", conserve_flux=True)):
        got = skystack.stack(frames, backend=GpuBackend(), max_tile_rows=7, **kw)
        cpu = skystack.stack(frames, backend="cpu", max_tile_rows=7, **kw)
        np.testing.assert_array_equal(got.coverage, cpu.coverage)
        np.testing.assert_array_equal(got.expmap, cpu.expmap)
        np.testing.assert_allclose(got.data, cpu.data, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(got.uncertainty.array, cpu.uncertainty.array, rtol=1e-5,
                                   equal_nan=True)
    # Against the independent reference: reproject_interp per frame, then NumPy.
    got = skystack.stack(frames, backend=GpuBackend(), method="median")
    cube = []
    for p in frames:
        with fits.open(p) as hl, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = hl[0].data.astype(np.float32)
            if "MASK" in hl:
                data[hl["MASK"].data != 0] = np.nan
            out, _ = reproject_interp((data, WCS(hl[0].header)), got.wcs, shape_out=got.shape,
                                      order="bilinear")
        cube.append(out.astype(np.float32))
    cube = np.array(cube)
    covered = np.isfinite(cube)
    assert (got.coverage != covered.sum(0)).mean() < 1e-3  # only at pixel-edge coordinates
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.nanmedian(cube, axis=0)
    same = got.coverage == covered.sum(0)
    np.testing.assert_allclose(got.data[same], expected[same], rtol=1e-5, atol=1e-3,
                               equal_nan=True)
    np.testing.assert_allclose(got.expmap[same], np.tensordot(EXPTIMES, covered, 1)[same],
                               rtol=1e-6)
