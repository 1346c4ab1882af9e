"""Time and peak memory of every contestant, measured in a separate worker process.

How it is measured
------------------
All measurements run in one fresh Python process (``python -m skystack.bench.speed SPEC``),
one after the other, so that the benchmark's own arrays do not count and a peer that crashes
does not take the run with it (the worker is restarted for the remaining tasks; a task that
hangs is killed after ``timeout`` seconds). Imports, loading the stack into memory and one
untimed warm-up call of each skystack configuration on a 64 x 64 cut-out (which loads the
compiled Numba or CUDA kernels) come before any clock starts.

* time: ``time.perf_counter`` around the call, from the in-memory cube to the combined image
  in host memory; the median of ``repeats`` runs;
* peak host memory (Linux): before each run the process's resident-set high-water mark is
  reset (``echo 5 > /proc/self/clear_refs``) and ``VmRSS`` read; after it ``VmHWM`` is read.
  ``peak_rss_mib`` is that high-water mark (interpreter, libraries and the input cube
  included); ``op_mib`` is ``VmHWM - VmRSS before``, the memory the operation itself needed.
  The worker runs with ``MALLOC_MMAP_THRESHOLD_=131072`` so that freed large arrays go back
  to the system instead of being reused unseen by the next run. Where the high-water mark
  cannot be reset (not Linux) ``peak_rss_mib`` is the process's ``ru_maxrss`` so far and
  ``op_mib`` is left out;
* SWarp runs as its own process: its time includes starting, reading the FITS files and
  writing its output, and its memory is its own ``VmHWM``, polled while it runs;
* GPU: device memory is the peak of CuPy memory-pool allocations during the call
  (``cupy.cuda.MemoryHook``), ``device_mib``.

skystack uses every CPU core (threads); numpy, bottleneck, astropy and ccdproc use one.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

#: Rough peak memory of each contestant as a multiple of the float32 cube; a contestant that
#: would not fit in 80 % of the available memory is skipped rather than swapping.
MEMORY_FACTOR = {"skystack": 1.5, "numpy": 3.0, "bottleneck": 2.0, "astropy": 8.0,
                 "ccdproc": 12.0, "swarp": 3.0}
MMAP_THRESHOLD = 131072
WARMUP_SIDE = 64


@dataclass
class Task:
    """One timed contestant: a method done by an engine on a backend on ``n_frames`` frames."""

    id: str
    engine: str  # "skystack" or a peer name
    backend: str  # "cpu" or "gpu" (peers: "cpu")
    method: str  # MethodSpec label
    options: dict  # combine options of the method
    n_frames: int
    cube: str = "main"  # "main" (quality stack) or "sweep" (timing only)
    save: bool = False  # keep the output for the quality metrics
    repeats: int = 1
    normalise: dict = field(default_factory=dict)  # skystack's zero/scale options


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------

def _proc_kib(key: str, path: str = "/proc/self/status") -> int | None:
    """A ``key:  N kB`` value of a /proc file, in KiB (None where there is none)."""
    try:
        m = re.search(rf"^{key}:\s*(\d+)", Path(path).read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) if m else None


class RssProbe:
    """Peak resident memory of this process during one operation (module docstring)."""

    def __init__(self) -> None:
        self.resettable = self._reset()
        self.method = ("VmHWM after resetting it (/proc/self/clear_refs)" if self.resettable
                       else "ru_maxrss (process high-water mark so far)")
        self.before_kib = 0

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return _proc_kib("VmHWM") is not None
        except OSError:
            return False

    def start(self) -> None:
        if self.resettable:
            self._reset()
            self.before_kib = _proc_kib("VmRSS") or 0

    def stop(self) -> tuple[float, float | None]:
        """(peak RSS MiB, MiB added by the operation or None)."""
        if self.resettable:
            hwm = _proc_kib("VmHWM") or 0
            return hwm / 1024.0, max(0, hwm - self.before_kib) / 1024.0
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, None


def _device_peak_hook():
    """A CuPy MemoryHook recording the peak of pool allocations (bytes in ``.peak``)."""
    from cupy.cuda import memory_hook

    class PeakHook(memory_hook.MemoryHook):
        name = "SkystackBenchPeak"

        def __init__(self) -> None:
            self.now = self.peak = 0

        def malloc_postprocess(self, **kwargs) -> None:
            self.now += int(kwargs.get("mem_size", 0))
            self.peak = max(self.peak, self.now)

        def free_postprocess(self, **kwargs) -> None:
            self.now -= int(kwargs.get("mem_size", 0))

    return PeakHook()


class _Worker:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.cubes: dict[str, np.ndarray] = {}
        self.warm: set[str] = set()
        self.swarp_inputs: dict[tuple[str, int], list[str]] = {}
        self.probe = RssProbe()
        self.work = Path(spec["workdir"])

    def cube(self, name: str) -> np.ndarray:
        if name not in self.cubes:
            self.cubes[name] = np.load(self.spec["cubes"][name])  # read fully, not mapped
        return self.cubes[name]

    def build(self, task: Task) -> tuple[Callable, str]:
        """``(op, note)``; ``op() -> (image, count, external_rss_mib or None)``."""
        from . import peers

        if task.engine == "skystack":
            import skystack

            cube = self.cube(task.cube + "_norm")[:task.n_frames]
            kwargs = dict(task.options, **task.normalise)
            threads = self.spec.get("threads")

            def op():
                r = skystack.combine(cube, backend=task.backend, threads=threads, **kwargs)
                return r.data, r.count, None

            key = json.dumps([task.backend, kwargs], sort_keys=True)
            if key not in self.warm:  # kernels loaded (or compiled) here, untimed
                small = np.ascontiguousarray(cube[:, :WARMUP_SIDE, :WARMUP_SIDE])
                skystack.combine(small, backend=task.backend, threads=threads, **kwargs)
                self.warm.add(key)
            return op, ""
        cube = self.cube(task.cube + "_norm")[:task.n_frames]
        if task.engine == "swarp":
            where = (task.cube, task.n_frames)
            folder = self.work / f"swarp-{task.cube}-{task.n_frames}"
            if where not in self.swarp_inputs:  # writing the files is not timed
                self.swarp_inputs[where] = peers.write_swarp_inputs(cube, folder)
            cmd = peers.swarp_command(self.swarp_inputs[where], task.options, folder)
            if cmd is None:
                raise RuntimeError("SWarp has no such method")

            def op():
                image, rss = peers.run_swarp(cmd, folder)
                return image, None, rss
            return op, "own process: file I/O included"
        built = peers.peer_op(task.engine, task.options, cube)
        if built is None:
            raise RuntimeError(f"{task.engine} has no such method")
        inner, note = built

        def op():
            image, count = inner()
            return image, count, None
        return op, note

    def run(self, task: Task) -> dict:
        op, note = self.build(task)
        hook = _device_peak_hook() if task.backend == "gpu" else None
        seconds, peaks, extras = [], [], []
        image = count = None
        for _ in range(max(1, task.repeats)):
            self.probe.start()
            if hook is not None:
                with hook:
                    t0 = time.perf_counter()
                    image, count, external = op()
                    seconds.append(time.perf_counter() - t0)
            else:
                t0 = time.perf_counter()
                image, count, external = op()
                seconds.append(time.perf_counter() - t0)
            peak, extra = self.probe.stop()
            if task.engine == "swarp":
                peak, extra = external, external
            peaks.append(peak)
            extras.append(extra)
        result: dict = {"id": task.id, "seconds": statistics.median(seconds),
                        "seconds_runs": seconds,
                        "peak_rss_mib": None if None in peaks else max(peaks),
                        "op_mib": None if None in extras else max(extras),
                        "memory_method": "SWarp's own VmHWM" if task.engine == "swarp"
                        else self.probe.method, "note": note}
        if hook is not None:
            result["device_mib"] = hook.peak / 2**20
        if task.save:
            out = self.work / "outputs"
            out.mkdir(exist_ok=True)
            np.save(out / f"{task.id}.image.npy", np.asarray(image, np.float32))
            if count is not None:
                np.save(out / f"{task.id}.count.npy", np.asarray(count, np.int32))
        return result


def worker_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    # Everything a contestant needs is imported before any clock starts.
    import skystack  # noqa: F401
    import skystack.backends.cpu  # noqa: F401

    from . import peers

    for name in spec.get("imports", []):
        if name != "swarp" and peers.peer_unavailable(name) is None:
            __import__(name)
    worker = _Worker(spec)
    with open(spec["results"], "a") as out:
        for raw in spec["tasks"]:
            task = Task(**raw)
            try:
                result = worker.run(task)
            except Exception as exc:  # one contestant failing is a result, not a crash
                result = {"id": task.id, "error": f"{type(exc).__name__}: {exc}"[:300]}
            out.write(json.dumps(result) + "\n")
            out.flush()
    return 0


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------

def mem_available_bytes() -> int | None:
    kib = _proc_kib("MemAvailable", "/proc/meminfo")
    return None if kib is None else kib * 1024


def _read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    # A line being written when the worker died is incomplete: ignore it.
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def run_tasks(tasks: list[Task], cubes: dict[str, str], workdir: Path, *, timeout: float,
              threads: int | None = None, imports: tuple[str, ...] = (),
              on_result: Callable[[Task, dict], None] | None = None) -> dict[str, dict]:
    """Run ``tasks`` in worker processes (module docstring); results by task id.

    ``cubes`` maps ``main``, ``main_norm``, ``sweep``, ``sweep_norm`` to ``.npy`` files.
    ``timeout`` is per task, in seconds.
    """
    results: dict[str, dict] = {}
    pending = list(tasks)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    attempt = 0
    while pending:
        attempt += 1
        res_path = workdir / f"results-{attempt}.jsonl"
        spec_path = workdir / f"spec-{attempt}.json"
        spec_path.write_text(json.dumps({
            "cubes": cubes, "tasks": [asdict(t) for t in pending], "results": str(res_path),
            "workdir": str(workdir), "threads": threads, "imports": list(imports)}))
        log_path = workdir / f"worker-{attempt}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "skystack.bench.speed",
                                     str(spec_path)], stdout=log, stderr=subprocess.STDOUT,
                                    env=env)
        seen = 0
        hung = False
        last = time.monotonic()
        by_id = {t.id: t for t in pending}
        try:
            while True:
                done = proc.poll() is not None
                lines = _read_results(res_path)
                for r in lines[seen:]:
                    results[r["id"]] = r
                    if on_result is not None:
                        on_result(by_id[r["id"]], r)
                if len(lines) > seen:
                    seen, last = len(lines), time.monotonic()
                if done:
                    break
                # The first task also waits for the worker's imports.
                if time.monotonic() - last > timeout + 60 * (seen == 0):
                    hung = True
                    proc.kill()
                    proc.wait()
                    break
                time.sleep(0.05)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        pending = [t for t in pending if t.id not in results]
        if pending:
            # The task the worker was on when it died or hung is given up; the rest go on.
            stuck = pending.pop(0)
            if hung:
                why = f"timed out after {timeout:.0f} s"
            else:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-2:]
                why = f"worker exited with code {proc.returncode}: " + " | ".join(tail)
            results[stuck.id] = {"id": stuck.id, "error": why[:300]}
            if on_result is not None:
                on_result(stuck, results[stuck.id])
    return results


def machine_facts() -> dict:
    """CPU, memory and library versions of this machine, for the report."""
    def version(module: str) -> str | None:
        try:
            return __import__(module).__version__
        except Exception:  # a missing peer is reported as None
            return None

    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(),
                      re.MULTILINE)
    except OSError:
        m = None
    facts = {
        "cpu_model": m.group(1).strip() if m else platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None,
        "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
                               1) if hasattr(os, "sysconf") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    for module in ("numpy", "numba", "astropy", "bottleneck", "ccdproc", "skystack"):
        facts[module] = version(module)
    from .peers import swarp_executable

    exe = swarp_executable()
    facts["swarp"] = None
    if exe:
        try:
            out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10)
            facts["swarp"] = (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            facts["swarp"] = exe
    return facts


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
