"""Numba's on-disk cache (``cache=True`` on every CPU kernel) shared by processes that start at
the same time, as the workers of a local cluster do on a fresh install.

Numba writes each cache file to a temporary name and renames it into place, so a reader sees a
whole file or none; the index names data files by the first free number, so two processes that
compile the same signatures in the same order write the same names. skystack's kernels take one
signature each (fixed dtypes; the options are values of one record), so concurrent first runs
write the same entries. This checks it end to end: four processes released together on an empty
cache directory, then four more on the cache they left, every result compared with the
references of tests/reference.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import skystack

WORKER = r"""
import json, os, sys, time
ready, go, order = sys.argv[1], sys.argv[2], int(sys.argv[3])
import numpy as np
import skystack
from skystack.backends.cpu import kernels as K
from tests.reference import make_stack
from tests.test_combine import _check

CASES = [("mean", "none", {}),
         ("median", "sigclip", dict(center="median", spread="mad", sigma_low=3.0,
                                    sigma_high=3.0, maxiters=5)),
         ("sum", "minmax", dict(nlow=1, nhigh=2))]
open(ready, "w").close()
deadline = time.monotonic() + 300
while not os.path.exists(go):  # every process starts compiling at the same moment
    if time.monotonic() > deadline:
        sys.exit("never released")
    time.sleep(0.005)
cube = make_stack(n=9, shape=(16, 24), seed=3)
for method, reject, opts in (CASES if order % 2 == 0 else CASES[::-1]):
    result = skystack.combine(cube, method=method, reject=reject, backend="cpu", threads=1,
                              **opts)
    _check(result, cube, reject, opts, method)
stats = {name: getattr(K, name).stats for name in ("combine_sorted", "combine_accumulate")}
print(json.dumps({name: [sum(s.cache_hits.values()), sum(s.cache_misses.values())]
                  for name, s in stats.items()}))
"""


def _run_together(tmp_path: Path, tag: str, env: dict, n: int = 4) -> list[dict]:
    """``n`` worker processes, released together once all have imported skystack."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go = tmp_path / f"go-{tag}"
    ready = [tmp_path / f"ready-{tag}-{i}" for i in range(n)]
    procs = [subprocess.Popen([sys.executable, str(script), str(ready[i]), str(go), str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(n)]
    try:
        deadline = time.monotonic() + 120
        while not all(p.exists() for p in ready):
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        go.touch()
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in results]


@pytest.mark.slow
def test_concurrent_first_runs_share_the_numba_cache_safely(tmp_path):
    cache = tmp_path / "numba-cache"
    root = Path(__file__).resolve().parents[1]
    src = Path(skystack.__file__).resolve().parents[1]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache),
               PYTHONPATH=os.pathsep.join([str(src), str(root)]))
    env.pop("NUMBA_DISABLE_JIT", None)

    cold = _run_together(tmp_path, "cold", env)  # every result checked inside the workers
    assert all(s["combine_sorted"][1] >= 1 for s in cold), cold  # compiled, not loaded
    assert list(cache.rglob("*combine_sorted*.nbi")) and list(cache.rglob("*.nbc"))

    warm = _run_together(tmp_path, "warm", env)
    for s in warm:  # both kernels loaded from what the cold workers wrote, nothing compiled
        assert s["combine_sorted"] == [1, 0] and s["combine_accumulate"] == [1, 0], warm
