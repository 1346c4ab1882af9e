"""Run every benchmark of skystack with one command and leave the results in benchmarks/results/.

Usage::

    python benchmarks/run_all.py            # the full benchmarks (tens of minutes)
    python benchmarks/run_all.py --quick    # small sizes: checks that every script still works
    python benchmarks/run_all.py --only bench_combine,skystack_bench --dry-run

Runs, one after the other, each in its own process from the repository root: every
``benchmarks/bench_*.py`` script (the known ones with the flags below; any other with
``--quick`` and ``--out benchmarks/results`` if its ``--help`` offers them), then
``skystack bench`` into ``results/bench-[quick-]<ncpu>core-<date>/``. GPU-only scripts are
skipped with a message when no usable GPU is found. A failing script does not stop the others;
the exit code is 1 if any failed.

Quick mode is a smoke test: the scripts that name their results ``-quick`` write them
(bench_combine, bench_night, bench_gpu, skystack bench); bench_stack and bench_reproject are run
without ``--write``; bench_memory, which always writes, writes ``cpu-memory-<ncpu>core-<date>``
(replacing a full result of the same day).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

# name -> (GPU only, full-run arguments, quick-run arguments), from each script's argparse.
KNOWN: dict[str, tuple[bool, list[str], list[str]]] = {
    "bench_combine": (False, ["--out", str(RESULTS)], ["--quick", "--out", str(RESULTS)]),
    "bench_memory": (False, [], ["--size", "256", "--frames", "5,10", "--limits", "64MB"]),
    "bench_stack": (False, ["--write"], ["--n", "5", "--size", "256"]),
    "bench_reproject": (False, ["--write", "--out", str(RESULTS)],
                        ["--size", "256", "--repeats", "1", "--ref-repeats", "1"]),
    "bench_night": (False, ["--out", str(RESULTS)], ["--quick", "--out", str(RESULTS)]),
    "bench_gpu": (True, ["--out", str(RESULTS)], ["--quick", "--out", str(RESULTS)]),
}
ORDER = ["bench_combine", "bench_memory", "bench_stack", "bench_reproject", "bench_night",
         "bench_register", "bench_cluster", "bench_gpu"]
SKYSTACK_BENCH = "skystack_bench"


def gpu_status() -> tuple[bool, str]:
    try:
        from skystack.backends.gpu import probe
    except ImportError as exc:  # skystack not installed in this interpreter
        return False, f"skystack not importable ({exc})"
    return probe()


def _help_flags(script: Path) -> set[str]:
    """The long options a script's --help lists (empty if it has no --help)."""
    try:
        out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                             text=True, timeout=120, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(re.findall(r"--[a-z][a-z0-9-]*", out.stdout))


def plan(quick: bool) -> list[tuple[str, list[str], bool]]:
    """``(name, command, gpu_only)`` for every benchmark present, in a sensible order."""
    present = sorted(p.stem for p in HERE.glob("bench_*.py"))
    names = [n for n in ORDER if n in present] + [n for n in present if n not in ORDER]
    steps = []
    for name in names:
        script = HERE / f"{name}.py"
        if name in KNOWN:
            gpu_only, full, fast = KNOWN[name]
            args = fast if quick else full
        else:
            # A benchmark added later: use the flags it offers.
            flags = _help_flags(script)
            gpu_only = "gpu" in name or "cuda" in name
            args = (["--quick"] if quick and "--quick" in flags else []) + \
                (["--out", str(RESULTS)] if "--out" in flags else []) + \
                (["--write"] if not quick and "--write" in flags else [])
        steps.append((name, [sys.executable, str(script), *args], gpu_only))
    tag = f"{'quick-' if quick else ''}{os.cpu_count()}core-{dt.date.today().isoformat()}"
    bench = [sys.executable, "-m", "skystack", "bench", "-o", str(RESULTS / f"bench-{tag}"),
             "--overwrite"] + (["--quick"] if quick else [])
    steps.append((SKYSTACK_BENCH, bench, False))
    return steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test of each")
    p.add_argument("--only", help="comma-separated names (e.g. bench_combine,skystack_bench)")
    p.add_argument("--skip", default="", help="comma-separated names to leave out")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--timeout", type=float, default=4 * 3600.0,
                   help="seconds before one benchmark is abandoned (4 h)")
    args = p.parse_args(argv)
    steps = plan(args.quick)
    names = [s[0] for s in steps]
    only = {x.strip() for x in args.only.split(",")} if args.only else set(names)
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    unknown = (only | skip) - set(names)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have {', '.join(names)}",
              file=sys.stderr)
        return 2
    gpu_ok, gpu_reason = gpu_status()
    RESULTS.mkdir(exist_ok=True)
    summary = []
    for name, cmd, gpu_only in steps:
        if name not in only or name in skip:
            continue
        shown = " ".join(cmd).replace(str(REPO) + "/", "")
        if gpu_only and not gpu_ok:
            print(f"== {name}: skipped, no usable GPU ({gpu_reason})", flush=True)
            summary.append((name, "skipped (no GPU)", 0.0))
            continue
        print(f"== {name}: {shown}", flush=True)
        if args.dry_run:
            continue
        t0 = time.perf_counter()
        try:
            code = subprocess.run(cmd, cwd=REPO, timeout=args.timeout).returncode
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            status = f"failed (timed out after {args.timeout:.0f} s)"
        summary.append((name, status, time.perf_counter() - t0))
    if args.dry_run:
        return 0
    print("\n| benchmark | result | seconds |\n|---|---|---:|")
    for name, status, seconds in summary:
        print(f"| {name} | {status} | {seconds:.0f} |")
    print(f"\nresults in {RESULTS}")
    return 1 if any(s.startswith("failed") for _, s, _ in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
