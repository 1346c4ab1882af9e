"""Products of a night: atomic writes, fingerprints, and reuse on a re-run.

Every product (master, stack) carries ``SKYFPRNT``, a fingerprint of what it was made from: the
input files (absolute path, size, modification time), the options, and the fingerprints of the
masters used. A re-run into the same directory

* reuses a product whose fingerprint matches (nothing is read or written);
* refuses, before any work, a product that exists with another fingerprint (or none) unless
  ``overwrite`` is given;
* never leaves a half-written product under a final name: products are written under a
  temporary name in the same folder and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from astropy.io import fits

from ..errors import SkystackError

FINGERPRINT_KEY = "SKYFPRNT"


def fingerprint(kind: str, inputs: Sequence[str], options: dict,
                depends: Sequence[str] = ()) -> str:
    """A short hex digest of a product's recipe (see module docstring)."""
    files = []
    for path in inputs:
        st = os.stat(path)
        files.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    recipe = {"kind": kind, "inputs": files, "options": options, "depends": list(depends)}
    text = json.dumps(recipe, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def existing_fingerprint(path: str) -> str | None:
    """The ``SKYFPRNT`` of an existing FITS product, or None if absent or unreadable."""
    try:
        return str(fits.getval(path, FINGERPRINT_KEY))
    except (OSError, KeyError, ValueError, IndexError):
        return None


def product_state(path: str, fprint: str, overwrite: bool) -> str:
    """``"build"``, ``"reuse"`` (same fingerprint), or a one-line :class:`SkystackError` when the
    product exists with another recipe and ``overwrite`` is False."""
    if not os.path.exists(path):
        return "build"
    if existing_fingerprint(path) == fprint:
        return "reuse"
    if overwrite:
        return "build"
    raise SkystackError(f"{path}: exists but was made from other inputs or options "
                        "(use --overwrite to rebuild it)")


@contextmanager
def atomic_path(path: str, overwrite: bool = True, *, stable: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it to ``path`` (replacing an
    existing file only if ``overwrite``), on failure remove it.

    ``stable``: the temporary name is the same on every run (``.<name>.inprogress<ext>``)
    instead of unique, so that a cluster run interrupted while writing it finds its partial
    file and journal again when the night is restarted (:mod:`skystack.cluster.driver`)."""
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    if stable:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.inprogress{suffix}")
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.",
                                   suffix=f".partial{suffix}", dir=folder)
        os.close(fd)
        os.unlink(tmp)  # writers create it themselves; the unique name is what we wanted
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise SkystackError(f"{path}: output exists (use --overwrite to replace it)") \
                    from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
