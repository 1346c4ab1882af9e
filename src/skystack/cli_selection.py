"""Command line of frame selection by header and exclusion list (``--where``, ``--exclude``;
:mod:`skystack.io.selection`), shared by every command that takes frames."""

from __future__ import annotations

import argparse

__all__ = ["add_header_selection", "header_selection_kwargs"]


def add_header_selection(p: argparse.ArgumentParser) -> None:
    """Add ``--exclude FILE`` and ``--where EXPR`` to ``p``."""
    g = p.add_argument_group("frame selection (skystack.io.selection)")
    g.add_argument("--exclude", metavar="FILE", help="text file listing frames not to use "
                   "(paths or file names, # comments)")
    g.add_argument("--where", metavar="EXPR", help="header selection, e.g. 'IMAGETYP=DARK and "
                   "EXPTIME>=60' (=, !=, <, <=, >, >=, and, or, parentheses)")


def header_selection_kwargs(a: argparse.Namespace) -> dict:
    """``where=``/``exclude=`` keyword arguments of the API from the given options."""
    return {k: getattr(a, k) for k in ("where", "exclude") if getattr(a, k, None) is not None}
