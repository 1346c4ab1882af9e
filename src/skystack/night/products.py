"""Products of a night: atomic writes, fingerprints, and reuse on a re-run.

Every product (master, stack) carries ``SKYFPRNT``, a fingerprint of what it was made from: the
input files (absolute path, size, modification time), the options, and the fingerprints of the
masters used. A re-run into the same directory

* reuses a product whose fingerprint matches (nothing is read or written);
* refuses, before any work, a product that exists with another fingerprint (or none) unless
  ``overwrite`` is given;
* never leaves a half-written product under a final name: products are written under a
  temporary name in the same folder and renamed when complete;
* removes the temporaries a killed run left (:func:`remove_night_leftovers`; the night holds
  the lock of its OUT_DIR, so no other run is writing them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from astropy.io import fits

from ..errors import SkystackError
from ..io.writer import owned_temporary, product_mode

FINGERPRINT_KEY = "SKYFPRNT"

# The night's temporaries: atomic_path's ``.<name>.<random>.partial<ext>``, the previews'
# ``.<name>.<random>.tmp``, a writer's ``.<name>.<random>.partial`` (nested in the former by
# older versions), and a cluster run's ``.<name>.inprogress<ext>`` with its ``.partial``,
# ``.journal`` and ``.lock``.
_TEMPORARY = re.compile(r"\..+\.(?:[a-z0-9_]{8}\.(?:partial|tmp)(?:\.\w+)?"
                        r"|inprogress(?:\.\w+)?(?:\.partial|\.journal|\.lock)?)\Z")
_SUBFOLDERS = ("", "masters", "stacks", "previews", "calibrated")


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


def stable_temporary(path: str) -> str:
    """The fixed temporary name of ``path`` for a cluster run (see :func:`atomic_path`)."""
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    return os.path.join(folder, f".{os.path.basename(path)}.inprogress{suffix}")


def remove_night_leftovers(out_dir: str, resumable: Sequence[str] = ()) -> list[str]:
    """Remove the temporaries a killed night left in ``out_dir`` and its product folders,
    except a cluster run's partial files of the products in ``resumable`` (their journal says
    whether they can be resumed). Call while holding the lock of ``out_dir``."""
    from ..io.lock import remove_leftovers

    keep = {os.path.basename(stable_temporary(p)) for p in resumable}
    keep |= {f"{k}.partial" for k in keep} | {f"{k}.journal" for k in keep}

    def stale(name: str) -> bool:
        return name not in keep and _TEMPORARY.match(name) is not None

    removed = []
    for sub in _SUBFOLDERS:
        removed += remove_leftovers(os.path.join(out_dir, sub), stale)
    return removed


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
        tmp = stable_temporary(path)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.",
                                   suffix=f".partial{suffix}", dir=folder)
        os.close(fd)
        os.unlink(tmp)  # writers create it themselves; the unique name is what we wanted
    try:
        with owned_temporary(tmp):  # a FitsTileWriter writes it directly (no nested name)
            yield tmp
        os.chmod(tmp, product_mode())
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
