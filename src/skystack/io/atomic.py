"""Writing a file atomically: under a temporary name beside it, then moved into place.

Every product, preview, plot, table and summary of skystack is written this way, so that a
crash, a full disk or Ctrl-C never leaves a half-written file under a final name:

* the temporary is ``.<name>.<8 random characters><suffix>`` in the target's folder (made with
  ``tempfile.mkstemp``, so :func:`skystack.io.lock.temporary_pattern` recognises it and the
  next run holding the output's lock removes one that a killed run left);
* it gets the permissions of any new file (:func:`product_mode`: ``0o666`` less the umask),
  not ``mkstemp``'s private ``0600``;
* when complete it is flushed to disk (``fsync``) and then renamed onto the target
  (:func:`publish`). Without ``overwrite`` the target is never replaced: the temporary is
  hard-linked to the final name, which fails if that name appeared meanwhile, so two runs cannot
  both believe they created it. On file systems without hard links (FAT, some network and FUSE
  file systems) ``link`` fails with another error; the target is then checked and the
  temporary renamed (a narrow race remains there, which no portable call closes);
* on failure (any exception, interrupts included) the temporary is removed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import SkystackError

__all__ = ["atomic_write", "open_temporary", "product_mode", "publish"]


def product_mode() -> int:
    """The permission bits of a new product: ``0o666`` less the process's umask (0644 under
    the usual umask 022). ``mkstemp`` files are private (0600) and must be given these."""
    try:  # Linux: read it without changing it (os.umask is process-wide, threads race)
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def open_temporary(path: str | os.PathLike, suffix: str = ".partial") -> tuple[int, str]:
    """Create ``.<name>.<random><suffix>`` beside ``path`` with :func:`product_mode`; returns
    its open descriptor (read-write) and its path."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix,
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        os.fchmod(fd, product_mode())  # mkstemp's file is private (0600)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def _exists_error(path: str) -> SkystackError:
    return SkystackError(f"{path}: output exists (use --overwrite to replace it)")


def publish(tmp: str, path: str, overwrite: bool) -> None:
    """Move the finished file ``tmp`` to ``path`` (see module docstring): replacing an existing
    ``path`` only if ``overwrite``, else raising :class:`SkystackError` when it exists. ``tmp``
    is gone afterwards, unless this raises. The caller has flushed ``tmp`` to disk."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        # link() fails if the name exists, even if it appeared a moment ago: never clobber a
        # file we were not allowed to overwrite.
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError:
        # No hard links on this file system (EPERM, ENOTSUP, EXDEV, ...): check, then rename.
        if os.path.lexists(path):
            raise _exists_error(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike, *, overwrite: bool = True, suffix: str = ".partial",
                 create: bool = True, temporary: str | os.PathLike | None = None
                 ) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write the file into; when the block succeeds
    the file gets :func:`product_mode`, is flushed to disk and moved onto ``path``
    (:func:`publish`: an existing ``path`` is replaced only if ``overwrite``); when it raises,
    the temporary is removed.

    ``create=False`` yields a unique name that does not exist (for writers that create the file
    themselves and refuse an existing one). ``temporary`` fixes the temporary's name instead
    (a cluster run's resumable ``.<name>.inprogress``; never created here)."""
    path = os.fspath(path)
    if temporary is not None:
        tmp = os.fspath(temporary)
    else:
        fd, tmp = open_temporary(path, suffix)
        os.close(fd)
        if not create:
            os.unlink(tmp)  # the writer creates it; the unique name is what we wanted
    try:
        yield tmp
        os.chmod(tmp, product_mode())  # whoever created it, the product's usual permissions
        _fsync_path(tmp)
        publish(tmp, path, overwrite)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
