"""Outputs under concurrent runs, signals and kills, and their permissions.

Real processes: a run is slowed down (each tile's write waits) so that it is caught mid-run,
with its partial file on disk and its lock held, and is then signalled, killed, or raced by a
second run on the same output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits

import skystack
from skystack.cli import main
from skystack.night.run import run_night
from tests.tiny_night import write_flat, write_lights

SRC = os.path.dirname(os.path.dirname(os.path.abspath(skystack.__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The CLI, with every tile's write delayed: the run is mid-way for as long as the test wants.
SLOW_CLI = """
import sys, time
from skystack.io import writer
write_tile = writer.FitsTileWriter.write_tile
def slow(self, *args, **kwargs):
    time.sleep(60)
    return write_tile(self, *args, **kwargs)
writer.FitsTileWriter.write_tile = slow
from skystack.cli import main
sys.exit(main(sys.argv[1:]))
"""

TEMPORARY = re.compile(r"\.(partial|tmp|lock|journal|inprogress)")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, ROOT])}


def _start(args: list[str], slow: bool = True) -> subprocess.Popen:
    command = [sys.executable, "-c", SLOW_CLI] if slow else [sys.executable, "-m", "skystack"]
    return subprocess.Popen([*command, *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(folder, pattern: str, proc: subprocess.Popen, timeout: float = 60.0) -> str:
    """The first file of ``folder`` (searched recursively) whose name matches ``pattern``."""
    rx = re.compile(pattern)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for base, _, names in os.walk(folder):
            for name in names:
                if rx.search(name):
                    return os.path.join(base, name)
        if proc.poll() is not None:
            raise AssertionError(f"run ended before it was caught mid-way: {proc.returncode} "
                                 f"{proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no {pattern} in {folder} after {timeout} s")


def _temporaries(folder) -> list[str]:
    return [os.path.join(b, n) for b, _, names in os.walk(folder) for n in names
            if TEMPORARY.search(n)]


@pytest.fixture
def frames(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(1000.0, 10.0, (5, 96, 80)).astype(np.float32)
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for k, d in enumerate(data):
        path = folder / f"f{k}.fits"
        fits.PrimaryHDU(d).writeto(path)
        paths.append(str(path))
    return paths, data


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_run_removes_temporaries_and_exits_128_plus_signal(frames, tmp_path, sig):
    paths, _ = frames
    out = tmp_path / "out"
    out.mkdir()
    proc = _start(["combine", *paths, "-o", str(out / "c.fits"), "--backend", "cpu"])
    _wait_for(out, r"^\.c\.fits\..*\.partial$", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert err.strip().count("\n") == 0 and "interrupted" in err, err
    assert os.listdir(out) == []


def test_sigkill_then_rerun_leaves_no_stale_partial(frames, tmp_path):
    paths, data = frames
    out = tmp_path / "out"
    out.mkdir()
    target = str(out / "c.fits")
    proc = _start(["combine", *paths, "-o", target, "--backend", "cpu"])
    partial = _wait_for(out, r"^\.c\.fits\..*\.partial$", proc)
    proc.kill()
    proc.wait(timeout=30)
    assert os.path.exists(partial)  # what SIGKILL leaves: the next run cleans it
    assert main(["combine", *paths, "-o", target, "--backend", "cpu", "-q"]) == 0
    assert sorted(os.listdir(out)) == ["c.fits"]
    np.testing.assert_allclose(fits.getdata(target), data.mean(axis=0), rtol=1e-6)


def _second_run_is_refused(first: subprocess.Popen, second: list[str], output) -> None:
    try:
        proc = _start(second, slow=False)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "another skystack run is writing" in lines[0], err
        assert os.fspath(output) in lines[0]
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)


def test_two_combines_on_one_output_the_second_is_refused(frames, tmp_path):
    paths, _ = frames
    target = tmp_path / "c.fits"
    first = _start(["combine", *paths, "-o", str(target), "--backend", "cpu"])
    _wait_for(tmp_path, r"^\.c\.fits\..*\.partial$", first)
    _second_run_is_refused(first, ["combine", *paths, "-o", str(target), "--overwrite",
                                   "--backend", "cpu"], target)
    assert not target.exists() and not _temporaries(tmp_path)


def test_two_stacks_on_one_output_the_second_is_refused(tmp_path):
    lights = write_lights(tmp_path, "l", "M1", "V")
    target = tmp_path / "s.fits"
    first = _start(["stack", *lights, "-o", str(target), "--backend", "cpu"])
    _wait_for(tmp_path, r"^\.s\.fits\..*\.partial$", first)
    _second_run_is_refused(first, ["stack", *lights, "-o", str(target), "--overwrite",
                                   "--backend", "cpu"], target)
    assert not target.exists() and not _temporaries(tmp_path)


@pytest.fixture
def tiny_raw(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_flat(raw, "flat", "V", left=0.8)
    write_lights(raw, "l", "M1", "V")
    return raw


def test_two_nights_on_one_out_dir_the_second_is_refused(tiny_raw, tmp_path):
    out = tmp_path / "out"
    first = _start(["night", str(tiny_raw), "-o", str(out), "--backend", "cpu"])
    _wait_for(out, r"\.partial", first)
    _second_run_is_refused(first, ["night", str(tiny_raw), "-o", str(out), "--overwrite",
                                   "--backend", "cpu"], out)
    assert not _temporaries(out)


def test_killed_night_leaves_nothing_after_the_next_run(tiny_raw, tmp_path):
    out = tmp_path / "out"
    first = _start(["night", str(tiny_raw), "-o", str(out), "--backend", "cpu"])
    _wait_for(out, r"\.partial", first)
    first.kill()
    first.wait(timeout=30)
    assert _temporaries(out)
    run_night(tiny_raw, out, backend="cpu")
    assert not _temporaries(out)


def test_night_products_are_written_through_one_temporary_name(tiny_raw, tmp_path,
                                                               monkeypatch):
    import skystack.executor as executor

    seen: list[str] = []
    combine_frames = executor.combine_frames

    def watching(*args, **kwargs):
        seen.extend(os.listdir(tmp_path / "out" / "masters"))
        return combine_frames(*args, **kwargs)

    monkeypatch.setattr(executor, "combine_frames", watching)
    run_night(tiny_raw, tmp_path / "out", backend="cpu", previews=False)
    assert any(".partial" in name for name in seen), seen
    assert not [n for n in seen if n.count(".partial") > 1], seen


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_product_has_the_umask_permissions(tiny_raw, frames, tmp_path, umask):
    from skystack import combine, reproject, stack
    from skystack.night.inspect import inspect_frames

    paths, _ = frames
    lights = sorted(str(p) for p in tiny_raw.glob("l_*.fits"))
    old = os.umask(umask)
    try:
        out = tmp_path / "night"
        run_night(tiny_raw, out, backend="cpu", save_calibrated=True)
        combine(paths, tmp_path / "c.fits", backend="cpu")
        assert main(["combine", *paths, "-o", str(tmp_path / "c2.fits"), "-q"]) == 0
        stack(lights, tmp_path / "s.fits", backend="cpu")
        reproject(lights[0], lights[1], tmp_path / "r.fits", backend="cpu")
        assert main(["reproject", lights[0], "--reference", lights[1], "-o",
                     str(tmp_path / "r2.fits"), "-q"]) == 0
        inspect_frames([str(tiny_raw)], plot_dir=str(tmp_path / "plots"))
    finally:
        os.umask(old)
    products = [os.path.join(b, n) for b, _, names in os.walk(tmp_path) for n in names
                if not b.startswith(str(tiny_raw)) and not b.startswith(str(tmp_path / "in"))]
    kinds = {os.path.splitext(p)[1] for p in products}
    assert {".fits", ".png", ".json"} <= kinds
    assert any("previews" in p for p in products) and any("calibrated" in p for p in products)
    assert any("badpix" in p for p in products) and any("plots" in p for p in products)
    modes = {os.path.relpath(p, tmp_path): oct(os.stat(p).st_mode & 0o777) for p in products}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
