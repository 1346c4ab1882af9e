"""Peak memory of ``skystack combine`` against ``--mem-limit`` and the number of frames.

Writes float32 stacks of one frame size with growing frame counts, runs the CLI in a fresh process
under several memory limits, and reports the child's peak RSS (``os.wait4``), so that a table
shows whether peak memory stays within the limit plus a fixed overhead, whatever the frame count.

    python benchmarks/bench_memory.py [--size 1024] [--frames 25,100,200] [--limits 64MB,256MB]
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

RESULTS = Path(__file__).resolve().parent / "results"


def write_stack(folder: Path, n: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    frame = rng.normal(1000, 10, (size, size)).astype(np.float32)
    paths = []
    for k in range(n):
        p = folder / f"m{k:04d}.fits"
        if not p.exists():
            # Distinct frames cost generation time that says nothing about memory: shift one.
            fits.PrimaryHDU(np.roll(frame, k, axis=1)).writeto(p)
        paths.append(str(p))
    return paths


def run_child(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one CLI process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(proc.stderr.read().decode())
    return seconds, usage.ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--frames", default="25,100,200")
    ap.add_argument("--limits", default="64MB,256MB")
    ap.add_argument("--method", default="median")
    a = ap.parse_args()
    frames = [int(x) for x in a.frames.split(",")]
    limits = a.limits.split(",")
    work = Path(tempfile.mkdtemp(prefix="skystack-mem-"))
    rows = []
    try:
        cli = [sys.executable, "-m", "skystack", "combine"]
        for n in frames:
            paths = write_stack(work, n, a.size)
            for limit in limits:
                out = work / "out.fits"
                seconds, rss = run_child([*cli, *paths[:n], "-o", str(out), "--overwrite", "-q",
                                          "--backend", "cpu", "--method", a.method,
                                          "--mem-limit", limit])
                rows.append(dict(frames=n, size=a.size, mem_limit=limit, seconds=seconds,
                                 peak_rss_mib=rss, input_mib=n * a.size**2 * 4 / 2**20))
                print(f"{n:5d} x {a.size}^2  --mem-limit {limit:>6}: {seconds:6.2f} s, "
                      f"peak RSS {rss:7.1f} MiB (inputs {rows[-1]['input_mib']:.0f} MiB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    date = dt.date.today().isoformat()
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"cpu-memory-{os.cpu_count()}core-{date}"
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = [f"# Peak memory of skystack combine ({date}, {os.cpu_count()} cores, "
             f"method {a.method})", "",
             "| frames | size | --mem-limit | seconds | peak RSS MiB | inputs MiB |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['frames']} | {r['size']}² | {r['mem_limit']} | {r['seconds']:.2f} | "
              f"{r['peak_rss_mib']:.0f} | {r['input_mib']:.0f} |" for r in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
