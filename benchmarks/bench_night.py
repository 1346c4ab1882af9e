"""A whole night, raw frames to stacks: ``skystack night`` vs the astropy + ccdproc + reproject
reference (tests/reference_night.py), side by side in one run on one machine.

Usage::

    python benchmarks/bench_night.py [--quick] [--size 2048] [--n-light 10] [--repeats 3]
                                     [--out benchmarks/results] [--skystack-args "..."]

The night (``skystack.demo_data.write_sample_night``, fixed seed): ``size``² frames (ADU,
uint16), 9 biases, 5 darks of 30 s and 5 of 60 s, 5 flats in each of V and R, ``n_light``
lights of M67 per filter at 90 s (no 90 s dark: the 60 s dark is scaled by 1.5), dithered by up
to 20 px and rotated by up to 1.5 degrees, cosmic rays in every light. Defaults (2048², 10
lights) make the reference take ~1.5 minutes on a 2-core machine; ``--quick`` is a 256² night
that only checks the script works. The frames are written by a separate process (so that its
memory does not count as the reference's) and read once to warm the page cache. Before every
timed run dirty pages are written out (``os.sync``, untimed), so that no run pays for the
write-back of the generated night or of an earlier run's products.

Contestants, each from the raw directory to masters and stacks on disk:

* ``skystack``: ``python -m skystack night RAW -o OUT --backend cpu --no-previews
  --reject sigclip --center median --spread mad --sigma 3 --maxiters 5 -q`` (the reference's
  stacking rule), a whole process (interpreter start and imports included) into a fresh
  ``OUT`` each time, after one untimed run that fills numba's disk cache; ``--repeats`` runs,
  the median is kept.
* ``reference``: ``reduce_night(RAW, OUT, grid=...)`` of tests/reference_night.py called in
  this process (imports not timed), once: master bias (sigma-clipped mean), darks per exposure
  time, flats per filter, calibrated lights ``reproject_interp(order="bilinear")``-ed onto the
  first light of each (OBJECT, FILTER) -- or of each OBJECT, whichever skystack's stacks use
  (``--reference-grid auto``) -- and combined with astropy's sigma_clip + mean.

The products are compared: master bias and darks (rms and max difference, ADU), master flats
(max and rms of skystack / reference - 1), stacks (median of skystack / reference over pixels
both cover; the robust sigma (1.4826 MAD), rms and 99th percentile of the absolute difference
over the median level).

Results: ``<out>/cpu-night-<date>[-quick].md`` (tables) and ``.json`` (raw numbers, machine
facts: CPU model and count, memory, python / numpy / astropy / ccdproc / reproject / numba
versions, skystack version and commit). Compare timings only within one result file.

Conventions: images in ADU, times in seconds, arrays indexed (row, col).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
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
SEED = 20261122

FULL = {"size": 2048, "n_bias": 9, "n_dark": 5, "n_flat": 5, "n_light": 10}
QUICK = {"size": 256, "n_bias": 5, "n_dark": 3, "n_flat": 3, "n_light": 4}
NIGHT = {"dark_exptimes": (30.0, 60.0), "filters": ("V", "R"), "light_exptime": 90.0,
         "object_name": "M67", "dither_px": 20.0, "rotation_deg": 1.5, "seed": SEED}
SKYSTACK_ARGS = ["--backend", "cpu", "--no-previews", "--reject", "sigclip", "--center",
                 "median", "--spread", "mad", "--sigma", "3", "--maxiters", "5", "-q"]


# --------------------------------------------------------------------------------------------
# The night
# --------------------------------------------------------------------------------------------

def night_kwargs(cfg: dict) -> dict:
    """Arguments of write_sample_night for a configuration (``size``, counts)."""
    return dict(NIGHT, shape=(cfg["size"], cfg["size"]), n_bias=cfg["n_bias"],
                n_dark=cfg["n_dark"], n_flat=cfg["n_flat"], n_light=cfg["n_light"])


def write_night(raw: Path, cfg: dict, timeout: float) -> float:
    """Write the night in a child process (its memory stays out of ours); return seconds."""
    kwargs = night_kwargs(cfg)
    code = ("import json, sys\n"
            "from skystack.demo_data import write_sample_night\n"
            "kw = json.loads(sys.argv[2])\n"
            "kw['shape'] = tuple(kw['shape'])\n"
            "write_sample_night(sys.argv[1], **kw)\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(raw), json.dumps(kwargs)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"writing the night failed:\n{proc.stderr.strip()}")
    return time.perf_counter() - t0


def settle() -> None:
    """Write dirty pages out (untimed) so that a timed run does not pay for the write-back of
    the generated night or of an earlier run's products (both contestants get this)."""
    os.sync()


def warm_page_cache(directory: Path) -> None:
    for p in sorted(directory.glob("*.fits")):
        with open(p, "rb") as f:
            while f.read(16 << 20):
                pass


# --------------------------------------------------------------------------------------------
# Contestants
# --------------------------------------------------------------------------------------------

def skystack_command(raw: Path, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "skystack", "night", str(raw), "-o", str(out), *extra]


def check_skystack_night() -> float:
    """Fail with a clear message unless ``python -m skystack night`` exists; return the wall
    time of ``night --help`` (interpreter start and CLI import)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "skystack", "night", "--help"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemExit(f"bench_night: cannot run `python -m skystack night --help`: {e}") \
            from None
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or "night" not in proc.stdout:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise SystemExit("bench_night: `python -m skystack night` is not available in this "
                         f"installation (exit {proc.returncode}: {tail}); install the skystack "
                         "that has the night command (`pip install -e .`) and run again")
    return seconds


def run_skystack(raw: Path, out: Path, extra: list[str], timeout: float) -> dict:
    """One whole ``skystack night`` process into a fresh ``out``: wall seconds, peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    settle()
    cmd = skystack_command(raw, out, extra)
    # stderr goes to a file: a pipe nobody reads while we wait could fill up and block it.
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = t0 + timeout
        while True:
            # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all).
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                return {"error": f"timed out after {timeout:.0f} s"}
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = " | ".join(text.strip().splitlines()[-5:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024.0}


def _reference_module():
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import reference_night
    finally:
        sys.path.pop(0)
    return reference_night


def detect_grid(raw: Path, sky_out: Path) -> str:
    """The reference grid rule that skystack's stacks follow: ``"first"`` (first light of each
    (OBJECT, FILTER)) or ``"object"`` (first light of each OBJECT); ``"first"`` if unclear."""
    from astropy.io import fits
    from astropy.wcs import WCS

    rn = _reference_module()
    groups: dict[tuple[str, str], list[Path]] = {}
    for p in sorted(raw.glob("*.fits")):
        h = fits.getheader(p)
        if "light" in str(h.get("IMAGETYP", "")).lower():
            groups.setdefault((str(h["OBJECT"]).strip(), str(h["FILTER"]).strip()), []).append(p)
    votes = set()
    for (obj, filt), paths in groups.items():
        stack = sky_out / "stacks" / f"{rn.product_name(obj, filt)}.fits"
        if not stack.exists():
            continue
        w = WCS(fits.getheader(stack)).celestial
        candidates = {"first": rn.first_light(paths),
                      "object": rn.first_light([q for (o, _), ps in groups.items() if o == obj
                                                for q in ps])}
        if candidates["first"] == candidates["object"]:
            continue  # both rules pick the same frame here
        for rule, frame in candidates.items():
            c = WCS(fits.getheader(frame)).celestial
            if np.allclose(w.wcs.crpix, c.wcs.crpix, atol=1e-6) and np.allclose(
                    w.pixel_scale_matrix, c.pixel_scale_matrix, rtol=1e-9, atol=1e-12):
                votes.add(rule)
    return votes.pop() if len(votes) == 1 else "first"


def run_reference(raw: Path, out: Path, grid: str) -> dict:
    """tests/reference_night.reduce_night in this process (imported before the clock)."""
    import resource

    reference_night = _reference_module()
    shutil.rmtree(out, ignore_errors=True)
    settle()
    t0 = time.perf_counter()
    products = reference_night.reduce_night(raw, out, grid=grid)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "grid": grid,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "steps": products.seconds, "n_frames": products.n_frames,
            "dark_used": sorted(set(products.dark_used.values())),
            "stacks": {f"{o}_{f}": str(p.relative_to(out))
                       for (o, f), p in products.stacks.items()}}


# --------------------------------------------------------------------------------------------
# Products
# --------------------------------------------------------------------------------------------

def _load(path: Path) -> np.ndarray:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float64)


def compare_products(sky_out: Path, ref_out: Path) -> dict:
    """Differences of skystack's products from the reference's, by product name."""
    out: dict = {}
    for ref_path in sorted((ref_out / "masters").glob("*.fits")) + sorted(
            (ref_out / "stacks").glob("*.fits")):
        rel = ref_path.relative_to(ref_out)
        name = str(rel.with_suffix(""))
        sky_path = sky_out / rel
        if not sky_path.exists():
            out[name] = {"error": f"skystack wrote no {rel}"}
            continue
        a, b = _load(sky_path), _load(ref_path)
        if a.shape != b.shape:
            out[name] = {"error": f"shapes differ: skystack {a.shape}, reference {b.shape}"}
            continue
        both = np.isfinite(a) & np.isfinite(b)
        entry: dict = {"pixels_compared": int(both.sum()),
                       "nan_only_in_skystack": int((~np.isfinite(a) & np.isfinite(b)).sum()),
                       "nan_only_in_reference": int((np.isfinite(a) & ~np.isfinite(b)).sum())}
        a, b = a[both], b[both]
        if name.startswith("masters/flat"):
            rel_diff = a / b - 1
            entry |= {"max_rel_diff": float(np.max(np.abs(rel_diff))),
                      "rms_rel_diff": float(np.sqrt(np.mean(rel_diff**2))),
                      "median_ratio": float(np.median(a / b))}
        elif name.startswith("stacks/"):
            level = float(np.median(b))
            entry |= {"median_ratio": float(np.median(a) / level),
                      "pixel_median_ratio": float(np.median(a / b)),
                      "rms_diff_over_level": float(np.sqrt(np.mean((a - b) ** 2)) / level),
                      "p99_abs_diff_over_level": float(np.percentile(np.abs(a - b), 99) / level),
                      # Robust spread of the difference: the bulk, without the few pixels where
                      # the two reject differently (star cores, bad pixels).
                      "mad_std_diff_over_level": float(
                          1.482602218505602 * np.median(np.abs(a - b - np.median(a - b)))
                          / level),
                      "reference_median_adu": level}
        else:
            d = a - b
            entry |= {"mean_diff_adu": float(d.mean()), "rms_diff_adu": float(d.std()),
                      "max_abs_diff_adu": float(np.max(np.abs(d))),
                      "reference_median_adu": float(np.median(b))}
        out[name] = entry
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def git_commit() -> str | None:
    """HEAD's commit read from .git (no git process)."""
    git = REPO / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(None, 1)[1]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except (OSError, IndexError):
        pass
    return None


def machine_facts() -> dict:
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
        except Exception:  # a missing package is reported, not fatal
            return None

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
        **{mod: version(mod) for mod in ("numpy", "scipy", "astropy", "ccdproc", "reproject",
                                         "numba", "skystack")},
        "git_commit": git_commit(),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def render_markdown(report: dict) -> str:
    m, cfg, res = report["machine"], report["night"], report["results"]
    quick = ", quick" if report["quick"] else ""
    n_frames = cfg["n_bias"] + 2 * cfg["n_dark"] + 2 * cfg["n_flat"] + 2 * cfg["n_light"]
    lines = [
        f"# skystack night vs astropy + ccdproc + reproject ({report['date']}{quick})",
        "",
        f"- machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['mem_total_gib']} GiB RAM "
        f"({m['hostname']})",
        f"- python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, astropy "
        f"{m['astropy']}, ccdproc {m['ccdproc']}, reproject {m['reproject']}, numba "
        f"{m['numba']}",
        f"- skystack {m['skystack']} at commit {m['git_commit']}",
        f"- night: {n_frames} frames of {cfg['size']}x{cfg['size']} uint16: {cfg['n_bias']} "
        f"bias, {cfg['n_dark']} darks each of 30 and 60 s, {cfg['n_flat']} flats each in V "
        f"and R, {cfg['n_light']} lights of M67 each in V and R at 90 s (60 s dark scaled), "
        f"dither <= 20 px, rotation <= 1.5 deg; written in {report['write_seconds']:.1f} s; "
        "page cache warm, dirty pages written out before each timed run",
        f"- skystack: `{report['skystack_command']}`, whole process, median of "
        f"{report['repeats']} runs after an untimed one; reference: `reduce_night(RAW, OUT, "
        f"grid={res.get('reference', {}).get('grid', 'first')!r})` in process, imports not "
        "timed, 1 run",
        "",
        "| contestant | seconds | peak RSS (MiB) |",
        "|---|---:|---:|",
    ]
    for name in ("skystack", "reference"):
        r = res.get(name, {})
        if "seconds" in r:
            lines.append(f"| {name} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} |")
        else:
            lines.append(f"| {name} | {r.get('error', 'not run')} | |")
    ratio = report.get("ratio")
    lines += ["", f"**reference / skystack: {_fmt(ratio, '.1f') or 'n/a'}x** (above 1: skystack "
              "faster; the issue's goal is >= 20)", ""]
    steps = res.get("reference", {}).get("steps")
    if steps:
        lines += ["Reference steps (s): " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()),
                  ""]
    startup = report.get("skystack_cli_startup_seconds")
    if startup is not None:
        lines += [f"`python -m skystack night --help` takes {startup:.2f} s (interpreter and CLI "
                  "start, part of every skystack time above).", ""]
    comp = report.get("products")
    if comp:
        lines += ["Products, skystack against the reference:", "",
                  "| product | comparison |", "|---|---|"]
        for name, c in comp.items():
            if "error" in c:
                cell = c["error"]
            elif name.startswith("masters/flat"):
                cell = (f"max \\|ratio - 1\\| {c['max_rel_diff']:.2e}, rms {c['rms_rel_diff']:.2e}"
                        f", median ratio {c['median_ratio']:.6f}")
            elif name.startswith("stacks/"):
                cell = (f"median ratio {c['median_ratio']:.5f} (per pixel "
                        f"{c['pixel_median_ratio']:.5f}), difference: robust sigma "
                        f"{100 * c['mad_std_diff_over_level']:.2f} %, rms "
                        f"{100 * c['rms_diff_over_level']:.2f} %, 99th percentile of "
                        f"\\|difference\\| {100 * c['p99_abs_diff_over_level']:.2f} % of the "
                        f"median level {c['reference_median_adu']:.1f} ADU")
            else:
                cell = (f"mean {c['mean_diff_adu']:+.3f}, rms {c['rms_diff_adu']:.3f}, max "
                        f"{c['max_abs_diff_adu']:.1f} ADU (level {c['reference_median_adu']:.1f})")
            nan_a, nan_b = c.get("nan_only_in_skystack", 0), c.get("nan_only_in_reference", 0)
            if nan_a or nan_b:
                cell += f"; NaN only in skystack {nan_a}, only in the reference {nan_b}"
            lines.append(f"| {name} | {cell} |")
        lines.append("")
    lines += ["Notes: skystack uses all CPUs (threads); ccdproc, astropy and reproject run "
              "single-threaded as called by the reference. skystack's time is a whole process "
              "(interpreter start, imports, loading numba's cached kernels, masters, bad-pixel "
              "mask, calibration, stacks, summary.json), the reference's the reduce_night call "
              "alone. The two may differ in noise-level details (skystack masks bad pixels; "
              "ccdproc clips the bias once), so product differences are expected at the noise "
              "level, not at rounding level.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a 256² night: checks the script works")
    p.add_argument("--size", type=int, help=f"frame side, pixels (default {FULL['size']})")
    p.add_argument("--n-light", type=int,
                   help=f"lights per filter (default {FULL['n_light']})")
    p.add_argument("--repeats", type=int, default=3, help="timed skystack runs (median; 3)")
    p.add_argument("--skystack-args", default=" ".join(SKYSTACK_ARGS),
                   help="options of `skystack night` after RAW -o OUT (default: %(default)s)")
    p.add_argument("--reference-grid", choices=("auto", "first", "object"), default="auto",
                   help="grid of the reference's stacks: the first light of each (OBJECT, "
                        "FILTER), of each OBJECT, or (auto, default) the rule skystack's "
                        "stacks follow, so that the stacks compare pixel to pixel")
    p.add_argument("--out", default=str(HERE / "results"),
                   help="directory for the .md and .json results (default: benchmarks/results)")
    p.add_argument("--workdir", help="where the night and products go (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the night and the products")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds before a skystack run is abandoned (1800)")
    args = p.parse_args(argv)

    cfg = dict(QUICK if args.quick else FULL)
    if args.size:
        cfg["size"] = args.size
    if args.n_light:
        cfg["n_light"] = args.n_light
    extra = shlex.split(args.skystack_args)

    startup = check_skystack_night()  # before minutes of work
    root = Path(tempfile.mkdtemp(prefix="skystack-bench-night-", dir=args.workdir))
    raw = root / "raw"
    report: dict = {"date": dt.date.today().isoformat(), "quick": args.quick,
                    "repeats": args.repeats, "night": cfg | {"options": night_kwargs(cfg)},
                    "machine": machine_facts(), "results": {},
                    "skystack_cli_startup_seconds": startup,
                    "skystack_command": " ".join(["python -m skystack night RAW -o OUT",
                                                  *extra])}
    status = 0
    try:
        print(f"writing a {cfg['size']}x{cfg['size']} night ...", flush=True)
        report["write_seconds"] = write_night(raw, cfg, args.timeout)
        warm_page_cache(raw)

        print("skystack night: untimed run (fills numba's cache)", flush=True)
        first = run_skystack(raw, root / "sky-warmup", extra, args.timeout)
        if "error" in first:
            print(f"skystack night failed: {first['error']}", file=sys.stderr)
            report["results"]["skystack"] = first
            status = 1
        else:
            runs = []
            for i in range(args.repeats):
                r = run_skystack(raw, root / "sky", extra, args.timeout)
                runs.append(r)
                print(f"skystack run {i + 1}: "
                      f"{r.get('error') or format(r['seconds'], '.2f') + ' s'}", flush=True)
            good = [r for r in runs if "error" not in r]
            if good:
                report["results"]["skystack"] = {
                    "seconds": statistics.median(r["seconds"] for r in good),
                    "peak_rss_mib": max(r["peak_rss_mib"] for r in good), "runs": runs}
            else:
                report["results"]["skystack"] = {"error": runs[-1]["error"], "runs": runs}
                status = 1

        grid = args.reference_grid
        if grid == "auto":
            grid = detect_grid(raw, root / "sky") if "seconds" in report["results"].get(
                "skystack", {}) else "first"
        print(f"reference (astropy + ccdproc + reproject), grid {grid!r} ...", flush=True)
        ref = run_reference(raw, root / "ref", grid)
        report["results"]["reference"] = ref
        print(f"reference: {ref['seconds']:.2f} s", flush=True)

        sky = report["results"].get("skystack", {})
        if "seconds" in sky:
            report["ratio"] = ref["seconds"] / sky["seconds"]
            report["products"] = compare_products(root / "sky", root / "ref")
    finally:
        if args.keep:
            print(f"night and products kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    stem = f"cpu-night-{report['date']}{'-quick' if args.quick else ''}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = render_markdown(report)
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(md)
    print(f"wrote {out / (stem + '.md')} and {out / (stem + '.json')}")
    return status


if __name__ == "__main__":
    sys.exit(main())
