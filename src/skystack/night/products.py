"""Products of a night: atomic writes, fingerprints, and reuse on a re-run.

Every product (master, stack) carries ``SKYFPRNT``, a fingerprint of what it was made from: the
input files (absolute path, size, modification time and a hash of sampled bytes, see
:mod:`skystack.io.identity`), the options, and the fingerprints of the masters used; and
``SKYFP001``... one record per input (a hash of its path, a hash of its identity), so that a
product made from an input that has since changed names that input. A re-run into the same
directory

* reuses a product whose fingerprint matches (nothing is read or written);
* refuses, before any work, a product that exists with another fingerprint (or none) unless
  ``overwrite`` is given, saying which input changed where it can;
* never leaves a half-written product under a final name: products are written under a
  temporary name in the same folder and renamed when complete;
* removes the temporaries a killed run left (:func:`remove_night_leftovers`; the night holds
  the lock of its OUT_DIR, so no other run is writing them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from astropy.io import fits

from ..errors import SkystackError
from ..io.atomic import atomic_write
from ..io.identity import file_identity, recipe_fingerprint
from ..io.labels import fits_label
from ..io.writer import owned_temporary

FINGERPRINT_KEY = "SKYFPRNT"
INPUT_KEY = "SKYFP"  # SKYFP001..SKYFP999: one record per input
MAX_INPUT_CARDS = 999

# The night's temporaries: atomic_path's ``.<name>.<random>.partial<ext>``, the previews'
# ``.<name>.<random>.tmp``, a writer's ``.<name>.<random>.partial`` (nested in the former by
# older versions), and a cluster run's ``.<name>.inprogress<ext>`` with its ``.partial``,
# ``.journal`` and ``.lock``.
_TEMPORARY = re.compile(r"\..+\.(?:[a-z0-9_]{8}\.(?:partial|tmp)(?:\.\w+)?"
                        r"|inprogress(?:\.\w+)?(?:\.partial|\.journal|\.lock)?)\Z")
_SUBFOLDERS = ("", "masters", "stacks", "previews", "calibrated")


def fingerprint(kind: str, inputs: Sequence[str], options: dict,
                depends: Sequence[str] = (), identities: Sequence[list] | None = None) -> str:
    """A short hex digest of a product's recipe (see module docstring). ``identities``: the
    inputs' :func:`~skystack.io.identity.file_identity`, when already made."""
    files = list(identities) if identities is not None else [file_identity(p) for p in inputs]
    recipe = {"kind": kind, "inputs": files, "options": options, "depends": list(depends)}
    return recipe_fingerprint(recipe, 16)


def input_records(identities: Sequence[list]) -> list[str]:
    """One record per input: 8 hex digits of its path's hash, then 8 of its identity's."""
    return [recipe_fingerprint(ident[0], 8) + recipe_fingerprint(ident, 8)
            for ident in identities]


def input_cards(records: Sequence[str], inputs: Sequence[str]) -> list[tuple]:
    """The ``SKYFPnnn`` header cards of a product (none beyond :data:`MAX_INPUT_CARDS`)."""
    if len(records) > MAX_INPUT_CARDS:
        return []
    return [(f"{INPUT_KEY}{k + 1:03d}", rec, fits_label(os.path.basename(path))[:45])
            for k, (rec, path) in enumerate(zip(records, inputs))]


def changed_inputs(path: str, records: Sequence[str], inputs: Sequence[str]) -> str | None:
    """Why the existing product ``path`` differs from one made of ``inputs`` now (their
    ``records``): ``"input X changed since it was made"``, or None where its header does not
    tell (no records, or the inputs are the same and so the options differ)."""
    try:
        header = fits.getheader(path)
    except (OSError, ValueError):
        return None
    stored = [str(v) for k, v in header.items() if k.startswith(INPUT_KEY)
              and k[len(INPUT_KEY):].isdigit()]
    if not stored or len(records) > MAX_INPUT_CARDS:
        return None
    by_path = {r[:8]: r for r in stored}
    changed = [p for p, r in zip(inputs, records) if r[:8] in by_path and by_path[r[:8]] != r]
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        return f"input {changed[0]} changed since it was made{more}"
    added = [p for p, r in zip(inputs, records) if r[:8] not in by_path]
    if added:
        return f"{added[0]} was not among its inputs"
    if len(stored) != len(records):
        return "it was made from other inputs"
    return None


def existing_fingerprint(path: str) -> str | None:
    """The ``SKYFPRNT`` of an existing FITS product, or None if absent or unreadable."""
    try:
        return str(fits.getval(path, FINGERPRINT_KEY))
    except (OSError, KeyError, ValueError, IndexError):
        return None


def product_state(path: str, fprint: str, overwrite: bool, records: Sequence[str] = (),
                  inputs: Sequence[str] = ()) -> str:
    """``"build"``, ``"reuse"`` (same fingerprint), or a one-line :class:`SkystackError` when the
    product exists with another recipe and ``overwrite`` is False (naming the input that
    changed, given the inputs' ``records``)."""
    if not os.path.exists(path):
        return "build"
    if existing_fingerprint(path) == fprint:
        return "reuse"
    if overwrite:
        return "build"
    why = changed_inputs(path, records, inputs) or "was made from other inputs or options"
    raise SkystackError(f"{path}: exists but {why} (use --overwrite to rebuild it)")


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
    """Yield a temporary path beside ``path``, not yet created; on success move it to ``path``
    (replacing an existing file only if ``overwrite``), on failure remove it
    (:func:`skystack.io.atomic.atomic_write`).

    ``stable``: the temporary name is the same on every run (``.<name>.inprogress<ext>``)
    instead of unique, so that a cluster run interrupted while writing it finds its partial
    file and journal again when the night is restarted (:mod:`skystack.cluster.driver`)."""
    suffix = os.path.splitext(path)[1]
    with atomic_write(path, overwrite=overwrite, suffix=f".partial{suffix}", create=False,
                      temporary=stable_temporary(path) if stable else None) as tmp:
        with owned_temporary(tmp):  # a FitsTileWriter writes it directly (no nested name)
            yield tmp
