"""Gather one GPU session's parts into the result files committed under benchmarks/results/.

Called by ``benchmarks/gpu/session.sh`` as its last step::

    python benchmarks/gpu/collect.py --work WORK --out OUT [--dry-run]

Reads from ``WORK``: ``steps.tsv`` (step, status, seconds), ``bench-gpu.json``
(benchmarks/bench_gpu.py), ``night.json`` (night_gpu.py), ``pytest-gpu.out`` (the GPU tests'
output) and ``bench-quick/`` (``skystack bench --quick``). Writes into ``OUT``:
``gpu-<device>-<date>[-dry-run].json`` and ``.md`` (bench_gpu.py's rows and ceilings, plus the
night, the GPU tests' summary line and every step's status and duration) and
``bench-quick-<device>-<date>[-dry-run].md/.json`` (copies of the bench report). A part that is
missing (its step failed or timed out) is recorded as such; nothing here raises on it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench_gpu import device_slug, render_markdown  # noqa: E402


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pytest_summary(path: Path) -> str | None:
    """pytest's closing line (``N passed, M skipped in S s``), if the run got that far."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    pattern = re.compile(r"\b(passed|failed|skipped|deselected|error|no tests ran)\b")
    for line in reversed(lines):
        if pattern.search(line) and " in " in line:
            return line.strip("= ").strip()
    return None


def read_steps(path: Path) -> list[dict]:
    steps = []
    try:
        for line in path.read_text().splitlines():
            name, status, seconds = (line.split("\t") + ["", ""])[:3]
            steps.append({"step": name, "status": status,
                          "seconds": float(seconds) if seconds else None})
    except OSError:
        pass
    return steps


def night_markdown(night: dict | None) -> list[str]:
    if night is None:
        return ["## Night", "", "No result (see the steps table and session.log).", ""]
    lines = ["## Night (`skystack night`, GPU vs CPU backend, whole processes)", "",
             f"{night.get('frames')} frames of {night.get('size')}², products compared below.",
             "", "| run | seconds | peak RSS MiB | note |", "|---|---|---|---|"]
    for r in night["rows"]:
        if "seconds" in r:
            lines.append(f"| {r['name']} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} | |")
        else:
            lines.append(f"| {r['name']} | | | {r.get('skipped') or r.get('error')} |")
    if "speedup_gpu_vs_cpu" in night:
        lines += ["", f"GPU speed-up over the CPU backend: {night['speedup_gpu_vs_cpu']:.2f}×."]
    for name, c in night.get("comparison", {}).items():
        lines.append(f"- {name}: {c}")
    return lines + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = read_json(work / "bench-gpu.json") or {
        "device": "unknown", "date": dt.date.today().isoformat(), "commit": "unknown",
        "profile": "missing", "ceilings": {}, "benchmarks": [],
        "notes": ["bench_gpu.py wrote no result (see the steps table and session.log)"]}
    night = read_json(work / "night.json")
    steps = read_steps(work / "steps.tsv")
    tests = pytest_summary(work / "pytest-gpu.out")
    device = bench["device"]
    stem = f"gpu-{device_slug(device)}-{bench['date']}" + ("-dry-run" if args.dry_run else "")
    result = dict(bench, night=night, gpu_tests=tests, steps=steps, dry_run=args.dry_run)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    lines = render_markdown(bench).rstrip("\n").splitlines()
    lines += ["", "## GPU tests (`pytest -m gpu`)", "", tests or "no summary (see session.log)",
              ""]
    lines += night_markdown(night)
    lines += ["## Steps", "", "| step | status | seconds |", "|---|---|---|"]
    for s in steps:
        seconds = "" if s["seconds"] is None else f"{s['seconds']:.0f}"
        lines.append(f"| {s['step']} | {s['status']} | {seconds} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    quick = work / "bench-quick"
    for suffix in ("md", "json"):
        src = quick / f"bench.{suffix}"
        if src.exists():
            shutil.copyfile(src, out / f"bench-quick-{stem[4:]}.{suffix}")
    print(f"wrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
