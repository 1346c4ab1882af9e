"""Print the session's machine and package versions (session.sh's ``env`` step): which
interpreter, how many CPUs, every package skystack's GPU session uses (version and where it was
imported from, or why not), and skystack's own GPU probe."""

from __future__ import annotations

import importlib
import os
import platform

MODULES = ("skystack", "numpy", "scipy", "astropy", "numba", "cupy", "torch", "reproject",
           "sep", "dfreproject", "dask", "pytest")

print("python", platform.python_version(), "cpus", os.cpu_count())
for name in MODULES:
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # report, never stop: this is the step that explains failures
        print(f"{name}: NOT IMPORTABLE ({type(exc).__name__}: {exc})")
        continue
    print(f"{name} {getattr(mod, '__version__', '?')} {getattr(mod, '__file__', '')}")
from skystack.backends.gpu import probe  # noqa: E402

print("skystack GPU probe:", probe())
