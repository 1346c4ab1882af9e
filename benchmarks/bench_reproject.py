"""Benchmark skystack's CPU bilinear reprojection against ``reproject_interp``, in one run.

Usage::

    python benchmarks/bench_reproject.py [--size 2048] [--repeats 5] [--ref-repeats 2] [--write]

One float32 frame of ``size``² pixels (N(1000, 10) sky, a few NaNs, fixed seed) with a TAN-SIP
WCS (quadratic and cubic terms, rotated 20°) is reprojected onto a ``size``² TAN grid rotated by
-5° with a slightly finer pixel scale, shifted so that the two overlap in part (about 70 %).

Contestants (same process, same data, wall time by ``time.perf_counter``):

* ``reproject_interp`` — ``reproject.reproject_interp((image, wcs_in), wcs_out, shape,
  order='bilinear')`` (astropy per pixel, round trip included, then SciPy's map_coordinates);
* ``skystack`` — ``pixel_map`` + ``resample(method='bilinear')`` on one thread, split into its
  parts (astropy on the node grid, the node interpolation, the bilinear sampling);
* ``skystack_2threads`` — the same on two row bands in two threads (the Numba kernels release
  the GIL);
* ``skystack_first_call`` — the first call in this process (loading Numba's cached kernels; an
  untimed subprocess fills the cache first, so compilation is never timed).

skystack is timed ``--repeats`` times and ``reproject_interp`` ``--ref-repeats`` times; medians
are reported. The results are also checked against each other (largest relative difference
where both are finite, footprint pixels that differ). ``--write`` saves the JSON to
``benchmarks/results/cpu-reproject-<N>core-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEED = 20240601
ARCSEC = 1 / 3600

WARM_UP = """
import numpy as np
from skystack.regrid import pixel_map, resample
from astropy.wcs import WCS
w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.cdelt = [-1e-4, 1e-4]
w.wcs.crpix = [8, 8]; w.wcs.set()
x, y = pixel_map(w, w, (40, 40))
img = np.ones((40, 40), np.float32)
resample(img, x, y); resample(img, x, y, "nearest")
"""


def make_wcs(n: int, rot_deg: float, crval, scale_arcsec: float, sip: bool):
    from astropy.wcs import WCS, Sip

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [n / 2 + 0.37, n / 2 - 0.21]
    t = np.radians(rot_deg)
    w.wcs.cd = scale_arcsec * ARCSEC * np.array([[-np.cos(t), np.sin(t)],
                                                 [np.sin(t), np.cos(t)]])
    if sip:
        # Distortion of about 3 px at the corners of a 2048² frame (a typical wide-field camera).
        scale = (2048 / n) ** 2
        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[2, 0], a[1, 1], a[0, 2], a[3, 0], a[1, 2] = 2.1e-6, -1.3e-6, 8e-7, 1.5e-10, -9e-11
        b[2, 0], b[1, 1], b[0, 2], b[0, 3], b[2, 1] = -7e-7, 1.8e-6, -1.1e-6, 1.2e-10, 6e-11
        w.sip = Sip(a * scale, b * scale, None, None, w.wcs.crpix)
    w.wcs.set()
    return w


def scene(n: int):
    wcs_in = make_wcs(n, 20.0, (150.1, 2.2), 1.2, sip=True)
    shift = 0.3 * n * 1.2 * ARCSEC
    wcs_out = make_wcs(n, -5.0, (150.1 + shift, 2.2 + 0.5 * shift), 1.1, sip=False)
    rng = np.random.default_rng(SEED)
    image = rng.normal(1000.0, 10.0, (n, n)).astype(np.float32)
    image[rng.integers(0, n, n), rng.integers(0, n, n)] = np.nan
    return wcs_in, wcs_out, image


def skystack_once(wcs_in, wcs_out, image, shape):
    """One reprojection, timed by part."""
    from skystack.regrid import pixel_map, resample
    from skystack.regrid import pixmap as pm

    t0 = time.perf_counter()
    # The node grid alone (what pixel_map evaluates with astropy), to split the time.
    nodes_r, _ = pm._axis_nodes(shape[0], 32)
    nodes_c, _ = pm._axis_nodes(shape[1], 32)
    gc, gr = np.meshgrid(nodes_c, nodes_r)
    pm.map_positions(wcs_in, wcs_out, gc, gr)
    t1 = time.perf_counter()
    x, y = pixel_map(wcs_in, wcs_out, shape)
    t2 = time.perf_counter()
    values = resample(image, x, y)
    t3 = time.perf_counter()
    parts = {"nodes_astropy": t1 - t0, "pixel_map": t2 - t1, "bilinear": t3 - t2}
    parts["map_interpolation"] = parts["pixel_map"] - parts["nodes_astropy"]
    parts["total"] = parts["pixel_map"] + parts["bilinear"]
    return values, parts


def skystack_threads(wcs_in, wcs_out, image, shape, threads: int):
    from skystack.regrid import pixel_map, resample

    out = np.empty(shape, dtype=np.float32)
    edges = np.linspace(0, shape[0], threads + 1).astype(int)

    def band(i):
        rows = slice(int(edges[i]), int(edges[i + 1]))
        x, y = pixel_map(wcs_in, wcs_out, shape, rows=rows)
        resample(image, x, y, out=out[rows])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(band, range(threads)))
    return out, time.perf_counter() - t0


def machine() -> dict:
    import astropy
    import numba
    import reproject
    import scipy

    import skystack

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "astropy": astropy.__version__,
        "scipy": scipy.__version__,
        "reproject": reproject.__version__,
        "skystack": skystack.__version__,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="frame and grid size (px)")
    parser.add_argument("--repeats", type=int, default=5, help="skystack repeats (median kept)")
    parser.add_argument("--ref-repeats", type=int, default=2,
                        help="reproject_interp repeats (median kept)")
    parser.add_argument("--write", action="store_true", help="save JSON to benchmarks/results/")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    # Fill Numba's disk cache in another process so that compilation is never timed.
    subprocess.run([sys.executable, "-c", WARM_UP], check=True, cwd=REPO)

    from reproject import reproject_interp

    n = args.size
    shape = (n, n)
    wcs_in, wcs_out, image = scene(n)

    values, first = skystack_once(wcs_in, wcs_out, image, shape)
    runs = [skystack_once(wcs_in, wcs_out, image, shape)[1] for _ in range(args.repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    threads = 2
    thread_runs = [skystack_threads(wcs_in, wcs_out, image, shape, threads)[1]
                   for _ in range(args.repeats)]
    threaded, _ = skystack_threads(wcs_in, wcs_out, image, shape, threads)
    assert np.array_equal(threaded, values, equal_nan=True)

    ref_times = []
    for _ in range(args.ref_repeats):
        t0 = time.perf_counter()
        ref, ref_fp = reproject_interp((image, wcs_in), wcs_out, shape, order="bilinear")
        ref_times.append(time.perf_counter() - t0)
    t_ref = statistics.median(ref_times)

    both = np.isfinite(values) & np.isfinite(ref)
    max_rel = float(np.max(np.abs(values[both] - ref[both]) / np.abs(ref[both])))
    fp_diff = int(np.sum(np.isfinite(values) != (ref_fp > 0)))
    t_2 = statistics.median(thread_runs)

    rows = [
        ("reproject_interp(order='bilinear')", t_ref, 1.0),
        ("skystack pixel_map + bilinear, 1 thread", med["total"], t_ref / med["total"]),
        (f"skystack, {threads} threads (row bands)", t_2, t_ref / t_2),
        ("skystack, first call in process", first["total"], t_ref / first["total"]),
    ]
    print(f"\n### Bilinear reprojection of one {n}×{n} float32 frame (TAN-SIP, rotated), "
          f"{os.cpu_count()} CPUs\n")
    print("| contestant | seconds | speed-up vs reproject |")
    print("|---|---:|---:|")
    for name, sec, ratio in rows:
        print(f"| {name} | {sec:.4f} | {ratio:.1f}× |")
    print("\n| skystack part (1 thread, median) | seconds | Mpix/s |")
    print("|---|---:|---:|")
    mpix = n * n / 1e6
    for part in ("nodes_astropy", "map_interpolation", "bilinear", "total"):
        print(f"| {part} | {med[part]:.4f} | {mpix / med[part]:.0f} |")
    print(f"\nagreement with reproject: max relative difference {max_rel:.2e} where both finite "
          f"({int(both.sum())} px), footprint pixels that differ: {fp_diff}")

    result = {
        "date": dt.date.today().isoformat(),
        "size": n,
        "repeats": args.repeats,
        "ref_repeats": args.ref_repeats,
        "machine": machine(),
        "reproject_interp_seconds": t_ref,
        "reproject_interp_runs": ref_times,
        "skystack_seconds": med["total"],
        "skystack_parts_seconds": med,
        "skystack_runs": runs,
        "skystack_2threads_seconds": t_2,
        "skystack_2threads_runs": thread_runs,
        "skystack_first_call": first,
        "speedup_1thread": t_ref / med["total"],
        "speedup_2threads": t_ref / t_2,
        "max_relative_difference": max_rel,
        "footprint_pixels_differing": fp_diff,
        "finite_pixels_compared": int(both.sum()),
    }
    if args.write:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"cpu-reproject-{os.cpu_count()}core-{result['date']}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
