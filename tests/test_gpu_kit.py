"""The GPU session kit (benchmarks/gpu/): its dry run on this GPU-less machine goes through the
whole flow, writes at most 8 files with the expected names, and reports every GPU measurement
as skipped (never a number); the wheel list names one version of each package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from skystack.backends.gpu import probe

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "benchmarks" / "gpu"


@pytest.mark.skipif(probe()[0], reason="a GPU is here: session.sh runs for real instead")
def test_session_dry_run_writes_every_result_without_a_gpu(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, TMPDIR=str(tmp_path))
    proc = subprocess.run(["bash", str(KIT / "session.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert len(names) <= 8, names
    stem = next(n for n in names if re.fullmatch(r"gpu-no-gpu-\d{4}-\d\d-\d\d-dry-run\.json", n))
    assert stem.replace(".json", ".md") in names
    assert {"session.log", "pytest-gpu.txt"} <= set(names)
    assert any(n.startswith("bench-quick-") and n.endswith(".md") for n in names)
    result = json.loads((out / stem).read_text())
    assert result["dry_run"] and result["profile"] == "dry-run"
    steps = {s["step"]: s["status"] for s in result["steps"]}
    assert all(steps[s] == "ok" for s in ("env", "pytest-gpu", "bench-gpu", "night-gpu",
                                          "bench-quick")), steps
    rows = {(r["name"], r["n"]): r for r in result["benchmarks"]}
    # Every GPU row says it was skipped; the CPU rows were measured.
    for name in ("median", "sigclip_mean_std", "torch_median", "cupy_median"):
        for n in (5, 25, 100, 1000):
            assert rows[(name, n)]["skipped"] == "no GPU"
            assert rows[(name, n)]["seconds"] is None
    for name in ("cpu_backend_median", "cpu_backend_sigclip_mean_std"):
        assert all(rows[(name, n)]["seconds"] > 0 for n in (5, 25, 100, 1000))
    for name in ("ceilings", "reproject_bilinear", "dfreproject_bilinear", "end_to_end",
                 "stack_end_to_end_gpu"):
        assert any(r["name"] == name and r.get("skipped") == "no GPU"
                   for r in result["benchmarks"]), name
    assert result["night"]["rows"][0] == {"name": "night_gpu", "skipped": "no GPU"}
    assert result["night"]["rows"][1]["seconds"] > 0
    assert "skipped" in result["gpu_tests"] and "failed" not in result["gpu_tests"]
    assert "no GPU" in (out / stem.replace(".json", ".md")).read_text()


def test_wheel_list_pins_one_version_of_each_package_and_nothing_preinstalled():
    lines = [ln.strip() for ln in (KIT / "wheels.txt").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    names = []
    for line in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9.]*)", line)
        assert m, f"not NAME==VERSION: {line}"
        names.append(re.sub(r"[-_.]+", "-", m.group(1).lower()))
    assert len(names) == len(set(names)), "a package is named twice"
    # What the lent machine has must not be shadowed by a carried copy.
    assert not set(names) & {"numpy", "scipy", "numba", "llvmlite", "cupy-cuda13x", "torch",
                             "matplotlib", "pytest", "tqdm", "tifffile"}
    assert {"astropy", "pyerfa", "astropy-iers-data", "reproject", "sep",
            "dfreproject"} <= set(names)


def test_bench_gpu_writes_what_it_measured_when_the_time_cap_stops_it(tmp_path, monkeypatch):
    # session.sh's timeout sends SIGTERM: the rows measured so far are written, with a note.
    import signal
    import types

    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_gpu

    def measure(profile, workdir):
        bench_gpu._CEILINGS.update({"device_copy_gb_per_s": 1000.0,
                                    "pinned_h2d_gb_per_s": 50.0, "pinned_d2h_gb_per_s": 50.0})
        bench_gpu.row("sum", 5, (10, 10), 0.001, 1e6, 1000.0)
        os.kill(os.getpid(), signal.SIGTERM)
        bench_gpu.row("never", 5, (10, 10), 0.001, 1e6, 1000.0)
        raise AssertionError("SIGTERM did not stop the measurements")

    monkeypatch.setattr(bench_gpu, "measure", measure)
    monkeypatch.setattr(bench_gpu, "device_name", lambda: "Fake GPU")
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(__version__="0"))
    monkeypatch.setattr(bench_gpu, "_COLLECTED", [])
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert bench_gpu.main(["--session", "--out", str(tmp_path), "--stem", "cut"]) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    result = json.loads((tmp_path / "cut.json").read_text())
    assert [r["name"] for r in result["benchmarks"]] == ["sum"]
    assert result["ceilings"]["device_copy_gb_per_s"] == 1000.0
    assert "cut short by SIGTERM" in result["notes"][0]
    assert "cut short" in (tmp_path / "cut.md").read_text()
