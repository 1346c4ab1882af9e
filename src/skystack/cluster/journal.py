"""The restart journal of a cluster run: which output tiles are already in the partial file.

A cluster run writes its product into ``<output>.partial`` (a deterministic name, so that a
restart finds it) and keeps ``<output>.journal`` beside it, a text file::

    skystack-journal 1 <fingerprint>
    <r0> <r1> <c0> <c1> <crc32>
    ...

one line per finished tile: its rectangle (0-based, half-open, rows then columns) and the CRC-32
of the bytes written for it (all planes, in file order; a record for audits, not re-checked).
Only the client appends to the journal, after the worker that wrote the tile has returned (the
worker ``fdatasync``\\ s the partial file before returning), and each line is ``fsync``\\ ed: the
journal never names a tile that is not on disk. A tile written but not yet journaled when a run
stops is simply computed again (writes are idempotent).

The fingerprint covers what decides the pixels (inputs by path, size, mtime and a hash of
sampled bytes (:mod:`skystack.io.identity`: a file rewritten in place with its time set back
is not resumed), options,
normalisation, grid, file layout), not the tile plan or the memory budget: a restart resumes
any tile whose rows are all covered by journaled full-width bands, even if it plans its tiles
differently. A journal with another fingerprint, or a partial file without a journal, is
discarded and the run starts afresh.
"""

from __future__ import annotations

import os

from ..core.tiles import Tile
from ..io.identity import file_identity, recipe_fingerprint
from ..io.lock import journal_paths

__all__ = ["Journal", "done_tiles", "fingerprint", "journal_paths"]

MAGIC = "skystack-journal"
VERSION = 1




def fingerprint(recipe: dict, files: list[str]) -> str:
    """A hex digest of ``recipe`` (JSON-able, arrays and dataclasses allowed) and of the size,
    modification time and sampled content of each file in ``files``
    (:func:`~skystack.io.identity.recipe_fingerprint`)."""
    stats = [[path, *file_identity(path)[1:]] for path in sorted(set(files))]
    return recipe_fingerprint({"recipe": recipe, "files": stats}, 24)


class Journal:
    """Append-only record of finished tiles (see module docstring)."""

    def __init__(self, path: str, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self._fd: int | None = None

    def load(self) -> list[Tile] | None:
        """The journaled tiles, or None when there is no journal or it has another fingerprint
        (a torn last line, from a crash while appending, is ignored)."""
        try:
            with open(self.path) as fh:
                lines = fh.read().split("\n")
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        head = lines[0].split()
        if head != [MAGIC, str(VERSION), self.fingerprint]:
            return None
        tiles = []
        for line in lines[1:]:
            parts = line.split()
            if len(parts) != 5:
                continue
            try:
                r0, r1, c0, c1 = (int(v) for v in parts[:4])
            except ValueError:
                continue
            tiles.append(Tile(r0, r1, c0, c1))
        return tiles

    def open(self, fresh: bool) -> None:
        """Open for appending; ``fresh`` starts a new journal (header line only)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if fresh else 0)
        self._fd = os.open(self.path, flags, 0o644)
        if fresh:
            self._append(f"{MAGIC} {VERSION} {self.fingerprint}\n")

    def record(self, tile: Tile, crc: int) -> None:
        """Append one finished tile."""
        self._append(f"{tile.r0} {tile.r1} {tile.c0} {tile.c1} {crc:08x}\n")

    def _append(self, text: str) -> None:
        os.write(self._fd, text.encode("ascii"))
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """Close and delete the journal (the product is committed)."""
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def done_tiles(planned: list[Tile], journaled: list[Tile], width: int) -> set[int]:
    """Indices of ``planned`` tiles already in the file: journaled as such, or every row of
    them inside journaled full-width bands (the previous run may have planned other bands)."""
    exact = set(journaled)
    rows: set[int] = set()
    for t in journaled:
        if t.c0 == 0 and t.c1 == width:
            rows.update(range(t.r0, t.r1))
    done = set()
    for i, t in enumerate(planned):
        if t in exact or all(r in rows for r in range(t.r0, t.r1)):
            done.add(i)
    return done
