"""Orchestration of ``skystack bench``: data, contestants, timing, quality, report.

1. The output directory is checked first (no work is done if its results would be replaced
   without ``overwrite``).
2. The stack: synthetic with a known truth (:mod:`.truth`), or the user's frames.
3. Contestants: every method on every usable backend, and every available peer for each method
   it implements; plus, for the time-against-N plot, the same on the ``sweep`` frame counts
   (every skystack method; each peer on its median or sigma-clipping method).
4. All of them are timed in a worker process (:mod:`.speed`), which keeps the outputs of the
   main stack; the quality of each output is then measured here (:mod:`.quality`).
5. The report (:mod:`.report`).

With ``sections`` other than ``combine``, the resampling (:mod:`.resampling`) and frame-weights
(:mod:`.weighting`) comparisons run after it, on their own synthetic frames of the same number
and size, timed in this process; their tables join the same report.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SkystackError
from . import peers as peer_mod
from . import quality, report, speed, truth
from .methods import DEFAULT_METHODS, MethodSpec, parse_methods

#: What a run compares: combine methods (the default), resampling (``skystack stack --interp``
#: and drizzle, :mod:`.resampling`) and frame weights / normalisation (:mod:`.weighting`).
SECTIONS = ("combine", "resampling", "weights")

QUICK = {"frames": 8, "shape": (256, 256), "sweep": (4, 16, 32), "repeats": 3}
FULL = {"frames": 20, "shape": (1024, 1024), "sweep": None, "repeats": 3}


@dataclass
class BenchSettings:
    """Everything a benchmark run depends on. ``shape`` is ``(ny, nx)``; ``sweep`` the extra
    frame counts timed for the time-against-N plot (None: N/4, N/2 and 2N)."""

    out_dir: str
    frames: int = FULL["frames"]
    shape: tuple[int, int] = FULL["shape"]
    backends: tuple[str, ...] = ("cpu", "gpu")
    methods: list[MethodSpec] = field(default_factory=lambda: parse_methods(DEFAULT_METHODS))
    peers: tuple[str, ...] = peer_mod.PEERS
    inputs: list[str] | None = None
    hdu: int | str | None = None
    quick: bool = False
    sweep: tuple[int, ...] | None = None
    repeats: int = 3
    zero: str = "median"
    scale: str = "none"
    seed: int = truth.SEED
    timeout: float = 900.0
    threads: int | None = None
    overwrite: bool = False
    sections: tuple[str, ...] = ("combine",)

    def sweep_counts(self, n: int) -> list[int]:
        counts = self.sweep if self.sweep is not None else (max(3, n // 4), max(3, n // 2),
                                                            2 * n)
        return sorted({c for c in counts if c >= 2 and c != n})


def load_inputs(paths: list[str], hdu) -> tuple[np.ndarray, list, list[float]]:
    """The user's frames as one float32 cube, their labels and EXPTIMEs (1 where missing)."""
    from ..io.inputs import load_frames
    from ..io.reader import Tile

    frames = load_frames(paths, hdu=hdu)
    if len(frames) < 3:
        raise SkystackError(f"--inputs: {len(frames)} frame(s) given; leave-one-out quality "
                            "needs at least 3")
    ny, nx = frames[0].shape
    cube = np.empty((len(frames), ny, nx), np.float32)
    for k, f in enumerate(frames):
        f.source.read(Tile(0, ny, 0, nx), cube[k])
    exptimes = []
    for f in frames:
        try:
            exptimes.append(float(f.header.get("EXPTIME", 1.0)))
        except (TypeError, ValueError):
            exptimes.append(1.0)
    return cube, [f.label for f in frames], exptimes


def normalise(cube: np.ndarray, zero: str, scale: str, exptimes: list[float]) -> np.ndarray:
    """The frames with skystack's ``--scale`` then ``--zero`` applied, relative to the first
    frame (normalization.py's rule, with statistics over every pixel), for the peers."""
    from astropy.stats import sigma_clipped_stats

    def stat(frame: np.ndarray, kind: str) -> float:
        if kind == "median":
            return float(np.nanmedian(frame))
        return float(sigma_clipped_stats(frame, sigma=3.0, maxiters=5)[0])

    out = cube.astype(np.float32, copy=True)
    if scale != "none":
        ref = exptimes if scale == "exposure" else [stat(f, scale) for f in cube]
        for k in range(len(out)):
            out[k] *= np.float32(ref[0] / ref[k])
    if zero != "none":
        level = [stat(f, zero) for f in out]
        for k in range(len(out)):
            out[k] += np.float32(level[0] - level[k])
    return out


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def _row(task: speed.Task, shape: tuple[int, int]) -> dict:
    return {"method": task.method, "engine": task.engine, "backend": task.backend,
            "n_frames": task.n_frames, "ny": shape[0], "nx": shape[1]}


def plan_tasks(s: BenchSettings, n: int, backends: list[str], peers: list[str],
               cube_bytes: int, available: int | None
               ) -> tuple[list[speed.Task], list[speed.Task]]:
    """Every contestant of the run (module docstring), main stack first; and those skipped
    because they would not fit in memory (80 % of ``available`` bytes)."""
    # Every contestant, skystack included, combines the same frames, normalised beforehand
    # (untimed) as skystack's --zero/--scale would: the table compares combining, not the
    # normalisation statistics (which only skystack computes for itself).
    norm = {"zero": "none", "scale": "none"}
    peer_repeats = s.repeats if s.quick else 1  # full-size peers are slow: one run each
    tasks: list[speed.Task] = []

    def add(engine: str, backend: str, m: MethodSpec, count: int, cube: str) -> None:
        main = cube == "main"
        tasks.append(speed.Task(
            id=f"{cube}-{len(tasks):03d}", engine=engine, backend=backend, method=m.label,
            options=m.kwargs, n_frames=count, cube=cube, save=main,
            repeats=s.repeats if engine == "skystack" else peer_repeats,
            normalise=norm if engine == "skystack" else {}))

    def sweep_methods(peer: str) -> list[MethodSpec]:
        ok = [m for m in s.methods if peer_mod.peer_supports(peer, m.kwargs, n)]
        pick = [m for m in ok if m.method == "median" and m.reject == "none"] or \
            [m for m in ok if m.reject == "sigclip"] or ok
        return pick[:1]

    for cube, counts in (("main", [n]), ("sweep", s.sweep_counts(n))):
        for count in counts:
            for m in s.methods:
                for b in backends:
                    add("skystack", b, m, count, cube)
            for p in peers:
                chosen = [m for m in s.methods if peer_mod.peer_supports(p, m.kwargs, count)] \
                    if cube == "main" else sweep_methods(p)
                for m in chosen:
                    add(p, "cpu", m, count, cube)
    skipped = []
    for t in tasks:
        need = speed.MEMORY_FACTOR[t.engine] * cube_bytes * t.n_frames / n
        if available is not None and need > 0.8 * available:
            skipped.append(t)
    return [t for t in tasks if t not in skipped], skipped


def run_suite(s: BenchSettings, log: Callable[[str], None] | None = print) -> dict:
    """Run the benchmark of ``s`` and write its outputs; returns the report (``files``: the
    paths written)."""
    say = log or (lambda _msg: None)
    t_start = time.perf_counter()
    out_dir = report.check_output_dir(s.out_dir, s.overwrite)
    bad = set(s.sections) - set(SECTIONS)
    if bad or not s.sections:
        raise SkystackError(f"invalid --sections {','.join(sorted(bad)) or '(none)'}: choose "
                            f"from {', '.join(SECTIONS)} or all")
    if s.inputs and ("resampling" in s.sections or "weights" in s.sections):
        raise SkystackError("--sections resampling/weights run on synthetic frames with a "
                            "known truth: not with --inputs")
    if ("resampling" in s.sections or "weights" in s.sections) and \
            (s.frames < 3 or min(s.shape) < 64):
        raise SkystackError(f"--frames {s.frames} --size {s.shape[1]}x{s.shape[0]}: the "
                            "resampling and weights sections need at least 3 frames of 64x64")
    if "combine" in s.sections:
        rep = _combine_report(s, say)
    else:
        rep = {"schema": "skystack-bench/1", "date": dt.date.today().isoformat(),
               "mode": "synthetic", "machine": speed.machine_facts(), "notes": [],
               "settings": {"frames": s.frames, "shape": list(s.shape), "quick": s.quick,
                            "seed": s.seed, "threads": s.threads, "repeats": s.repeats},
               "results": [], "sweep": []}
    rep["settings"]["sections"] = list(s.sections)
    if "resampling" in s.sections:
        from .resampling import RESAMPLING_PEERS, run_resampling

        say(f"resampling: {s.frames} dithered frames of {s.shape[1]}x{s.shape[0]}")
        rep["resampling"] = run_resampling(s.frames, s.shape, s.seed, repeats=s.repeats,
                                           threads=s.threads,
                                           peers=RESAMPLING_PEERS if s.peers else (),
                                           say=say)
    if "weights" in s.sections:
        from .weighting import run_weighting

        say(f"weights: {s.frames} frames of {s.shape[1]}x{s.shape[0]}, unequal noise")
        rep["weights"] = run_weighting(s.frames, s.shape, s.seed, repeats=s.repeats,
                                       threads=s.threads, say=say)
    rep["seconds_total"] = round(time.perf_counter() - t_start, 1)
    rep["files"] = report.write_outputs(rep, out_dir, overwrite=True)
    return rep


def _combine_report(s: BenchSettings, say: Callable[[str], None]) -> dict:
    """The combine methods' comparison: the report without ``files`` and ``seconds_total``."""
    stack = None
    if s.inputs:
        cube, labels, exptimes = load_inputs(s.inputs, s.hdu)
        say(f"read {cube.shape[0]} frames of {cube.shape[2]}x{cube.shape[1]}")
    else:
        if s.frames < 3:
            raise SkystackError(f"--frames {s.frames}: at least 3 frames are needed")
        if min(s.shape) < 32:
            raise SkystackError(f"--size {s.shape[1]}x{s.shape[0]}: at least 32x32 is needed")
        stack = truth.make_stack(s.frames, s.shape, s.seed)
        cube, labels, exptimes = stack.frames, [], [1.0] * s.frames
        say(f"made {s.frames} synthetic frames of {s.shape[1]}x{s.shape[0]} (seed {s.seed})")
    n, ny, nx = cube.shape
    shape = (ny, nx)

    from ..backends.gpu import probe

    backend_status: dict[str, str] = {}
    usable_backends = []
    for b in s.backends:
        if b == "gpu":
            ok, reason = probe()
            backend_status[b] = "ok" if ok else f"unavailable ({reason})"
            if ok:
                usable_backends.append(b)
        else:
            backend_status[b] = "ok"
            usable_backends.append(b)
    peer_status, usable_peers = {}, []
    for p in s.peers:
        why = peer_mod.peer_unavailable(p)
        peer_status[p] = "ok" if why is None else f"unavailable ({why})"
        if why is None:
            usable_peers.append(p)
    for name, status in {**backend_status, **peer_status}.items():
        if status != "ok":
            say(f"{name}: {status}; skipped")

    tasks, skipped = plan_tasks(s, n, usable_backends, usable_peers, cube.nbytes,
                                   speed.mem_available_bytes())
    work = Path(tempfile.mkdtemp(prefix="skystack-bench-"))
    try:
        norm = normalise(cube, s.zero, s.scale, exptimes)
        sweep_n = max([n, *s.sweep_counts(n)])
        cubes = {"main": work / "main.npy", "main_norm": work / "main_norm.npy",
                 "sweep": work / "sweep.npy", "sweep_norm": work / "sweep_norm.npy"}
        np.save(cubes["main"], cube)
        np.save(cubes["main_norm"], norm)
        np.save(cubes["sweep"], truth.sweep_cube(cube, sweep_n))
        np.save(cubes["sweep_norm"], truth.sweep_cube(norm, sweep_n))
        done = [0]

        def progress(task: speed.Task, r: dict) -> None:
            done[0] += 1
            what = r.get("error") or f"{r['seconds']:.4f} s"
            say(f"[{done[0]:3d}/{len(tasks)}] N={task.n_frames:<4d} {task.method} · "
                f"{task.engine} {task.backend if task.engine == 'skystack' else ''}: {what}")

        say(f"timing {len(tasks)} contestants in a worker process")
        results = speed.run_tasks(tasks, {k: str(v) for k, v in cubes.items()}, work,
                                  timeout=s.timeout, threads=s.threads,
                                  imports=tuple(usable_peers), on_result=progress)
        say("measuring quality")
        main_rows, sweep_rows, data = _measure(s, tasks, skipped, results, work, cube, norm,
                                               stack, shape)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if stack is not None:
        data = stack.describe()
    else:
        data.update(n_frames=n, shape=[ny, nx], first=Path(labels[0]).name, files=labels)
    notes = ["skystack uses every core (threads); numpy, bottleneck, astropy and ccdproc one; "
             "in-memory contestants start from a loaded cube, SWarp from FITS files"]
    if skipped:
        notes.append(f"{len(skipped)} contestant(s) skipped for lack of memory")
    rep = {
        "schema": "skystack-bench/1",
        "date": dt.date.today().isoformat(),
        "mode": "inputs" if s.inputs else "synthetic",
        "settings": {"frames": n, "shape": [ny, nx], "quick": s.quick,
                     "methods": [m.label for m in s.methods],
                     "method_specs": [m.spec for m in s.methods],
                     "backends": list(s.backends), "peers": list(s.peers),
                     "sweep": s.sweep_counts(n), "repeats": s.repeats, "zero": s.zero,
                     "scale": s.scale, "seed": s.seed, "threads": s.threads},
        "machine": speed.machine_facts(),
        "memory": speed.__doc__.split("How it is measured\n------------------\n")[1].strip(),
        "data": data, "backends": backend_status, "peers": peer_status, "notes": notes,
        "results": main_rows, "sweep": sweep_rows,
    }
    return rep


def _measure(s: BenchSettings, tasks, skipped, results, work: Path, cube, norm, stack, shape):
    """Rows of the report: speed of every task, quality of the main-stack outputs."""
    phot = quality.Photometry.for_stack(stack) if stack is not None else None
    ctx = quality.prepare_loo(cube) if stack is None else None
    data: dict = {} if ctx is None else {
        "outlier_pixels": int(ctx.outliers.sum()),
        "frame_sigma_adu": [round(float(v), 3) for v in np.sqrt(ctx.frame_var)]}
    main_rows, sweep_rows = [], []
    for t in tasks + skipped:
        row = _row(t, shape)
        r = results.get(t.id, {"error": "skipped: not enough memory"})
        if "error" in r:
            row["error"] = r["error"]
        else:
            row.update({k: r.get(k) for k in ("seconds", "peak_rss_mib", "op_mib",
                                              "device_mib", "note")})
            row["mpix_frames_per_s"] = t.n_frames * shape[0] * shape[1] / r["seconds"] / 1e6 \
                if r["seconds"] > 0 else None
            image_path = work / "outputs" / f"{t.id}.image.npy"
            if t.save and image_path.exists():
                image = np.load(image_path)
                count_path = work / "outputs" / f"{t.id}.count.npy"
                count = np.load(count_path) if count_path.exists() else None
                if stack is not None:
                    row.update(quality.truth_quality(stack, image, count, phot))
                else:
                    combine = _loo_combine(t, s)
                    if combine is not None:
                        src = cube if t.engine == "skystack" else norm
                        row.update(quality.loo_quality(ctx, src, combine, image, count))
                    else:
                        row["good_rejected_pct"] = quality.rejected_pct(count, ctx.good,
                                                                        cube.shape[0])
        row = {k: _clean(v) for k, v in row.items()}
        (main_rows if t.cube == "main" else sweep_rows).append(row)
    return main_rows, sweep_rows, data


def _loo_combine(task: speed.Task, s: BenchSettings):
    """``combine(sub_cube) -> image`` for the truth-free metrics, run in this process
    (None for SWarp, whose files would have to be written for every subset)."""
    if task.engine == "skystack":
        import skystack

        kwargs = dict(task.options, zero=s.zero, scale=s.scale)
        return lambda c: skystack.combine(c, backend=task.backend, threads=s.threads,
                                          **kwargs).data
    if task.engine == "swarp":
        return None

    def combine(c):
        op, _ = peer_mod.peer_op(task.engine, task.options, np.ascontiguousarray(c))
        return op()[0]
    return combine
