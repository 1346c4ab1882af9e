"""File names of a night's products: readable, and never shared by two different products.

A product's name is built from header values made safe for file names (``M67_V.fits``,
``flat_V.fits``), which is not one-to-one: FILTER ``V/1`` and ``V_1`` both give ``V_1``, and
OBJECT ``X`` with FILTER ``Y_Z`` gives the same ``X_Y_Z`` as OBJECT ``X_Y`` with FILTER ``Z``.
Two products under one name would overwrite each other, and the second product's master would
be used for the first's frames. So every product first *claims* its readable name together with
its raw identity (kind, raw header values, camera); when :meth:`ProductNames.resolve` finds one
name (compared case-insensitively, as on macOS and Windows file systems) claimed by different
identities, each of them gets ``~<8 hex digits>`` appended: a hash of its raw identity. ``~``
never appears in a safe name, so a suffixed name cannot equal a plain one, and different raw
identities get different suffixes (a clash of the hashes is refused, not ignored).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import SkystackError
from ..io.identity import short_digest
from ..io.labels import safe_name

__all__ = ["ProductNames", "Renamed", "SEPARATOR", "describe", "identity_digest",
           "safe_name"]

SEPARATOR = "~"  # between a readable name and its hash suffix; never in a safe name


@dataclass(frozen=True)
class Renamed:
    """A product whose readable name was shared: its ``plain`` and final ``path``, its raw
    ``identity`` and the ``others`` (raw identities) that claimed the same readable name."""

    plain: str
    path: str
    identity: tuple
    others: tuple[tuple, ...]


def identity_digest(identity: tuple) -> str:
    """8 hex digits of a product's raw identity: the suffix that tells apart shared names."""
    return short_digest(repr(identity), 8)


class ProductNames:
    """Claims of readable names, then unique final paths (see module docstring).

    :meth:`claim` returns a *provisional* path, unique per identity, that the planner uses as
    the product's key; :meth:`resolve` maps each provisional path to the final one."""

    def __init__(self) -> None:
        self._claims: dict[str, tuple[str, str, tuple]] = {}  # provisional -> (plain, hashed, id)

    def claim(self, folder: str, stem: str, ext: str, identity: tuple) -> str:
        """Claim ``folder/stem+ext`` for the product ``identity`` (a tuple of its raw values);
        returns the provisional path (the same for the same identity)."""
        plain = os.path.join(folder, stem + ext)
        hashed = os.path.join(folder, f"{stem}{SEPARATOR}{identity_digest(identity)}{ext}")
        self._claims[hashed] = (plain, hashed, identity)
        return hashed

    def resolve(self) -> tuple[dict[str, str], list[Renamed]]:
        """(provisional path -> final path, the products renamed because they shared a name)."""
        by_plain: dict[str, list[tuple[str, str, tuple]]] = {}
        for claim in self._claims.values():
            by_plain.setdefault(os.path.normcase(claim[0]).casefold(), []).append(claim)
        final: dict[str, str] = {}
        renamed: list[Renamed] = []
        for claims in by_plain.values():
            if len(claims) == 1:
                plain, hashed, _ = claims[0]
                final[hashed] = plain
                continue
            for plain, hashed, identity in claims:
                final[hashed] = hashed
                others = tuple(c[2] for c in claims if c[2] != identity)
                renamed.append(Renamed(plain, hashed, identity, others))
        folded = [os.path.normcase(p).casefold() for p in final.values()]
        if len(set(folded)) != len(folded):  # two hashes alike: refuse rather than overwrite
            raise SkystackError("two products of the night would get the same file name; "
                                "rename a FILTER or OBJECT value")
        return final, renamed


def describe(identity: tuple) -> str:
    """A product identity of the night for a person: ``flat of FILTER 'V/1'``."""
    kind = identity[0]
    if kind in ("stack", "rgb"):
        what = f"OBJECT {identity[1]!r}" + (f" FILTER {identity[2]!r}" if kind == "stack" else "")
        return f"{kind} of {what}"
    if kind == "flat":
        return f"flat of FILTER {identity[1]!r}"
    if kind == "dark":
        return f"dark of {identity[1]!r} s"
    if kind == "calibrated":
        return f"calibrated {identity[1]}"
    return kind
