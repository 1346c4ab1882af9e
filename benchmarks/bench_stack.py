"""Reprojected median stack: skystack vs reproject_and_coadd and SWarp, in one run.

Usage::

    python benchmarks/bench_stack.py [--n 25] [--size 2048] [--write] [--skip-peers NAME,...]

A synthetic night: ``n`` float32 frames of ``size``² with TAN WCS, dithered by up to 30 px and
rotated by up to ±2°, stars on a sky of 1000 ADU with noise and cosmic rays. Contestants, each
timed from the files on disk to a median-combined stack on a grid covering all frames (bilinear
resampling everywhere):

* ``skystack``: ``skystack.stack(files, out, method="median", backend="cpu")`` (Numba kernels are
  cached on disk by an untimed warm-up on a small stack first);
* ``reproject_interp+nanmedian``: reproject's route to a median stack onto skystack's grid
  (``reproject_and_coadd`` has no median in reproject 0.21); ``reproject_and_coadd(mean)`` is
  timed too, for reference (a mean, not a median);
* ``swarp``: ``SWarp -RESAMPLING_TYPE BILINEAR -COMBINE_TYPE MEDIAN -SUBTRACT_BACK N`` with all
  cores (its own grid; it writes resampled copies to disk first, as it always does).

Results: a Markdown table on stdout; with ``--write``, ``results/cpu-stack-2core-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

HERE = Path(__file__).resolve().parent


def frame_wcs(shape, dx, dy, rot_deg) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 30.0]
    w.wcs.crpix = [shape[1] / 2 + 0.5 + dx, shape[0] / 2 + 0.5 + dy]
    s = 1.0 / 3600
    t = np.radians(rot_deg)
    w.wcs.cd = [[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]]
    return w


def write_night(folder: Path, n: int, size: int) -> list[str]:
    rng = np.random.default_rng(7)
    shape = (size, size)
    paths = []
    stars = rng.uniform(0, size, (400, 2))
    flux = rng.uniform(500, 20000, 400)
    for k in range(n):
        dx, dy, rot = rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-2, 2)
        w = frame_wcs(shape, dx, dy, rot)
        img = rng.normal(1000, 10, shape).astype(np.float32)
        # Stars at fixed sky positions: place them through the WCS (approximately, sub-pixel).
        world = frame_wcs(shape, 0, 0, 0).pixel_to_world_values(stars[:, 0], stars[:, 1])
        px, py = w.world_to_pixel_values(*world)
        for x0, y0, f in zip(px, py, flux):
            xi, yi = int(round(x0)), int(round(y0))
            if 2 <= xi < size - 2 and 2 <= yi < size - 2:
                img[yi - 2:yi + 3, xi - 2:xi + 3] += np.float32(f / 25)
        img[rng.random(shape) < 0.002] += 5000
        hdr = w.to_header()
        hdr["EXPTIME"] = 60.0
        p = folder / f"light_{k:03d}.fits"
        fits.PrimaryHDU(img, header=hdr).writeto(p)
        paths.append(str(p))
    return paths


def time_skystack(paths, out: Path) -> tuple[float, dict]:
    import skystack

    t0 = time.perf_counter()
    res = skystack.stack(paths, out, method="median", backend="cpu", overwrite=True)
    return time.perf_counter() - t0, {"shape": list(res.shape)}


def time_reproject(paths, grid_header) -> float:
    """reproject_and_coadd has no median (0.21: mean/sum/first/last/min/max), so the reproject
    route to a median stack is what users write: reproject_interp each frame, then nanmedian."""
    import warnings

    from reproject import reproject_interp

    t0 = time.perf_counter()
    wcs = WCS(grid_header)
    shape = (grid_header["NAXIS2"], grid_header["NAXIS1"])
    cube = np.empty((len(paths), *shape), np.float32)
    for k, p in enumerate(paths):
        with fits.open(p) as hl:
            cube[k], _ = reproject_interp(hl[0], wcs, shape_out=shape, order="bilinear")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.nanmedian(cube, axis=0)
    return time.perf_counter() - t0


def time_reproject_coadd_mean(paths, grid_header) -> float:
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    t0 = time.perf_counter()
    hdus = [fits.open(p)[0] for p in paths]
    reproject_and_coadd(hdus, WCS(grid_header),
                        shape_out=(grid_header["NAXIS2"], grid_header["NAXIS1"]),
                        reproject_function=reproject_interp, combine_function="mean")
    return time.perf_counter() - t0


def time_swarp(paths, folder: Path) -> float | None:
    exe = shutil.which("SWarp") or shutil.which("swarp")
    if exe is None:
        return None
    resamp = folder / "swarp_resamp"
    resamp.mkdir(exist_ok=True)
    cmd = [exe, *paths, "-IMAGEOUT_NAME", str(folder / "swarp.fits"), "-WEIGHTOUT_NAME",
           str(folder / "swarp.weight.fits"), "-RESAMPLING_TYPE", "BILINEAR", "-COMBINE_TYPE",
           "MEDIAN", "-SUBTRACT_BACK", "N", "-RESAMPLE_DIR", str(resamp), "-WRITE_XML", "N",
           "-VERBOSE_TYPE", "QUIET", "-NTHREADS", str(os.cpu_count() or 1),
           "-PIXELSCALE_TYPE", "MEDIAN", "-CENTER_TYPE", "ALL"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=folder)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=25)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--skip-peers", default="")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip_peers.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_night(folder, args.n, args.size)
        for p in paths:  # warm the page cache for everyone
            Path(p).read_bytes()
        warm = folder / "warm"
        warm.mkdir()
        time_skystack(write_night(warm, 3, 128), warm / "w.fits")  # numba disk cache
        rows = {}
        secs, info = time_skystack(paths, folder / "skystack.fits")
        rows["skystack"] = secs
        grid_header = fits.getheader(folder / "skystack.fits")
        if "reproject" not in skip:
            rows["reproject_interp+nanmedian"] = time_reproject(paths, grid_header)
        if "reproject_and_coadd_mean" not in skip:
            rows["reproject_and_coadd(mean)"] = time_reproject_coadd_mean(paths, grid_header)
        if "swarp" not in skip:
            s = time_swarp(paths, folder)
            if s is not None:
                rows["swarp"] = s
    base = rows["skystack"]
    print(f"\n{args.n} frames of {args.size}², median, bilinear, grid {info['shape']}\n")
    print("| contestant | seconds | skystack speed-up |\n|---|---:|---:|")
    for name, secs in rows.items():
        print(f"| {name} | {secs:.2f} | {secs / base:.1f}× |")
    if args.write:
        out = HERE / "results" / f"cpu-stack-2core-{dt.date.today().isoformat()}.json"
        out.write_text(json.dumps({"n": args.n, "size": args.size, "grid": info["shape"],
                                   "seconds": rows, "cpu_count": os.cpu_count(),
                                   "python": sys.version.split()[0]}, indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
