"""One atomic write for every output (skystack.io.atomic): temporary beside the target, the
umask's permissions, fsync, then a rename that never replaces a file it may not overwrite,
also on file systems without hard links."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skystack import reproject
from skystack.errors import SkystackError
from skystack.io.atomic import atomic_write, product_mode
from skystack.night.products import atomic_path


def _no_hard_links(monkeypatch):
    """``os.link`` as on FAT or some network file systems: refused, whatever the names."""
    def refuse(src, dst, *args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)


def _image():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [16.5, 16.5]
    w.wcs.cdelt = [-1e-4, 1e-4]
    w.pixel_shape = (32, 32)
    data = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
    return data, w


def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".")]


def test_reproject_writes_on_a_file_system_without_hard_links(tmp_path, monkeypatch):
    _no_hard_links(monkeypatch)
    data, w = _image()
    out = tmp_path / "r.fits"
    reproject((data, w), w, out, backend="cpu")
    with fits.open(out) as hdul:
        np.testing.assert_allclose(hdul[0].data, data, atol=1e-3)  # same grid: unchanged
    assert os.stat(out).st_mode & 0o777 == product_mode()
    assert _leftovers(tmp_path) == []
    with pytest.raises(SkystackError, match="output exists"):
        reproject((data, w), w, out, backend="cpu")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("links", [True, False])
def test_atomic_write_never_replaces_without_overwrite(tmp_path, monkeypatch, links):
    if not links:
        _no_hard_links(monkeypatch)
    target = tmp_path / "t.txt"
    with atomic_write(target, overwrite=False) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp) != "t.txt"
        with open(tmp, "w") as fh:
            fh.write("first")
    assert target.read_text() == "first"
    with pytest.raises(SkystackError, match="output exists"):
        with atomic_write(target, overwrite=False) as tmp:
            with open(tmp, "w") as fh:
                fh.write("second")
    assert target.read_text() == "first"
    with atomic_write(target, overwrite=True) as tmp:
        with open(tmp, "w") as fh:
            fh.write("third")
    assert target.read_text() == "third"
    assert _leftovers(tmp_path) == []


def test_night_atomic_path_without_hard_links(tmp_path, monkeypatch):
    _no_hard_links(monkeypatch)
    target = str(tmp_path / "m.fits")
    with atomic_path(target, overwrite=False) as tmp:
        assert not os.path.exists(tmp)  # the writer creates it
        fits.PrimaryHDU(np.zeros((2, 2), np.float32)).writeto(tmp)
    assert os.path.isfile(target) and _leftovers(tmp_path) == []
    with pytest.raises(SkystackError, match="output exists"):
        with atomic_path(target, overwrite=False) as tmp:
            fits.PrimaryHDU(np.ones((2, 2), np.float32)).writeto(tmp)
    assert fits.getdata(target).sum() == 0 and _leftovers(tmp_path) == []


def test_atomic_write_removes_the_temporary_when_interrupted(tmp_path):
    target = tmp_path / "t.png"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target, suffix=".tmp") as tmp:
            assert os.path.basename(tmp).endswith(".tmp") and os.path.exists(tmp)
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_atomic_write_flushes_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace",
                        lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    with atomic_write(tmp_path / "s.json") as tmp:
        with open(tmp, "w") as fh:
            fh.write("{}")
    assert events == ["fsync", "replace"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_write_gives_the_umask_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "a.csv") as tmp:
            with open(tmp, "w") as fh:
                fh.write("x")
        with atomic_path(str(tmp_path / "b.json")) as tmp:
            with open(tmp, "w") as fh:
                fh.write("x")
    finally:
        os.umask(old)
    for name in ("a.csv", "b.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask
