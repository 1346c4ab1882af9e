"""Time every CPU rejection against sigma clipping on the same stack (issue 18's speed goal:
each new rejection within 2x the time of sigma clipping).

Usage::

    python benchmarks/bench_rejections.py [--frames 25] [--size 1024] [--repeats 5]
                                          [--threads N] [--only winsor,linfit]

One stack is generated in memory (N(1000, 10) sky, 1 % cosmic rays of +5000, fixed seed) and
combined with ``skystack.combine`` (CPU backend, mean) once per rejection, untimed, so that
Numba's compilation is never measured. Then the rejections are timed in interleaved rounds
(every rejection once per round, so that load from other processes hits all alike) and the
best of the rounds is kept. Printed: each rejection's best time and its ratio to sigma
clipping's (center median, spread std, as the default combine), in wall time and in CPU
time of the process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SEED = 20240601

# Each rejection with the options that select it; sigclip is the yardstick.
REJECTIONS = {
    "sigclip": {"reject": "sigclip", "center": "median", "spread": "std"},
    "winsor": {"reject": "winsor"},
    "linfit": {"reject": "linfit"},
    "pctclip": {"reject": "pctclip"},
    "esd": {"reject": "esd"},
    "ccdclip": {"reject": "ccdclip", "gain": 1.0, "rdnoise": 10.0},
    "pclip": {"reject": "pclip"},
    "minmax": {"reject": "minmax"},
    "percentile": {"reject": "percentile"},
}


def make_stack(frames: int, size: int) -> np.ndarray:
    """``frames`` float32 images of ``size`` x ``size``: N(1000, 10) sky, 1 % cosmic rays."""
    rng = np.random.default_rng(SEED)
    cube = rng.normal(1000.0, 10.0, (frames, size, size)).astype(np.float32)
    hits = rng.random(cube.shape) < 0.01
    cube[hits] += 5000.0
    return cube


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, time the rejections and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", default="", help="comma-separated rejections (sigclip always)")
    args = ap.parse_args(argv)

    import skystack

    names = list(REJECTIONS)
    if args.only:
        wanted = {"sigclip", *args.only.split(",")}
        names = [n for n in names if n in wanted]
    cube = make_stack(args.frames, args.size)

    def run(name: str) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        skystack.combine(cube, backend="cpu", method="mean", threads=args.threads,
                         **REJECTIONS[name])
        return time.perf_counter() - t0, time.process_time() - c0

    for name in names:  # warm-up: compile (or load from cache) every kernel
        run(name)
    wall = {name: float("inf") for name in names}
    cpu = dict(wall)
    for _ in range(args.repeats):
        for name in names:
            w, c = run(name)
            wall[name] = min(wall[name], w)
            cpu[name] = min(cpu[name], c)
    print(f"{args.frames} frames of {args.size}x{args.size} float32, mean, "
          f"best of {args.repeats} interleaved rounds (CPU: seconds of all threads, steadier "
          "than wall time on a shared machine)")
    print(f"{'rejection':<12}{'wall s':>8}{'x sigclip':>11}{'CPU s':>8}{'x sigclip':>11}")
    for name in names:
        print(f"{name:<12}{wall[name]:>8.3f}{wall[name] / wall['sigclip']:>11.2f}"
              f"{cpu[name]:>8.3f}{cpu[name] / cpu['sigclip']:>11.2f}")


if __name__ == "__main__":
    main()
