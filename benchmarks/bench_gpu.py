"""GPU benchmark: ceilings, combine kernels on resident tiles, and the streamed end-to-end stack.

Run on a GPU machine (one process, one run)::

    python benchmarks/bench_gpu.py [--out benchmarks/results] [--e2e-gb 24]
                                   [--quick | --session | --dry-run] [--stem NAME]

``--session`` sizes everything to fit the lent machine's window (N in {5, 25, 100, 1000}, 4 GB
streamed; ``benchmarks/gpu/session.sh`` runs it), ``--quick`` checks the script on small sizes,
``--dry-run`` runs without a GPU: the CPU rows at tiny sizes, every GPU row marked skipped.

Measures, with CUDA events after a warm-up (median of repeats; random data, never zeros; the
count output is poisoned before each run and checked to be fully written):

* ceilings: device-to-device copy bandwidth (bytes read + written per second) and pinned
  host-to-device and device-to-host bandwidths;
* every combine kernel (``KERNEL_CASES``: mean, sum, median, two sigma clips, minmax and
  percentile rejection, and issue 18's winsor, linfit, pctclip, esd, ccdclip and pclip; sky +
  ~2 % outliers) for N in {5, 9, 16, 25, 32, 64, 200, 1000} on a
  frame-major block resident on the GPU. Bytes moved = 4 N + 12 per pixel (read the stack once,
  write image, uncertainty, count); ``fraction_of_ceiling`` = achieved / device copy bandwidth.
  The peers on the same resident data: ``cupy_median`` (``cupy.median`` along axis 0),
  ``torch_median`` and ``torch_quantile_median`` (shared through DLPack), each with its largest
  difference from skystack's median; and the CPU backend (all cores) on a slice;
* ``end_to_end``: uint16 FITS files (BZERO = 32768, as cameras write them) streamed from disk
  through ``skystack.combine_to_file(..., backend=<GpuBackend>)`` with sigma clipping, with the
  device budget capped below the stack size so that it streams; compared with the pinned
  host-to-device bandwidth (for the bytes shipped) and with just reading the same tiles
  (``read_only``); and ``end_to_end_cpu`` vs ``end_to_end_gpu`` on the same subset of frames;
* ``reproject_bilinear``, ``reproject_nearest``, ``reproject_bilinear_flux``,
  ``reproject_lanczos3``, ``reproject_lanczos4``: the
  ``reproject_tile`` kernel (kernels/reproject.cu) on one staged tile resident on the GPU:
  ``bench_reproject.py``'s scene (n² TAN-SIP frame rotated 20° onto an n² TAN grid rotated -5°,
  about 70 % overlap), staged exactly as the stack loop stages it. Bytes moved = the staged
  input read (the frame's band of pixels, node maps, tables) + the float32 output written; the
  output is poisoned before every run and checked to be fully written, and a band of rows is
  compared with the CPU backend (``cpu_mismatches``: pixels not bit-identical;
  ``cpu_max_rel_diff``: the largest relative difference, expected ~1e-7 for Lanczos, whose
  weights come from a table on the CPU and from polynomials on the GPU); the peer
  ``dfreproject_bilinear`` (PyTorch, on the GPU) on the same frame and grid, timed from host
  array to host array against skystack's host staging + kernel;
* ``stack_end_to_end_gpu`` vs ``stack_end_to_end_cpu``: ``skystack.stack_to_file`` of dithered,
  rotated uint16 frames with WCS (mean + sigma clipping) on each backend; bytes = the input
  files' pixels; the two outputs are compared.

Writes ``<out>/gpu-<device>-<date>.json`` ({device, date, commit, ceilings, benchmarks: [{name,
n, shape, seconds, gb_per_s, fraction_of_ceiling}], notes}) and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
N_VALUES = [5, 9, 16, 25, 32, 64, 200, 1000]
SESSION_N_VALUES = [5, 25, 100, 1000]  # --session: the lent machine's 10-minute window
KERNEL_CASES = {
    "sum": dict(method="sum"),
    "minmax_mean": dict(method="mean", reject="minmax", nlow=1, nhigh=1),
    "percentile_mean": dict(method="mean", reject="percentile", plow=10.0, phigh=10.0),
    "mean": dict(method="mean"),
    "median": dict(method="median"),
    "sigclip_median_mad": dict(method="mean", reject="sigclip", center="median", spread="mad",
                               sigma=3.0, maxiters=5),
    "sigclip_mean_std": dict(method="mean", reject="sigclip", center="mean", spread="std",
                             sigma=3.0, maxiters=5),
    # Issue 18's rejections (goal: >= 50 % of the copy ceiling, like the others).
    "winsor_mean": dict(method="mean", reject="winsor"),
    "linfit_mean": dict(method="mean", reject="linfit"),
    "pctclip_mean": dict(method="mean", reject="pctclip"),
    "esd_mean": dict(method="mean", reject="esd"),
    # make_block's values are 1000 ADU with sigma 10 ADU: gain 10 e-/ADU and 10 e- of read
    # noise model sigma = sqrt(1 + 1000 / 10) = 10.05 ADU.
    "ccdclip_mean": dict(method="mean", reject="ccdclip", gain=10.0, rdnoise=10.0),
    "pclip_mean": dict(method="mean", reject="pclip"),
}


def cuda_seconds(fn, repeats: int = 5, before=None) -> float:
    """Median seconds of ``fn`` on the current stream (CUDA events), after one warm-up call;
    ``before`` (not timed) runs before each call, e.g. to poison outputs."""
    import cupy as cp

    if before is not None:
        before()
    fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)


# Every row made so far and the ceilings once measured: what is written if the session's time
# cap stops the run (SIGTERM from session.sh's timeout) before the end.
_COLLECTED: list[dict] = []
_CEILINGS: dict = {}


class _CutShort(Exception):
    """SIGTERM arrived: write what was measured."""


def _on_sigterm(signum, frame):
    raise _CutShort


def row(name, n, shape, seconds, nbytes, ceiling=None, **extra):
    gbps = nbytes / seconds / 1e9
    r = {"name": name, "n": n, "shape": list(shape), "seconds": seconds, "gb_per_s": gbps,
         "fraction_of_ceiling": (gbps / ceiling) if ceiling else None}
    r.update(extra)
    _COLLECTED.append(r)
    print(f"{name:>22} n={n:<5} {str(tuple(shape)):>16} {seconds * 1e3:10.3f} ms "
          f"{gbps:9.1f} GB/s" + (f"  {gbps / ceiling:6.1%} of ceiling" if ceiling else ""),
          flush=True)
    return r


def ceilings(nbytes: int) -> dict:
    """Device copy bandwidth (bytes read + written per second) and pinned host-to-device and
    device-to-host bandwidths, GB/s."""
    import cupy as cp
    import cupyx

    a = cp.random.random(nbytes // 4, dtype=cp.float32)
    b = cp.empty_like(a)
    copy_s = cuda_seconds(partial(b.__setitem__, Ellipsis, a))
    host = cupyx.empty_pinned(a.shape, np.float32)
    host[...] = 1.5
    stream = cp.cuda.get_current_stream()

    def h2d():
        cp.cuda.runtime.memcpyAsync(b.data.ptr, host.ctypes.data, a.nbytes, 1, stream.ptr)

    def d2h():
        cp.cuda.runtime.memcpyAsync(host.ctypes.data, b.data.ptr, a.nbytes, 2, stream.ptr)

    h2d_s = cuda_seconds(h2d)
    d2h_s = cuda_seconds(d2h)
    return {"device_copy_gb_per_s": 2 * nbytes / copy_s / 1e9,
            "pinned_h2d_gb_per_s": nbytes / h2d_s / 1e9,
            "pinned_d2h_gb_per_s": nbytes / d2h_s / 1e9}


def skipped(name: str, reason: str, **extra) -> dict:
    """A row for a measurement that did not run here (``reason`` says why)."""
    r = {"name": name, "n": None, "shape": None, "seconds": None, "gb_per_s": None,
         "fraction_of_ceiling": None, "skipped": reason}
    r.update(extra)
    _COLLECTED.append(r)
    print(f"{name:>22} skipped: {reason}", flush=True)
    return r


def make_block(n: int, npix: int, seed: int = 1):
    import cupy as cp

    rng = cp.random.default_rng(seed)
    block = rng.standard_normal((n, npix), dtype=cp.float32) * 10 + 1000
    hits = rng.random((n, npix), dtype=cp.float32) < 0.02
    block[hits] += 5000
    return block


def kernel_benchmarks(ceiling: float, target_bytes: int, n_values) -> list[dict]:
    import cupy as cp

    import skystack
    from skystack.backends.cpu import CpuBackend
    from skystack.backends.gpu.device import CupyDevice
    from skystack.backends.gpu.kernels import choose_combine_kernel

    cp.get_default_memory_pool().free_all_blocks()  # the ceilings' buffers
    dev = CupyDevice()
    cpu = CpuBackend()
    rows = []
    for n in n_values:
        npix = max(1 << 16, min(1 << 26, target_bytes // (4 * n)))
        side = int(np.sqrt(npix))
        npix = side * side
        block = make_block(n, npix)
        params = {"scale": cp.ones(n, cp.float32), "zero": cp.zeros(n, cp.float32),
                  "weights": cp.ones(n, cp.float64)}
        outs = (cp.empty(npix, cp.float32), cp.empty(npix, cp.float32), cp.empty(npix, cp.int32))
        nbytes = (4 * n + 12) * npix
        for name, kw in KERNEL_CASES.items():
            opts = skystack.combine_options(**kw)
            try:
                choice = choose_combine_kernel(n, opts)
                stream = cp.cuda.get_current_stream()
                outs[2].fill(-1)
                secs = cuda_seconds(partial(dev.combine, block, n, npix, choice, opts, params,
                                            outs, stream))
            except Exception as exc:  # one failing kernel costs one row, not the run
                rows.append(skipped(name, f"failed: {type(exc).__name__}: {exc}"[:300], n=n))
                continue
            written = int((outs[2] < 0).sum()) == 0
            rows.append(row(name, n, (side, side), secs, nbytes, ceiling, kernel=choice.name,
                            outputs_fully_written=written))
        opts = skystack.combine_options(method="median")
        dev.combine(block, n, npix, choose_combine_kernel(n, opts), opts, params, outs,
                    cp.cuda.get_current_stream())
        ours = outs[0].copy()
        if 4 * n * npix * 3 < cp.cuda.runtime.memGetInfo()[0]:
            med = cp.median(block, axis=0)
            secs = cuda_seconds(partial(cp.median, block, axis=0))
            rows.append(row("cupy_median", n, (side, side), secs, nbytes, ceiling,
                            max_abs_diff_vs_skystack=float(cp.nanmax(cp.abs(ours - med)))))
            del med
        rows += torch_peers(block, n, side, nbytes, ceiling, ours)
        # CPU backend on a slice of the same data (it is far slower; time scales with pixels).
        cpix = min(npix, max(1 << 14, (1 << 24) // n))
        rows += cpu_backend_rows(cp.asnumpy(block[:, :cpix]), cpu)
        del block, outs, ours
        cp.get_default_memory_pool().free_all_blocks()
    cpu.close()
    return rows


def torch_peers(block, n: int, side: int, nbytes: int, ceiling: float, ours) -> list[dict]:
    """``torch.median`` (lower median for even N) and ``torch.quantile(q=0.5)`` (the
    interpolated median, as NumPy's) along the frame axis of the same resident block, shared
    with CuPy through DLPack; their largest difference from skystack's median kernel."""
    try:
        import torch
    except ImportError as exc:
        return [skipped("torch_median", f"torch not importable ({exc})", n=n)]
    import cupy as cp

    t = torch.from_dlpack(block)
    rows = []
    for name, fn in (("torch_median", lambda: torch.median(t, dim=0).values),
                     ("torch_quantile_median", lambda: torch.quantile(t, 0.5, dim=0))):
        try:
            fn()
            torch.cuda.synchronize()
            times = []
            for _ in range(5):
                start = torch.cuda.Event(enable_timing=True)
                stop = torch.cuda.Event(enable_timing=True)
                start.record()
                value = fn()
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop) / 1e3)
            diff = float(cp.nanmax(cp.abs(ours - cp.from_dlpack(value))))
        except Exception as exc:  # e.g. torch.quantile's input size limit
            rows.append(skipped(name, f"failed: {type(exc).__name__}: {exc}"[:300], n=n))
            continue
        rows.append(row(name, n, (side, side), statistics.median(times), nbytes, ceiling,
                        max_abs_diff_vs_skystack=diff))
    torch.cuda.empty_cache()
    return rows


def cpu_backend_rows(host: np.ndarray, cpu) -> list[dict]:
    """The CPU backend (all cores) on ``host`` (n, pixels) float32: median and sigma clipping,
    second call timed (the first compiles or loads the numba kernels)."""
    import skystack
    from skystack.backends.base import FrameParams, TileOutputs

    n, cpix = host.shape
    out = TileOutputs.empty((1, cpix))
    fp = FrameParams(np.ones(n, np.float32), np.zeros(n, np.float32), np.ones(n))
    rows = []
    for name in ("median", "sigclip_mean_std"):
        opts = skystack.combine_options(**KERNEL_CASES[name])
        cpu.combine_tile(host.reshape(n, 1, cpix), opts, fp, out)
        t0 = time.perf_counter()
        cpu.combine_tile(host.reshape(n, 1, cpix), opts, fp, out)
        secs = time.perf_counter() - t0
        rows.append(row(f"cpu_backend_{name}", n, (1, cpix), secs, (4 * n + 12) * cpix,
                        None, threads=cpu.threads))
    return rows


# A value no resampled pixel can take (inputs are ~1000, NaN is a legitimate output).
POISON = -3.0e38
# name: (interpolation, conserve flux)
REPROJECT_CASES = {"reproject_bilinear": ("bilinear", False),
                   "reproject_nearest": ("nearest", False),
                   "reproject_bilinear_flux": ("bilinear", True),
                   "reproject_lanczos3": ("lanczos3", False),
                   "reproject_lanczos4": ("lanczos4", False)}


def reproject_staging(n: int, interp: str = "bilinear", flux: bool = False):
    """Host side of the reprojection benchmark (NumPy and astropy only, no CuPy): the scene of
    bench_reproject.py staged as one tile covering the whole grid, exactly as the stack loop
    (skystack.backends.gpu.stack_streaming) stages a tile.

    Returns ``(layout, staged, image, wcs_in, wcs_out)``: the TileLayout, the staged bytes
    (uint8), the input frame and both WCS.
    """
    sys.path.insert(0, str(HERE))
    from bench_reproject import scene

    from skystack.backends.gpu.stack_streaming import (
        band_view,
        frame_regions,
        layout_tile,
        pack_tile,
        stack_geometry,
    )
    from skystack.io.reader import Tile
    from skystack.regrid.interp import reach
    from skystack.stacking import Grid

    wcs_in, wcs_out, image = scene(n)
    geom = stack_geometry([wcs_in], [(n, n)], Grid(wcs_out, (n, n)))
    tile = Tile(0, n, 0, n)
    (region,) = frame_regions(geom, 0, [tile], reach(interp))
    layout = layout_tile(geom, tile, [region], interp=interp, conserve_flux=flux)
    staged = np.zeros(layout.spec.nbytes, np.uint8)
    pack_tile(staged, geom, layout)
    band_view(staged, layout, 0)[...] = image[region.r0:region.r1, region.c0:region.c1]
    return layout, staged, image, wcs_in, wcs_out


def reproject_cpu_rows(image, wcs_in, wcs_out, n: int, rows: int, interp: str,
                       flux: bool) -> np.ndarray:
    """The CPU backend's values for output rows [0, rows) of the benchmark's tile."""
    from skystack.regrid import pixel_area_ratio, pixel_map, resample

    x, y = pixel_map(wcs_in, wcs_out, (n, n), rows=slice(0, rows))
    values = resample(image, x, y, interp)
    if flux:
        values *= pixel_area_ratio(x, y).astype(np.float32)
    return values


def reproject_benchmarks(ceiling: float, n: int) -> list[dict]:
    import cupy as cp

    from skystack.backends.gpu.device import CupyDevice

    dev = CupyDevice()
    rows = []
    for name, (interp, flux) in REPROJECT_CASES.items():
        t0 = time.perf_counter()
        layout, host, image, wcs_in, wcs_out = reproject_staging(n, interp, flux)
        staging_s = time.perf_counter() - t0
        staged = cp.asarray(host)
        npix = layout.spec.npix
        block = cp.empty(npix, cp.float32)
        stream = cp.cuda.get_current_stream()
        secs = cuda_seconds(partial(dev.resample, staged, layout.spec, block, stream),
                            before=partial(block.fill, POISON))
        assert int((block == POISON).sum()) == 0, f"{name}: output not fully written"
        # Against the CPU backend on a band of rows (with flux, the band's last row is a tile
        # border on the CPU only: left out).
        band = min(n, 256)
        want = reproject_cpu_rows(image, wcs_in, wcs_out, n, band, interp, flux)
        got = cp.asnumpy(block[:band * n]).reshape(band, n)
        check = slice(0, band - 1 if flux else band)
        same = (got[check] == want[check]) | (np.isnan(got[check]) & np.isnan(want[check]))
        both = np.isfinite(got[check]) & np.isfinite(want[check])
        # Lanczos weights: a table on the CPU, polynomials on the GPU (both within 3e-8).
        rel = np.abs(got[check][both] - want[check][both]) / np.maximum(
            np.abs(want[check][both]), 1e-30)
        reg = layout.regions[0]
        nbytes = layout.spec.nbytes + 4 * npix
        rows.append(row(name, 1, (n, n), secs, nbytes, ceiling, kernel=name,
                        input_band=list(reg.shape), staged_bytes=layout.spec.nbytes,
                        output_bytes=4 * npix, gpix_per_s=npix / secs / 1e9,
                        host_staging_seconds=staging_s,
                        cpu_mismatches=int((~same).sum()),
                        cpu_max_rel_diff=float(rel.max(initial=0.0)),
                        cpu_nan_pattern_differs=int((np.isnan(got[check])
                                                     != np.isnan(want[check])).sum()),
                        footprint_fraction=float(cp.isfinite(block).mean())))
        if name == "reproject_bilinear":
            rows.append(dfreproject_peer(image, wcs_in, wcs_out, n, want, rows[-1]))
        del staged, block
        cp.get_default_memory_pool().free_all_blocks()
    return rows


def dfreproject_peer(image, wcs_in, wcs_out, n: int, want: np.ndarray, ours: dict) -> dict:
    """``dfreproject.calculate_reprojection(order="bilinear", device="cuda")`` (PyTorch) on the
    same frame and grid, timed from the host image to the resampled array on the host, against
    skystack's staging on the host + upload + kernel (``ours``); its values are compared with
    skystack's CPU backend on the checked band (``want``)."""
    try:
        import torch
        from dfreproject import calculate_reprojection
    except ImportError as exc:
        return skipped("dfreproject_bilinear", f"not importable ({exc})")

    def run():
        out = calculate_reprojection((image, wcs_in), wcs_out, shape_out=(n, n),
                                     order="bilinear", device="cuda", conserve_flux=False,
                                     compute_jacobian=False, show_chunk_progress=False)
        torch.cuda.synchronize()
        return out

    try:
        run()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = run()
            times.append(time.perf_counter() - t0)
        out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
    except Exception as exc:
        return skipped("dfreproject_bilinear", f"failed: {type(exc).__name__}: {exc}"[:300])
    secs = statistics.median(times)
    band = want.shape[0]
    both = np.isfinite(want) & np.isfinite(out[:band])
    scale = float(np.nanmedian(np.abs(want))) or 1.0
    ours_total = ours["host_staging_seconds"] + ours["seconds"]
    r = row("dfreproject_bilinear", 1, (n, n), secs, image.nbytes + 4 * n * n,
            footprint_fraction=float(np.isfinite(out).mean() if out.size else 0.0),
            max_rel_diff_vs_skystack_cpu=float(
                np.max(np.abs(out[:band][both] - want[both]), initial=0.0) / scale),
            skystack_host_staging_plus_kernel_seconds=ours_total,
            skystack_speedup=secs / ours_total)
    return r


def write_wcs_stack(folder: Path, n: int, shape: tuple[int, int]) -> list[str]:
    """``n`` dithered (±20 px), rotated (±2°) uint16 frames of one field with TAN WCS and
    EXPTIME: the input of the end-to-end stack benchmark (NumPy and astropy only)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    rng = np.random.default_rng(7)
    paths = []
    for k in range(n):
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [150.0 + rng.uniform(-20, 20) / 3600, 2.2 + rng.uniform(-20, 20) / 3600]
        w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
        t = np.radians(rng.uniform(-2, 2))
        w.wcs.cd = np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]]) / 3600
        frame = rng.normal(1000, 10, shape).astype(np.float32)
        frame[rng.random(shape) < 0.005] = 60000
        hdr = w.to_header()
        hdr["EXPTIME"] = 60.0
        p = folder / f"wcs_frame_{k:03d}.fits"
        fits.PrimaryHDU(frame.clip(0, 65535).astype(np.uint16), header=hdr).writeto(p)
        paths.append(str(p))
    return paths


def stack_end_to_end(folder: Path, shape: tuple[int, int], n: int,
                     backends=None) -> tuple[list, list]:
    from astropy.io import fits

    from skystack.api_reproject import stack_to_file

    if backends is None:
        from skystack.backends.gpu.backend import GpuBackend

        backends = (("stack_end_to_end_gpu", GpuBackend()), ("stack_end_to_end_cpu", "cpu"))
    paths = write_wcs_stack(folder, n, shape)
    in_bytes = n * shape[0] * shape[1] * 2
    sig = KERNEL_CASES["sigclip_mean_std"]
    rows, outs = [], {}
    for label, backend in backends:
        out = folder / f"{label}.fits"
        t0 = time.perf_counter()
        stack_to_file(paths, out, backend=backend, overwrite=True, mem_limit="8G",
                               **sig)
        rows.append(row(label, n, shape, time.perf_counter() - t0, in_bytes))
        with fits.open(out) as hl:
            outs[label] = (hl[0].data.copy(), hl["COUNT"].data.copy())
    notes = [f"stack_end_to_end: {n} uint16 frames of {shape} with WCS (dithered, rotated), "
             "union grid, mean + sigma clipping; files just written (page cache); includes the "
             "node maps (astropy) and tile planning on the host."]
    if len(outs) < 2:
        return rows, notes
    (g_img, g_cnt), (c_img, c_cnt) = outs["stack_end_to_end_gpu"], outs["stack_end_to_end_cpu"]
    both = np.isfinite(g_img) & np.isfinite(c_img)
    rows[0]["speedup_vs_cpu_backend"] = rows[1]["seconds"] / rows[0]["seconds"]
    rows[0]["max_rel_diff_vs_cpu"] = float(
        np.max(np.abs(g_img[both] - c_img[both]) / np.abs(c_img[both]), initial=0.0))
    rows[0]["coverage_mismatches_vs_cpu"] = int((g_cnt != c_cnt).sum())
    return rows, notes


def write_stack(folder: Path, n: int, shape: tuple[int, int]) -> list[str]:
    from astropy.io import fits

    rng = np.random.default_rng(5)
    paths = []
    base = rng.normal(1000, 10, shape).astype(np.float32)
    for k in range(n):
        frame = (base + rng.normal(0, 5, shape).astype(np.float32)).clip(0, 65535)
        frame[rng.random(shape) < 0.01] = 60000
        p = folder / f"frame_{k:04d}.fits"
        fits.PrimaryHDU(frame.astype(np.uint16)).writeto(p)
        paths.append(str(p))
    return paths


def read_only_seconds(paths: list[str], rows_per_tile: int, workers: int,
                      pinned: bool = True) -> float:
    """Time to read every file's pixels once, tile by tile, into one pinned buffer per frame
    slot (plain memory when ``pinned`` is false: the dry run), with the loop's reader threads:
    the file read speed the pipeline can hope for."""
    from concurrent.futures import ThreadPoolExecutor

    from skystack.io.inputs import load_frames
    from skystack.io.reader import Tile

    frames = load_frames(paths)
    rows, cols = frames[0].shape
    item = frames[0].source.stage_spec().itemsize
    slot = rows_per_tile * cols * item
    if pinned:
        import cupyx

        buf = cupyx.empty_pinned((slot * len(frames),), np.uint8)
    else:
        buf = np.empty((slot * len(frames),), np.uint8)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for r0 in range(0, rows, rows_per_tile):
            tile = Tile(r0, min(rows, r0 + rows_per_tile), 0, cols)
            futs = [pool.submit(f.source.read_staged, tile, buf[k * slot:(k + 1) * slot])
                    for k, f in enumerate(frames)]
            for f in futs:
                f.result()
    return time.perf_counter() - t0


def end_to_end(folder: Path, shape: tuple[int, int], total_gb: float, h2d: float | None,
               subset: int) -> tuple[list, list]:
    """Streamed combine from uint16 files with the device budget capped at an eighth of the
    stack, against pinned H2D and read-only time; then the GPU and CPU backends on ``subset``
    frames. ``h2d`` None: no GPU (dry run), only the CPU rows run."""
    import skystack

    gpu = h2d is not None
    frame_bytes = shape[0] * shape[1] * 2
    n = max(8, int(total_gb * 1e9 // frame_bytes))
    t0 = time.perf_counter()
    paths = write_stack(folder, n, shape)
    print(f"wrote {n} frames of {shape} uint16 ({n * frame_bytes / 1e9:.1f} GB) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    stack_bytes = n * frame_bytes
    budget = max(256 << 20, stack_bytes // 8)  # device budget: an eighth of the stack
    sig = KERNEL_CASES["sigclip_mean_std"]
    rows, notes = [], []
    per_pix = 2 * 2 * n + 4 * n + 24
    tile_rows = max(1, int(budget * 0.6 // per_pix // shape[1]))
    read_s = read_only_seconds(paths, tile_rows, 8, pinned=gpu)
    rows.append(row("read_only", n, shape, read_s, stack_bytes))
    sub = paths[: min(n, subset)]
    sub_bytes = len(sub) * frame_bytes
    if gpu:
        from skystack.backends.gpu.backend import GpuBackend

        out = folder / "out.fits"
        t0 = time.perf_counter()
        skystack.combine_to_file(paths, out, backend=GpuBackend(memory_limit=budget),
                                 overwrite=True, mem_limit="8G", **sig)
        secs = time.perf_counter() - t0
        r = row("end_to_end", n, shape, secs, stack_bytes)
        r["ratio_to_pinned_h2d"] = r["gb_per_s"] / h2d
        r["ratio_to_read_only"] = read_s / secs
        r["device_budget_bytes"] = budget
        rows.append(r)
        t0 = time.perf_counter()
        skystack.combine_to_file(sub, folder / "sub.fits", backend=GpuBackend(memory_limit=budget),
                                 overwrite=True, mem_limit="8G", **sig)
        rows.append(row("end_to_end_gpu_subset", len(sub), shape, time.perf_counter() - t0,
                        sub_bytes))
    else:
        rows.append(skipped("end_to_end", "no GPU"))
        rows.append(skipped("end_to_end_gpu_subset", "no GPU"))
    t0 = time.perf_counter()
    skystack.combine_to_file(sub, folder / "sub_cpu.fits", backend="cpu", overwrite=True,
                             mem_limit="8G", **sig)
    rows.append(row("end_to_end_cpu_subset", len(sub), shape, time.perf_counter() - t0,
                    sub_bytes, threads=os.cpu_count()))
    if gpu:
        rows[-2]["speedup_vs_cpu_backend"] = rows[-1]["seconds"] / rows[-2]["seconds"]
    notes.append(f"end_to_end streams {n} frames ({stack_bytes / 1e9:.1f} GB) with the device "
                 f"budget capped at {budget / 1e9:.2f} GB (the disk, 64 GiB, is smaller than the "
                 "GPU's memory, so the stack cannot exceed the GPU itself); files were just "
                 "written, so reads come from the page cache.")
    return rows, notes


def dry_run_rows(folder: Path, profile: dict) -> tuple[list, list]:
    """Everything that runs without a GPU, at the profile's (tiny) sizes: the CPU backend rows,
    the host side of the reprojection staging, the end-to-end CPU runs; every GPU measurement
    is a row saying it was skipped. Proves the script, its imports and its outputs."""
    from skystack.backends.cpu import CpuBackend

    rows = [skipped("ceilings", "no GPU")]
    cpu = CpuBackend()
    rng = np.random.default_rng(1)
    for n in profile["n_values"]:
        rows += [skipped(name, "no GPU", n=n) for name in KERNEL_CASES]
        rows += [skipped(name, "no GPU", n=n)
                 for name in ("cupy_median", "torch_median", "torch_quantile_median")]
        host = (rng.standard_normal((n, 4096)) * 10 + 1000).astype(np.float32)
        rows += cpu_backend_rows(host, cpu)
    cpu.close()
    n = profile["reproject_n"]
    for name, (interp, flux) in REPROJECT_CASES.items():
        t0 = time.perf_counter()
        layout, _, image, wcs_in, wcs_out = reproject_staging(n, interp, flux)
        staging_s = time.perf_counter() - t0
        reproject_cpu_rows(image, wcs_in, wcs_out, n, min(n, 64), interp, flux)
        rows.append(skipped(name, "no GPU", host_staging_seconds=staging_s,
                            staged_bytes=layout.spec.nbytes))
    rows.append(skipped("dfreproject_bilinear", "no GPU"))
    e2e, notes = end_to_end(folder, profile["e2e_shape"], profile["e2e_gb"], None,
                            profile["subset"])
    rows += e2e
    rows.append(skipped("stack_end_to_end_gpu", "no GPU"))
    stack_rows, stack_notes = stack_end_to_end(
        folder, profile["stack_shape"], profile["stack_n"],
        backends=(("stack_end_to_end_cpu", "cpu"),))
    return rows + stack_rows, notes + stack_notes


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# Sizes per run kind: "session" fits the lent machine's 10-minute command (benchmarks/gpu/
# session.sh gives this script about 4 minutes of it); "dry-run" proves the script on a CPU.
PROFILES = {
    "full": dict(ceiling_bytes=4 << 30, kernel_bytes=2 << 30, n_values=N_VALUES,
                 reproject_n=8192, e2e_shape=(6388, 9576), e2e_gb=24.0, subset=24,
                 stack_shape=(4096, 6144), stack_n=16),
    "session": dict(ceiling_bytes=2 << 30, kernel_bytes=1 << 30, n_values=SESSION_N_VALUES,
                    reproject_n=4096, e2e_shape=(6388, 9576), e2e_gb=4.0, subset=12,
                    stack_shape=(4096, 4096), stack_n=12),
    "quick": dict(ceiling_bytes=256 << 20, kernel_bytes=256 << 20, n_values=N_VALUES[:3],
                  reproject_n=1024, e2e_shape=(1024, 1024), e2e_gb=0.5, subset=8,
                  stack_shape=(1024, 1024), stack_n=6),
    "dry-run": dict(n_values=SESSION_N_VALUES, reproject_n=256, e2e_shape=(256, 256),
                    e2e_gb=0.001, subset=8, stack_shape=(256, 256), stack_n=4),
}


def device_name() -> str | None:
    """The first CUDA device's name, or None where CuPy or a GPU is missing."""
    try:
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(0)
    except Exception:
        return None
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def measure(profile: dict, workdir: str | None) -> tuple[dict, list, list]:
    """(ceilings, rows, notes) of every GPU measurement at the profile's sizes."""
    ceil = ceilings(profile["ceiling_bytes"])
    _CEILINGS.update(ceil)
    print(json.dumps(ceil), flush=True)
    rows = kernel_benchmarks(ceil["device_copy_gb_per_s"], profile["kernel_bytes"],
                             profile["n_values"])
    rows += reproject_benchmarks(ceil["device_copy_gb_per_s"], profile["reproject_n"])
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        e2e_rows, notes = end_to_end(Path(tmp), profile["e2e_shape"], profile["e2e_gb"],
                                     ceil["pinned_h2d_gb_per_s"], profile["subset"])
    rows += e2e_rows
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        stack_rows, stack_notes = stack_end_to_end(Path(tmp), profile["stack_shape"],
                                                   profile["stack_n"])
    return ceil, rows + stack_rows, notes + stack_notes


def render_markdown(result: dict) -> str:
    """The result as a Markdown table (skipped rows say why)."""
    ceil = result["ceilings"]
    lines = [f"# GPU benchmark on {result['device']}, {result['date']} "
             f"(commit {result['commit'][:10]}, profile {result['profile']})", ""]
    if ceil:
        lines += [f"Ceilings: device copy {ceil['device_copy_gb_per_s']:.0f} GB/s, pinned H2D "
                  f"{ceil['pinned_h2d_gb_per_s']:.1f} GB/s, pinned D2H "
                  f"{ceil['pinned_d2h_gb_per_s']:.1f} GB/s.", ""]
    lines += ["| name | n | shape | ms | GB/s | of copy ceiling | notes |",
              "|---|---|---|---|---|---|---|"]
    for r in result["benchmarks"]:
        if r.get("skipped"):
            n = "" if r["n"] is None else r["n"]
            lines.append(f"| {r['name']} | {n} | | | | | skipped: {r['skipped']} |")
            continue
        frac = "" if r["fraction_of_ceiling"] is None else f"{r['fraction_of_ceiling']:.1%}"
        extra = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in r.items() if k.startswith(("max_", "speedup", "skystack_",
                                                                 "ratio_", "cpu_mis")))
        lines.append(f"| {r['name']} | {r['n']} | {r['shape'][0]}×{r['shape'][1]} | "
                     f"{r['seconds'] * 1e3:.2f} | {r['gb_per_s']:.1f} | {frac} | {extra} |")
    lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(HERE / "results"))
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--quick", action="store_true", help="small sizes: checks the script")
    kind.add_argument("--session", action="store_true",
                      help="sizes that fit the lent GPU machine's window (benchmarks/gpu/)")
    kind.add_argument("--dry-run", action="store_true",
                      help="no GPU: the CPU rows at tiny sizes, GPU rows marked skipped")
    ap.add_argument("--e2e-gb", type=float, help="GB streamed end to end (profile's default)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--stem", help="output file stem (default gpu-<device>-<date>[-profile])")
    args = ap.parse_args(argv)
    profile_name = ("quick" if args.quick else "session" if args.session
                    else "dry-run" if args.dry_run else "full")
    profile = dict(PROFILES[profile_name])
    if args.e2e_gb is not None:
        profile["e2e_gb"] = args.e2e_gb
    name = None if args.dry_run else device_name()
    if name is None and not args.dry_run:
        print("no usable CUDA device (CuPy missing or no GPU): use --dry-run", file=sys.stderr)
        return 2
    print(f"device: {name or 'none (dry run)'}", flush=True)
    if args.dry_run:
        ceil = {}
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            rows, notes = dry_run_rows(Path(tmp), profile)
        cupy_version = None
    else:
        import cupy as cp

        cupy_version = cp.__version__
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            ceil, rows, notes = measure(profile, args.workdir)
        except _CutShort:
            ceil, rows = dict(_CEILINGS), list(_COLLECTED)
            notes = [f"cut short by SIGTERM (the session's time cap) after {len(rows)} rows: "
                     "the measurements after the last row did not run"]
            print(notes[0], flush=True)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=REPO).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    date = dt.date.today().isoformat()
    device = name or "no-gpu"
    result = {"device": device, "date": date, "commit": commit, "profile": profile_name,
              "ceilings": ceil, "benchmarks": rows, "notes": notes,
              "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
              "cupy": cupy_version}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if profile_name == "full" else f"-{profile_name}"
    stem = out / (args.stem or f"gpu-{device_slug(device)}-{date}{suffix}")
    Path(f"{stem}.json").write_text(json.dumps(result, indent=1))
    Path(f"{stem}.md").write_text(render_markdown(result))
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
