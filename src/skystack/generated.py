"""The command line shared by skystack's C header generators (``kernels/sk_networks.cuh`` from
:mod:`skystack.networks`, ``kernels/sk_params.cuh`` from
:mod:`skystack.backends.kernel_interface`): ``python -m MODULE OUTPUT.cuh``. Tests check each
generated header against its generator, so a stale one fails CI."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["write_generated_header"]


def write_generated_header(make_header: Callable[[], str], module: str) -> None:
    """Write ``make_header()`` to the file named by the only command-line argument."""
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m {module} OUTPUT.cuh")
    with open(sys.argv[1], "w") as f:
        f.write(make_header())
