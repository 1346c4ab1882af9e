"""CPU speed of the resampling methods on one stack: bilinear vs Lanczos-3/-4 vs drizzle.

Usage::

    python benchmarks/bench_resampling_speed.py [--n 10] [--size 1024] [--repeat 5]
        [--methods bilinear,lanczos3,lanczos4,drizzle] [--threads 2] [--write]

The same ``n`` float32 frames of ``size``² (TAN WCS, dithered by up to 20 px, rotated by up to
±1°, stars on a sky of 1000 ADU with noise and cosmic rays; the synthetic night of
``bench_stack.py``) are stacked with ``skystack.stack(..., backend="cpu")`` once per method:
mean with sigma clipping for the interpolations, mean without rejection for drizzle (drizzle
cannot reject). Numba kernels are compiled and cached by an untimed warm-up. The machine this
runs on may be shared, so the methods are run interleaved (one round = each method once) for
``repeat`` rounds and the best time of each is kept; the table gives it and its ratio to
bilinear's best (the issue's goal: each new method within 2x bilinear). ``--write`` also saves
the table as ``results/cpu-resampling-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_stack import frame_wcs  # noqa: E402  (shared synthetic WCS)


def write_frames(folder: Path, n: int, size: int) -> list[str]:
    """``n`` synthetic frames of ``size``² with small dithers and rotations."""
    import numpy as np
    from astropy.io import fits

    rng = np.random.default_rng(11)
    shape = (size, size)
    stars = rng.uniform(0, size, (300, 2))
    flux = rng.uniform(500, 20000, 300)
    ref = frame_wcs(shape, 0, 0, 0)
    world = ref.pixel_to_world_values(stars[:, 0], stars[:, 1])
    paths = []
    for k in range(n):
        w = frame_wcs(shape, rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-1, 1))
        img = rng.normal(1000, 10, shape).astype(np.float32)
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


def run_once(paths: list[str], method: str, threads: int) -> float:
    """Seconds for one in-memory stack of ``paths`` with resampling ``method``."""
    import skystack

    reject = "none" if method == "drizzle" else "sigclip"
    t0 = time.perf_counter()
    skystack.stack(paths, interp=method, method="mean", reject=reject, backend="cpu",
                   threads=threads)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="bilinear,lanczos3,lanczos4,drizzle")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    if "bilinear" not in methods:
        methods.insert(0, "bilinear")
    with tempfile.TemporaryDirectory() as tmp:
        small = write_frames(Path(tmp), 3, 128)  # warm-up: compile / load the kernels
        for m in methods:
            run_once(small, m, args.threads)
        big = Path(tmp) / "big"
        big.mkdir()
        paths = write_frames(big, args.n, args.size)
        best = {m: float("inf") for m in methods}
        for r in range(args.repeat):
            for m in methods:
                best[m] = min(best[m], run_once(paths, m, args.threads))
            print(f"round {r + 1}: " + ", ".join(f"{m} {best[m]:.2f}s" for m in methods),
                  file=sys.stderr)
    lines = [f"{args.n} frames {args.size}x{args.size}, threads {args.threads}, best of "
             f"{args.repeat} interleaved rounds", "",
             "| method | best (s) | / bilinear |", "|---|---:|---:|"]
    lines += [f"| {m} | {best[m]:.2f} | {best[m] / best['bilinear']:.2f} |" for m in methods]
    print("\n".join(lines))
    if args.write:
        out = HERE / "results" / f"cpu-resampling-{dt.date.today().isoformat()}.md"
        out.write_text("\n".join(lines) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
