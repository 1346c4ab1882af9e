"""The night on the GPU: ``skystack night --backend gpu`` against ``--backend cpu`` (all cores)
on the same generated night, in one run on one machine.

Usage (benchmarks/gpu/session.sh runs it)::

    python benchmarks/gpu/night_gpu.py --out night.json [--size 2048] [--n-light 10]
                                       [--dry-run] [--workdir DIR]

The night is bench_night.py's (``skystack.demo_data.write_sample_night``, fixed seed): ``size``²
uint16 frames, biases, darks of 30 and 60 s, flats and 90 s lights of M67 in V and R, dithered
and rotated, with cosmic rays. Each backend runs as a whole process (interpreter start and
imports included) into a fresh output directory, after one untimed run that fills the kernel
caches (numba's disk cache; CuPy's compiled kernels); dirty pages are written out before every
timed run. The stacks of the two backends are compared over the pixels both cover (largest
relative difference, coverage mismatches). ``--dry-run`` (no GPU) runs the CPU side on a 256²
night and reports the GPU rows as skipped.

Writes one JSON file: ``{"size", "frames", "rows": [{"name", "seconds", "peak_rss_mib"} or
{"name", "skipped"}], "comparison": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench_night import (  # noqa: E402  (benchmarks/ is not a package)
    FULL,
    QUICK,
    run_skystack,
    warm_page_cache,
    write_night,
)

ARGS = ["--no-previews", "-q"]


def compare_stacks(gpu_out: Path, cpu_out: Path) -> dict:
    """Per stack: the largest |gpu - cpu| / |cpu| over pixels both cover, and the number of
    pixels whose COUNT differs."""
    from astropy.io import fits

    result = {}
    for cpu_path in sorted((cpu_out / "stacks").glob("*.fits")):
        gpu_path = gpu_out / "stacks" / cpu_path.name
        if not gpu_path.exists():
            result[cpu_path.name] = {"error": "missing from the GPU run"}
            continue
        with fits.open(cpu_path) as c, fits.open(gpu_path) as g:
            ci, gi = c[0].data.astype(np.float64), g[0].data.astype(np.float64)
            both = np.isfinite(ci) & np.isfinite(gi) & (ci != 0)
            result[cpu_path.name] = {
                "max_rel_diff": float(np.max(np.abs(gi[both] - ci[both]) / np.abs(ci[both]),
                                             initial=0.0)),
                "count_mismatches": int((c["COUNT"].data != g["COUNT"].data).sum()),
            }
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--size", type=int, help="frame side (default 2048; dry run 256)")
    ap.add_argument("--n-light", type=int, help="lights per filter (default 10)")
    ap.add_argument("--dry-run", action="store_true", help="no GPU: CPU rows only")
    ap.add_argument("--workdir", help="where the night and the products go (default: temp)")
    args = ap.parse_args(argv)
    cfg = dict(QUICK if args.dry_run else FULL)
    if args.size:
        cfg["size"] = args.size
    if args.n_light:
        cfg["n_light"] = args.n_light
    report = {"size": cfg["size"], "config": cfg, "rows": []}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        raw = Path(tmp) / "raw"
        report["write_seconds"] = write_night(raw, cfg, timeout=300)
        report["frames"] = len(list(raw.glob("*.fits")))
        warm_page_cache(raw)
        outs = {}
        for backend in ("gpu", "cpu"):
            name = f"night_{backend}"
            if backend == "gpu" and args.dry_run:
                report["rows"].append({"name": name, "skipped": "no GPU"})
                continue
            extra = ["--backend", backend, *ARGS]
            warm = run_skystack(raw, Path(tmp) / f"warm_{backend}", extra, timeout=300)
            if "error" in warm:
                report["rows"].append({"name": name, "error": warm["error"]})
                continue
            outs[backend] = Path(tmp) / f"out_{backend}"
            run = run_skystack(raw, outs[backend], extra, timeout=300)
            report["rows"].append({"name": name, **run})
            print(f"{name}: {run}", flush=True)
        if len(outs) == 2:
            report["comparison"] = compare_stacks(outs["gpu"], outs["cpu"])
            g, c = (r.get("seconds") for r in report["rows"])
            if g and c:
                report["speedup_gpu_vs_cpu"] = c / g
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    failed = [r for r in report["rows"] if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
