"""One run at a time per output, and no temporary file left for ever by a killed run.

:func:`output_lock` holds an exclusive ``flock`` on ``<output>.lock`` (for a directory such as
the night's OUT_DIR, on ``OUT_DIR/.skystack.lock``) while a run writes that output. A second
run on the same output, in this process or another, on this machine or (where the file system
supports locks, e.g. NFSv4) another, is refused at once with a one-line error instead of mixing
its tiles into the first run's file. The kernel drops the lock when the process dies, however
it dies, so a killed run never blocks the next one; the lock file is removed on release (and a
run that acquired a lock file removed meanwhile tries again, so two runs never hold two
different files of one name).

Whoever holds the lock owns every temporary file of that output: any left in the folder was
left by a killed run, and :func:`remove_leftovers` deletes them.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ..errors import SkystackError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not excluded
    fcntl = None

__all__ = ["lock_path_for", "output_lock", "remove_leftovers", "temporary_pattern",
           "journal_paths"]

log = logging.getLogger("skystack")

DIRECTORY_LOCK = ".skystack.lock"

# mkstemp's random part: 8 characters of [a-z0-9_].
_RANDOM = r"[a-z0-9_]{8}"


def lock_path_for(output: str | os.PathLike) -> str:
    """The lock file of ``output``: ``<output>.lock``, or inside it for a directory."""
    output = os.path.abspath(os.fspath(output))
    if os.path.isdir(output):
        return os.path.join(output, DIRECTORY_LOCK)
    return f"{output}.lock"


def _acquire(lock_path: str, output: str) -> int | None:
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise SkystackError(f"{output}: cannot create the lock file {lock_path} "
                                f"({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SkystackError(f"{output}: another skystack run is writing this output "
                                    f"(it holds {lock_path}); wait for it to finish") from None
            # A file system without locks: say so, but do not refuse to work there.
            log.warning("%s: cannot lock %s (%s): concurrent runs are not excluded", output,
                        lock_path, exc.strerror)
            return None
        try:
            mine, now = os.fstat(fd), os.stat(lock_path)
            if (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder released and removed it meanwhile: lock the new one


@contextmanager
def output_lock(output: str | os.PathLike) -> Iterator[str]:
    """Hold ``output``'s lock for the block (see module docstring); yields the lock file's
    path. Raises :class:`SkystackError` at once when another run holds it."""
    output = os.fspath(output)
    lock_path = lock_path_for(output)
    if fcntl is None:  # pragma: no cover
        yield lock_path
        return
    fd = _acquire(lock_path, output)
    try:
        yield lock_path
    finally:
        if fd is not None:
            try:
                os.unlink(lock_path)  # while still held: see _acquire
            except OSError:
                pass
            os.close(fd)


def journal_paths(output: str) -> tuple[str, str]:
    """(partial file, journal) beside ``output``: the fixed names of a cluster run's output
    while it is written (:mod:`skystack.cluster.journal`), which an in-process run on the same
    output supersedes."""
    return f"{output}.partial", f"{output}.journal"


def temporary_pattern(name: str, suffixes: Iterable[str] = (".partial",)) -> re.Pattern:
    """The names of ``name``'s unique temporaries (``.<name>.<8 random>.partial``, as made with
    ``tempfile.mkstemp(prefix=f".{name}.", suffix=...)``), for the ``suffixes`` given."""
    alternatives = "|".join(re.escape(s) for s in suffixes)
    return re.compile(rf"\.{re.escape(name)}\.{_RANDOM}(?:{alternatives})\Z")


def remove_leftovers(folder: str, match) -> list[str]:
    """Remove the files of ``folder`` whose name ``match(name)`` accepts (temporaries of a
    killed run; call only while holding the lock of the output they belong to). Returns the
    paths removed."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not match(name):
            continue
        path = os.path.join(folder, name)
        try:
            if os.path.isfile(path) and not os.path.islink(path):
                os.unlink(path)
                removed.append(path)
        except OSError:
            continue
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run: %s", len(removed),
                 ", ".join(os.path.basename(p) for p in removed))
    return removed
