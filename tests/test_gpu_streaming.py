"""The GPU tile loop (staging raw FITS bytes, streams, events, out-of-memory recovery), run on a
NumPy stand-in device whose queued operations execute lazily (tests/fake_device.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.io import fits

import skystack
from skystack.backends.cpu import CpuBackend
from skystack.io.inputs import load_frames
from skystack.pipeline import ArraySink, combine_frames
from tests.fake_device import FakeDevice, FakeGpuBackend
from tests.reference import keep_mask, make_stack, reduce_kept


def _write_mixed_stack(tmp_path, cube):
    """Frames stored as uint16 (BZERO), int32 with BLANK, float32, float64, with a MASK ext."""
    paths = []
    for k, frame in enumerate(cube):
        p = str(tmp_path / f"f{k}.fits")
        style = k % 4
        if style == 0:
            q = np.nan_to_num(frame, nan=0).round().clip(0, 65535).astype(np.uint16)
            fits.PrimaryHDU(q).writeto(p)           # astropy stores BZERO = 32768
            cube[k] = q
        elif style == 1:
            q = np.nan_to_num(frame, nan=-999).round().astype(np.int32)
            hdu = fits.PrimaryHDU(q)
            hdu.header["BLANK"] = -999
            hdu.writeto(p)
            cube[k] = np.where(q == -999, np.nan, q)
        elif style == 2:
            fits.PrimaryHDU(frame.astype(np.float32)).writeto(p)
        else:
            mask = np.zeros(frame.shape, np.uint8)
            mask[5, :7] = 1
            fits.HDUList([fits.PrimaryHDU(frame.astype(np.float64)),
                          fits.ImageHDU(mask, name="MASK")]).writeto(p)
            cube[k] = np.where(mask.astype(bool), np.nan, frame)
        paths.append(p)
    return paths


def _run(frames, options, backend, **kw):
    sink = ArraySink(frames[0].shape)
    stats = combine_frames(frames, options, backend, [sink], **kw)
    return sink, stats


@pytest.mark.parametrize("method,reject", [("median", "none"), ("mean", "sigclip"),
                                           ("sum", "none"), ("max", "minmax")])
def test_streamed_equals_cpu_and_reference(tmp_path, method, reject):
    cube = make_stack(n=9, shape=(29, 37), seed=3, dead_pixels=False)
    paths = _write_mixed_stack(tmp_path, cube)
    frames = load_frames(paths)
    options = skystack.combine_options(method=method, reject=reject)
    device = FakeDevice()
    gpu = FakeGpuBackend(device)
    got, stats = _run(frames, options, gpu, max_tile_rows=4)
    assert stats.n_tiles == 8
    cpu, _ = _run(frames, options, CpuBackend(threads=1))
    np.testing.assert_array_equal(got.image, cpu.image)
    np.testing.assert_array_equal(got.uncertainty, cpu.uncertainty)
    np.testing.assert_array_equal(got.count, cpu.count)
    keep = keep_mask(cube, reject)
    value, _, count = reduce_kept(cube, keep, method)
    np.testing.assert_array_equal(got.count, count)
    np.testing.assert_allclose(got.image, value, rtol=1e-5, equal_nan=True)


def test_pinned_memory_fits_mem_limit_and_column_tiles(tmp_path):
    cube = make_stack(n=6, shape=(12, 3000), seed=4, dead_pixels=False)
    frames = load_frames(cube)
    options = dataclasses.replace(skystack.combine_options(method="median"),
                                  mem_limit=300 * (2 * 6 * 4 + 24 + 26) + 1)
    device = FakeDevice()
    got, stats = _run(frames, options, FakeGpuBackend(device))
    assert stats.n_tiles > 12  # rows split into column ranges
    assert device.allocated_pinned <= options.mem_limit
    np.testing.assert_array_equal(got.image, np.nanmedian(cube, axis=0).astype(np.float32))


def test_out_of_memory_mid_run_resumes_with_smaller_tiles(tmp_path, caplog):
    cube = make_stack(n=7, shape=(40, 33), seed=5)
    frames = load_frames(cube)
    options = skystack.combine_options(method="mean", reject="sigclip")
    device = FakeDevice(fail_combine_at=4)
    backend = FakeGpuBackend(device)
    with caplog.at_level("WARNING", logger="skystack"):
        got, _ = _run(frames, options, backend, max_tile_rows=5)
    assert backend.last_stats.retries == 1 and device.releases == 1
    assert "out of memory" in caplog.text
    cpu, _ = _run(frames, options, CpuBackend(threads=1))
    np.testing.assert_array_equal(got.image, cpu.image)
    np.testing.assert_array_equal(got.count, cpu.count)


def test_out_of_memory_at_allocation_halves_until_it_fits():
    cube = make_stack(n=5, shape=(64, 64), seed=6, dead_pixels=False)
    frames = load_frames(cube)
    options = skystack.combine_options(method="median")
    device = FakeDevice(free=64 << 20, max_alloc=5 * 4 * 64 * 8)  # blocks of <= 8 rows fit
    backend = FakeGpuBackend(device)
    got, _ = _run(frames, options, backend)
    assert backend.last_stats.retries >= 1
    np.testing.assert_array_equal(got.image, np.nanmedian(cube, axis=0).astype(np.float32))


def test_hopeless_memory_is_a_clear_error():
    frames = load_frames(make_stack(n=5, shape=(64, 64), seed=6))
    options = skystack.combine_options(method="median")
    with pytest.raises(skystack.SkystackError, match="not enough GPU or host memory"):
        _run(frames, options, FakeGpuBackend(FakeDevice(free=1000)))


def test_read_errors_propagate(tmp_path):
    cube = make_stack(n=3, shape=(20, 20), seed=1)
    paths = []
    for k, f in enumerate(cube):
        p = tmp_path / f"f{k}.fits"
        fits.PrimaryHDU(f).writeto(p)
        paths.append(str(p))
    frames = load_frames(paths)
    with open(paths[1], "r+b") as fh:  # truncate after the scan: the read must fail cleanly
        fh.truncate(2880 + 100)
    with pytest.raises(skystack.SkystackError, match="truncated"):
        _run(frames, skystack.combine_options(method="mean"), FakeGpuBackend(FakeDevice()))


@pytest.mark.gpu
def test_real_gpu_streams_mixed_fits_like_the_cpu(tmp_path):
    """On a GPU machine: raw uint16/int32/float files decoded on the device, many tiles."""
    from skystack.backends.gpu import probe

    usable, reason = probe()
    if not usable:
        pytest.skip(reason)
    from skystack.backends.gpu.backend import GpuBackend

    cube = make_stack(n=11, shape=(45, 61), seed=9, dead_pixels=False)
    frames = load_frames(_write_mixed_stack(tmp_path, cube))
    for kw in (dict(method="median"), dict(method="mean", reject="sigclip", spread="mad")):
        options = skystack.combine_options(**kw)
        gpu = GpuBackend()
        got, stats = _run(frames, options, gpu, max_tile_rows=6)
        gpu.close()
        assert stats.n_tiles == 8
        cpu, _ = _run(frames, options, CpuBackend(threads=2))
        np.testing.assert_array_equal(got.count, cpu.count)
        np.testing.assert_allclose(got.image, cpu.image, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(got.uncertainty, cpu.uncertainty, rtol=1e-5, equal_nan=True)
