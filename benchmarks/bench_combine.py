"""Benchmark skystack's CPU combine against its peers, all in one run on one machine.

Usage::

    python benchmarks/bench_combine.py [--quick] [--out benchmarks/results]
                                       [--only NAME,...] [--configs 25x2048,100x1024]

For each stack configuration the frames are generated once (N(1000, 10) sky, ~1 % cosmic rays
of +5000, a few NaNs, fixed seed), written as float32 FITS files into a temporary directory and
read once so that every contestant starts from a warm page cache. Every timed operation runs in
a fresh Python process that reports its own wall time for the measured operation only (imports
and, for the in-memory peers, loading the cube are not timed) and its own peak RSS. skystack's
Numba kernels are compiled and cached on disk by an untimed warm-up combine of the same stack
first, so compilation is never measured.

Results: ``<out>/cpu-combine-<tag>-<date>[-quick].md`` (tables and ratios) and ``.json`` (raw
numbers and machine facts). See benchmarks/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEED = 20240601

FULL_CONFIGS = ["25x2048", "100x1024"]
QUICK_CONFIGS = ["10x512", "20x256"]
CLI_CONFIG = "10x512"

# Contestants in table order. "repeat" ones are cheap enough to time several times (median kept);
# the slow peers run once.
REPEATED = ["read_astropy", "skystack_median", "skystack_sigclip"]
PEERS = ["numpy_median", "bottleneck_median", "astropy_sigclip", "ccdproc_median",
         "ccdproc_sigclip"]
CONTESTANTS = REPEATED + PEERS
IN_MEMORY = {"numpy_median", "bottleneck_median", "astropy_sigclip"}

# Rough peak memory of each peer as a multiple of the float32 cube, used only to skip a peer that
# would push a small machine into swap (or the OOM killer) instead of producing a number.
MEMORY_FACTOR = {"numpy_median": 3.0, "bottleneck_median": 3.0, "astropy_sigclip": 8.0,
                 "ccdproc_median": 8.0, "ccdproc_sigclip": 12.0}

SIGCLIP = {"sigma": 3.0, "maxiters": 5, "center": "median", "spread": "std"}
CCDPROC_MEM_LIMIT = 16e9  # generous, so ccdproc combines in one chunk as the peers do

# (numerator, denominator): the ratios the project's goals are stated in.
RATIOS = [
    ("ccdproc_median", "skystack_median"),
    ("ccdproc_sigclip", "skystack_sigclip"),
    ("numpy_median", "skystack_median"),
    ("astropy_sigclip", "skystack_sigclip"),
    ("skystack_median", "read_astropy"),
    ("skystack_sigclip", "read_astropy"),
]


# --------------------------------------------------------------------------------------------
# Child side: one measured operation per process.
# --------------------------------------------------------------------------------------------

def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS, where this benchmark is not calibrated).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _load_cube(paths: list[str], shape: tuple[int, int, int]) -> np.ndarray:
    from astropy.io import fits

    cube = np.empty(shape, dtype=np.float32)
    for k, p in enumerate(paths):
        # Assignment converts FITS big-endian to native order, as any real user would.
        cube[k] = fits.getdata(p, memmap=False)
    return cube


def _skystack_combine(paths: list[str], output: str, sigclip: bool) -> None:
    import skystack

    if sigclip:
        skystack.combine_to_file(paths, output, backend="cpu", overwrite=True, method="mean",
                                 reject="sigclip", center=SIGCLIP["center"],
                                 spread=SIGCLIP["spread"], sigma=SIGCLIP["sigma"],
                                 maxiters=SIGCLIP["maxiters"])
    else:
        skystack.combine_to_file(paths, output, backend="cpu", overwrite=True, method="median")


def child_main(spec: dict) -> None:
    """Run one contestant and write {seconds, peak_rss_mib, ...} to spec['result']."""
    name = spec["contestant"]
    paths: list[str] = spec["paths"]
    shape = tuple(spec["shape"])
    output: str = spec["output"]

    # Import everything before the clock starts: import time is not what is compared (the cold
    # CLI measurement covers it for skystack).
    from astropy.io import fits

    op = None
    cube = None
    if name in ("warmup", "skystack_median", "skystack_sigclip"):
        import skystack  # noqa: F401

        # skystack imports its CPU engine (and numba) lazily; import it now so import time stays
        # out of the measurement, as it does for the peers. Loading the compiled kernels from
        # numba's disk cache still happens inside the first combine: every fresh process pays
        # it, so it is measured (and the second call below shows how much it is).
        try:
            import skystack.backends.cpu  # noqa: F401
        except ImportError:
            pass
    if name in IN_MEMORY:
        cube = _load_cube(paths, shape)

    if name == "warmup":
        def op() -> None:
            _skystack_combine(paths, output, sigclip=False)
            _skystack_combine(paths, output, sigclip=True)
    elif name == "read_astropy":
        def op() -> None:
            for p in paths:
                # memmap=False reads every byte into memory; nothing is kept afterwards.
                np.asarray(fits.getdata(p, memmap=False))
    elif name == "skystack_median":
        def op() -> None:
            _skystack_combine(paths, output, sigclip=False)
    elif name == "skystack_sigclip":
        def op() -> None:
            _skystack_combine(paths, output, sigclip=True)
    elif name == "numpy_median":
        def op() -> None:
            np.median(cube, axis=0)
    elif name == "bottleneck_median":
        import bottleneck

        def op() -> None:
            bottleneck.nanmedian(cube, axis=0)
    elif name == "astropy_sigclip":
        from astropy.stats import sigma_clip

        def op() -> None:
            sigma_clip(cube, sigma=SIGCLIP["sigma"], maxiters=SIGCLIP["maxiters"],
                       cenfunc="median", stdfunc="std", axis=0).mean(axis=0)
    elif name in ("ccdproc_median", "ccdproc_sigclip"):
        import ccdproc

        # FITS without BUNIT needs unit="adu"; dtype float32 keeps ccdproc's working arrays at
        # the inputs' (and skystack's output) precision instead of its float64 default.
        common = {"output_file": output, "overwrite_output": True,
                  "mem_limit": CCDPROC_MEM_LIMIT, "dtype": np.float32, "unit": "adu"}
        if name == "ccdproc_median":
            def op() -> None:
                ccdproc.combine(paths, method="median", **common)
        else:
            def op() -> None:
                ccdproc.combine(paths, method="average", sigma_clip=True,
                                sigma_clip_low_thresh=SIGCLIP["sigma"],
                                sigma_clip_high_thresh=SIGCLIP["sigma"],
                                sigma_clip_func=np.ma.median, sigma_clip_dev_func=np.ma.std,
                                **common)
    else:
        raise SystemExit(f"unknown contestant {name!r}")

    rss_before = _peak_rss_mib()
    t0 = time.perf_counter()
    op()
    seconds = time.perf_counter() - t0
    result = {"seconds": seconds, "peak_rss_mib": _peak_rss_mib(),
              "peak_rss_before_op_mib": rss_before}
    if name.startswith("skystack_"):
        # Same operation again in the same process: kernels loaded, thread pool started.
        t0 = time.perf_counter()
        op()
        result["seconds_second_call"] = time.perf_counter() - t0
    Path(spec["result"]).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------
# Parent side: data, scheduling, reporting.
# --------------------------------------------------------------------------------------------

def parse_config(text: str) -> tuple[int, int, int]:
    """'25x2048' -> (25, 2048, 2048); '25x2048x1024' -> (25, 2048, 1024)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 2:
        return parts[0], parts[1], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise argparse.ArgumentTypeError(f"bad configuration {text!r}: want NxSIZE or NxNYxNX")


def make_stack(directory: Path, n: int, ny: int, nx: int, seed: int) -> list[str]:
    """Write n float32 frames of sky, cosmic rays and a few NaNs; return their paths."""
    from astropy.io import fits

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        # One generator per frame: frames are identical whatever the configuration list, and
        # only one frame is ever held in memory.
        rng = np.random.default_rng([seed, n, ny, nx, k])
        data = rng.standard_normal((ny, nx), dtype=np.float32)
        data *= 10.0
        data += 1000.0
        data[rng.random((ny, nx), dtype=np.float32) < 0.01] += 5000.0
        nan_at = rng.integers(0, ny * nx, size=max(1, ny * nx // 100_000))
        data.flat[nan_at] = np.nan
        path = directory / f"frame_{k:04d}.fits"
        hdr = fits.Header({"EXPTIME": 60.0, "IMAGETYP": "LIGHT"})
        fits.writeto(path, data, hdr, overwrite=True)
        paths.append(str(path))
    return paths


def warm_page_cache(paths: list[str]) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(16 << 20):
                pass


def mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_child(name: str, paths: list[str], shape: tuple[int, int, int], workdir: Path,
              timeout: float) -> dict:
    """Run one contestant in a fresh interpreter; return its report or an error entry."""
    result = workdir / f"result-{name}.json"
    result.unlink(missing_ok=True)
    spec = {"contestant": name, "paths": paths, "shape": list(shape),
            "output": str(workdir / f"out-{name}.fits"), "result": str(result)}
    spec_path = workdir / f"spec-{name}.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not result.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return json.loads(result.read_text())


def run_cold_cli(paths: list[str], workdir: Path, repeats: int) -> dict:
    """Wall time and peak RSS of whole `skystack combine` processes (startup included)."""
    exe = Path(sys.executable).parent / "skystack"
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "skystack"]
    cmd = base + ["combine", *paths, "-o", str(workdir / "cli-out.fits"), "--method", "median",
                  "--reject", "sigclip", "--backend", "cpu", "--overwrite", "-q"]
    runs = []
    # The first run is untimed: it makes sure this exact combination is in numba's disk cache.
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if proc.returncode != 0:
            tail = " | ".join(err.strip().splitlines()[-3:])
            return {"error": f"exit {proc.returncode}: {tail}", "command": cmd[:2]}
        if i > 0:
            runs.append({"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024.0})
    return summarize(runs) | {"command": " ".join(base + ["combine", "<10 files>", "-o", "OUT",
                                                         *cmd[-8:]])}


def summarize(runs: list[dict]) -> dict:
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[-1]["error"] if runs else "not run", "runs": runs}
    out = {"seconds": statistics.median(r["seconds"] for r in good),
           "peak_rss_mib": max(r["peak_rss_mib"] for r in good),
           "n_runs": len(good), "runs": runs}
    second = [r["seconds_second_call"] for r in good if "seconds_second_call" in r]
    if second:
        out["seconds_second_call"] = statistics.median(second)
    return out


def machine_facts() -> dict:
    import astropy
    import numba

    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(mod: str) -> str | None:
        try:
            return __import__(mod).__version__
        except Exception:  # a missing peer is reported, not fatal
            return None

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None,
        "cpu_model": model,
        "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
                               1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "astropy": astropy.__version__,
        "ccdproc": version("ccdproc"),
        "bottleneck": version("bottleneck"),
        "skystack": version("skystack"),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }


def fmt_ratio(results: dict, num: str, den: str) -> str:
    a, b = results.get(num, {}), results.get(den, {})
    if "seconds" not in a or "seconds" not in b or b["seconds"] <= 0:
        return "n/a"
    return f"{a['seconds'] / b['seconds']:.2f}"


def render_markdown(report: dict) -> str:
    m = report["machine"]
    quick = ", quick" if report["quick"] else ""
    lines = [
        f"# skystack CPU combine benchmark ({report['date']}{quick})",
        "",
        f"- machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['mem_total_gib']} GiB RAM "
        f"({m['hostname']})",
        f"- python {m['python']}, numpy {m['numpy']}, numba {m['numba']}, "
        f"astropy {m['astropy']}, ccdproc {m['ccdproc']}, bottleneck {m['bottleneck']}",
        f"- skystack {m['skystack']} at commit {m['git_commit']}"
        f"{' (with uncommitted changes)' if m['git_dirty'] else ''}",
        f"- frames: float32 FITS, N(1000, 10) sky, ~1 % +5000 cosmic rays, a few NaNs; page "
        f"cache warm; each measurement in a fresh process; skystack and read_astropy: median "
        f"of {report['repeats']} runs, peers: 1 run",
        "",
        "| configuration | contestant | seconds | peak RSS (MiB) | 2nd call in process (s) |",
        "|---|---|---:|---:|---:|",
    ]
    for cfg, res in report["results"].items():
        for name in CONTESTANTS:
            if name not in res:
                continue
            r = res[name]
            if "seconds" in r:
                second = r.get("seconds_second_call")
                second_cell = "" if second is None else f"{second:.3f}"
                lines.append(f"| {cfg} | {name} | {r['seconds']:.3f} | {r['peak_rss_mib']:.0f} "
                             f"| {second_cell} |")
            else:
                lines.append(f"| {cfg} | {name} | {r.get('error', 'skipped')} | | |")
    cli = report.get("cold_cli")
    if cli is not None:
        if "seconds" in cli:
            lines.append(f"| {CLI_CONFIG} | cold_cli_10x512 | {cli['seconds']:.3f} | "
                         f"{cli['peak_rss_mib']:.0f} | |")
        else:
            lines.append(f"| {CLI_CONFIG} | cold_cli_10x512 | {cli.get('error')} | | |")
    lines += ["", "Ratios (time / time; above 1 for a peer means skystack is that many times "
              "faster; skystack / read_astropy is how many plain astropy reads of the inputs "
              "skystack's whole combine costs):", ""]
    cfgs = list(report["results"])
    lines.append("| ratio | " + " | ".join(cfgs) + " |")
    lines.append("|---|" + "---:|" * len(cfgs))
    for num, den in RATIOS:
        cells = [fmt_ratio(report["results"][c], num, den) for c in cfgs]
        lines.append(f"| {num} / {den} | " + " | ".join(cells) + " |")
    lines += ["", "Notes: skystack uses all CPUs (threads); numpy, bottleneck and astropy are "
              "single-threaded. np.median does not skip NaNs (those pixels come out NaN). "
              "ccdproc.combine clips once (it passes no maxiters), with np.ma.median / np.ma.std, "
              "at dtype float32; skystack and astropy iterate up to 5 times. skystack and "
              "ccdproc times include reading the FITS files and writing the output file; the "
              "in-memory peers start from a loaded native-endian cube. cold_cli_10x512 is the "
              "wall time of a whole `skystack combine` process (interpreter start and imports "
              "included, numba cache warm). seconds is the first call in a fresh process after "
              "imports, so for skystack it includes loading the compiled kernels from numba's "
              "disk cache; '2nd call in process' repeats the combine in that process, without "
              "that cost (the ratios use the first call).", ""]
    return "\n".join(lines)


def parent_main(args: argparse.Namespace) -> int:
    configs = args.configs or (QUICK_CONFIGS if args.quick else FULL_CONFIGS)
    only = CONTESTANTS + ["cold_cli"] if not args.only else args.only
    unknown = set(only) - set(CONTESTANTS) - {"cold_cli"}
    if unknown:
        print(f"unknown contestant(s): {', '.join(sorted(unknown))}; "
              f"choose from {', '.join(CONTESTANTS + ['cold_cli'])}", file=sys.stderr)
        return 2
    repeats = args.repeats
    needs_skystack = any(n.startswith("skystack") for n in only)

    root = Path(tempfile.mkdtemp(prefix="skystack-bench-", dir=args.workdir))
    report: dict = {"date": dt.date.today().isoformat(), "quick": args.quick, "repeats": repeats,
                    "configs": configs, "machine": machine_facts(), "results": {},
                    "parameters": {"seed": SEED, "sigclip": SIGCLIP,
                                   "ccdproc_mem_limit": CCDPROC_MEM_LIMIT,
                                   "skystack_mem_limit": "default",
                                   "cosmic_ray_fraction": 0.01, "cosmic_ray_amplitude": 5000.0,
                                   "nan_per_frame": "1 per 100000 pixels (at least 1)"}}
    # With only the cold CLI selected there is nothing to run on the configurations.
    if not any(name in CONTESTANTS for name in only):
        configs = []
    try:
        for cfg in configs:
            n, ny, nx = parse_config(cfg)
            shape = (n, ny, nx)
            work = root / cfg
            print(f"[{cfg}] writing {n} frames of {ny}x{nx} float32 ...", flush=True)
            paths = make_stack(work / "frames", n, ny, nx, SEED)
            warm_page_cache(paths)
            res: dict = {}
            report["results"][cfg] = res

            if needs_skystack:
                print(f"[{cfg}] warm-up skystack combine (untimed)", flush=True)
                w = run_child("warmup", paths, shape, work, args.timeout)
                if "error" in w:
                    print(f"[{cfg}]   warm-up failed: {w['error']}", flush=True)

            # Interleave the repeated contestants so slow drift (another load on the machine,
            # thermal state) spreads over all of them instead of biasing one.
            runs: dict[str, list[dict]] = {name: [] for name in REPEATED if name in only}
            for rep in range(repeats):
                for name in runs:
                    r = run_child(name, paths, shape, work, args.timeout)
                    runs[name].append(r)
                    print(f"[{cfg}] {name} run {rep + 1}: "
                          f"{r.get('error') or format(r['seconds'], '.3f') + ' s'}", flush=True)
            for name, rs in runs.items():
                res[name] = summarize(rs)

            cube_bytes = n * ny * nx * 4
            avail = mem_available_bytes()
            for name in PEERS:
                if name not in only:
                    continue
                need = MEMORY_FACTOR[name] * cube_bytes
                if avail is not None and need > 0.8 * avail:
                    res[name] = {"error": f"skipped: needs ~{need / 2**30:.1f} GiB, "
                                          f"{avail / 2**30:.1f} GiB available"}
                    print(f"[{cfg}] {name}: {res[name]['error']}", flush=True)
                    continue
                r = run_child(name, paths, shape, work, args.timeout)
                res[name] = summarize([r])
                print(f"[{cfg}] {name}: "
                      f"{r.get('error') or format(r['seconds'], '.3f') + ' s'}", flush=True)
            shutil.rmtree(work / "frames", ignore_errors=True)

        if "cold_cli" in only:
            n, ny, nx = parse_config(CLI_CONFIG)
            print(f"[cold CLI] {CLI_CONFIG}: 1 untimed + {repeats} timed processes", flush=True)
            paths = make_stack(root / "cli" / "frames", n, ny, nx, SEED)
            warm_page_cache(paths)
            report["cold_cli"] = run_cold_cli(paths, root / "cli", repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    tag = args.tag or f"{os.cpu_count()}core"
    stem = f"cpu-combine-{tag}-{report['date']}{'-quick' if args.quick else ''}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = render_markdown(report)
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(md)
    print(f"wrote {out / (stem + '.md')} and {out / (stem + '.json')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"small stacks ({', '.join(QUICK_CONFIGS)}) to check the script works")
    p.add_argument("--out", default=str(HERE / "results"),
                   help="directory for the .md and .json results (default: benchmarks/results)")
    p.add_argument("--only", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   help="comma-separated contestants: " + ", ".join(CONTESTANTS + ["cold_cli"]))
    p.add_argument("--configs", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   help="comma-separated NxSIZE stacks, e.g. 25x2048,100x1024 (default: "
                        f"{','.join(FULL_CONFIGS)}, or {','.join(QUICK_CONFIGS)} with --quick)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of skystack and read_astropy; the median is kept (3)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds before one contestant's process is abandoned (1800)")
    p.add_argument("--tag", help="machine tag in the result file name (default: <ncpu>core)")
    p.add_argument("--workdir", help="where the temporary frames go (default: system temp)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(json.loads(Path(args.child).read_text()))
        return 0
    for c in args.configs or []:
        try:
            parse_config(c)
        except (ValueError, argparse.ArgumentTypeError) as e:
            p.error(f"--configs: {e}")
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
