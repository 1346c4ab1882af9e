"""The drizzle options of ``skystack stack`` (``--interp drizzle``; :mod:`skystack.drizzling`)."""

from __future__ import annotations

import argparse

__all__ = ["add_drizzle_options", "drizzle_kwargs"]


def add_drizzle_options(p: argparse.ArgumentParser) -> None:
    """``--pixfrac``, ``--drizzle-kernel`` and ``--drizzle-scale`` (defaults: None, resolved by
    :func:`skystack.drizzling.drizzle_params`, which refuses them without --interp drizzle)."""
    from .drizzling import KERNELS

    g = p.add_argument_group("drizzle (--interp drizzle: a weighted drizzle co-add on the CPU; "
                             "no --reject; EXPMAP = drizzle's weight map)")
    g.add_argument("--pixfrac", type=float, metavar="F",
                   help="drop size: side of each input pixel's drop in input pixels, in (0, 1] "
                        "(default 1.0, as DrizzlePac)")
    g.add_argument("--drizzle-kernel", choices=KERNELS,
                   help="drizzle kernel (default: square)")
    g.add_argument("--drizzle-scale", type=float, metavar="S",
                   help="output pixel side in units of the grid's pixels (default 1; 0.5 = a "
                        "twice finer grid)")


def drizzle_kwargs(a: argparse.Namespace) -> dict:
    """The drizzle keywords of :func:`skystack.api_reproject.stack` from parsed arguments."""
    return {"pixfrac": a.pixfrac, "drizzle_kernel": a.drizzle_kernel,
            "drizzle_scale": a.drizzle_scale}
