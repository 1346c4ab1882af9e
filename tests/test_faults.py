"""Fault injection: ``skystack combine`` (a subprocess) killed, out of disk, out of file
descriptors, and racing another run on the same output.

Contract checked every time: the run ends with exit 0 and a correct product, or with a one-line
error (no traceback), or is killed; after a clean end no partial or temporary file is left; an
existing output is never corrupted (it is the old file or a complete new product); inputs are
never modified. After SIGKILL (which nothing can catch) the next run on the same output
succeeds and leaves nothing behind.

The kill points are drawn from a seeded generator: half of them at a random delay after the
start (imports, header scan, combine or writing), half at a random delay after the output's
temporary file appeared (while tiles are being written). Where a run happens to finish before
its signal, the test checks its product instead.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import skystack

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and rlimits")

SRC = str(Path(skystack.__file__).resolve().parents[1])
SHAPE = (1024, 1024)  # ~1 s of combining on a 2-core machine: time enough to be interrupted
N_FRAMES = 12


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _command(files, output, *extra) -> list[str]:
    return [sys.executable, "-m", "skystack", "combine", *map(str, files), "-o", str(output),
            "-q", "--backend", "cpu", *extra]


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _digests(paths) -> dict:
    return {str(p): _digest(p) for p in paths}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """N_FRAMES float32 inputs of SHAPE, their digests and the expected mean (numpy)."""
    folder = tmp_path_factory.mktemp("fault-inputs")
    rng = np.random.default_rng(14)
    paths, total = [], np.zeros(SHAPE)
    for i in range(N_FRAMES):
        data = rng.normal(100.0, 10.0, SHAPE).astype(np.float32)
        total += data
        paths.append(folder / f"f{i:02d}.fits")
        fits.writeto(paths[-1], data)
    return paths, _digests(paths), total / N_FRAMES


def _old_output(path) -> str:
    """An existing output to be replaced (--overwrite): a small valid FITS file."""
    fits.writeto(path, np.full((4, 4), -1.0, np.float32))
    return _digest(path)


def _one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) <= 1 and all(line.startswith("skystack:") for line in lines), stderr


def _check_product(path, expected) -> None:
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
        data = hdul[0].data
        assert names[1:4] == ["UNCERT", "MASK", "COUNT"], names
        np.testing.assert_allclose(data, expected, rtol=1e-5)


def _output_state(output, old_digest, expected) -> str:
    """'old' if the output is the untouched old file, 'new' if it is a complete correct
    product; anything else fails."""
    assert output.exists(), "the existing output disappeared"
    if _digest(output) == old_digest:
        return "old"
    _check_product(output, expected)
    return "new"


def _kill_at(proc: subprocess.Popen, sig: int, seed: int, out_dir: Path, *,
             while_writing: bool):
    """Send ``sig`` at a point drawn from ``seed``: a random delay after the output's temporary
    file appeared (``while_writing``), or a random delay from the start (imports, header scan,
    combine or writing, whichever it falls on)."""
    rng = np.random.default_rng(seed)
    start = time.monotonic()
    if while_writing:
        while proc.poll() is None and time.monotonic() - start < 60:
            if any(p.name.startswith(".") for p in out_dir.iterdir()):
                break
            time.sleep(0.002)
        deadline = time.monotonic() + rng.uniform(0.0, 0.3)
    else:
        deadline = start + rng.uniform(0.05, 2.5)
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is None:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


def _leftovers(out_dir: Path, keep=("out.fits",)) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir() if p.name not in keep)


@pytest.mark.parametrize("seed", range(4))
def test_sigterm_at_random_point(frames, tmp_path, seed):
    paths, digests, expected = frames
    output = tmp_path / "out.fits"
    old = _old_output(output)
    proc = subprocess.Popen(_command(paths, output, "--overwrite", "--mem-limit", "40MB"),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    code, stderr = _kill_at(proc, signal.SIGTERM, seed, tmp_path, while_writing=seed % 2 == 0)
    assert _digests(paths) == digests, "an input was modified"
    _one_line_error(stderr)
    assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM, 130), (code, stderr)
    state = _output_state(output, old, expected)
    assert code != 0 or state == "new"  # killed: old, or new if it came after the rename
    assert _leftovers(tmp_path) == [], "a killed run left files behind"


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_keeps_existing_output(frames, tmp_path, seed):
    paths, digests, expected = frames
    output = tmp_path / "out.fits"
    old = _old_output(output)
    proc = subprocess.Popen(_command(paths, output, "--overwrite", "--mem-limit", "40MB"),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    code, stderr = _kill_at(proc, signal.SIGKILL, 100 + seed, tmp_path,
                            while_writing=seed % 2 == 0)
    assert _digests(paths) == digests, "an input was modified"
    assert code in (0, -signal.SIGKILL), (code, stderr)
    if code == 0:
        _one_line_error(stderr)
    # The rename is atomic: the old file or the complete new one, never a mix.
    _output_state(output, old, expected)


@pytest.mark.parametrize("seed", range(2))
def test_sigkill_then_rerun_leaves_nothing(frames, tmp_path, seed):
    paths, digests, expected = frames
    output = tmp_path / "out.fits"
    _old_output(output)
    command = _command(paths, output, "--overwrite", "--mem-limit", "40MB")
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    code, _ = _kill_at(proc, signal.SIGKILL, 200 + seed, tmp_path, while_writing=True)
    assert code in (0, -signal.SIGKILL)
    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    _one_line_error(rerun.stderr)
    _check_product(output, expected)
    assert _digests(paths) == digests
    assert _leftovers(tmp_path) == [], "left beside the output after the rerun"


# -- out of disk -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small-inputs")
    rng = np.random.default_rng(15)
    paths = []
    for i in range(5):
        paths.append(folder / f"s{i}.fits")
        fits.writeto(paths[-1], rng.normal(100.0, 10.0, (256, 256)).astype(np.float32))
    return paths, _digests(paths)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KiB tmpfs (root only); the product of 256x256 frames needs about 720 KB."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def _limit_file_size(nbytes: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill; kept by exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return preexec


def _check_disk_full(result, out_dir: Path, output: Path, old: str, paths, digests) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (1, 2), (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("skystack: error: "), result.stderr
    assert _digest(output) == old, "the existing output was damaged"
    assert _leftovers(out_dir) == [], "a partial output was left"
    assert _digests(paths) == digests


def test_disk_full_on_tmpfs(small_frames, tiny_tmpfs):
    paths, digests = small_frames
    output = tiny_tmpfs / "out.fits"
    old = _old_output(output)
    result = subprocess.run(_command(paths, output, "--overwrite"), env=_env(),
                            capture_output=True, text=True, timeout=120)
    _check_disk_full(result, tiny_tmpfs, output, old, paths, digests)
    assert "space" in result.stderr.lower(), result.stderr


def test_file_size_limit(small_frames, tmp_path):
    """RLIMIT_FSIZE (works without root): writes past 300 kB fail with EFBIG."""
    paths, digests = small_frames
    output = tmp_path / "out.fits"
    old = _old_output(output)
    result = subprocess.run(_command(paths, output, "--overwrite"), env=_env(),
                            capture_output=True, text=True, timeout=120,
                            preexec_fn=_limit_file_size(300_000))
    _check_disk_full(result, tmp_path, output, old, paths, digests)


# -- out of file descriptors ---------------------------------------------------------------------


def _limit_descriptors(n: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return preexec


def _many_frames(folder: Path, n: int, compressed: bool) -> tuple[list[Path], np.ndarray]:
    """``n`` int16 frames (lossless in a RICE-compressed .fz too) and their mean."""
    rng = np.random.default_rng(16)
    paths, total = [], np.zeros((64, 64))
    for i in range(n):
        data = rng.integers(0, 1000, (64, 64)).astype(np.int16)
        total += data
        if compressed:
            paths.append(folder / f"c{i:02d}.fits.fz")
            fits.HDUList([fits.PrimaryHDU(),
                          fits.CompImageHDU(data, compression_type="RICE_1")]).writeto(paths[-1])
        else:
            paths.append(folder / f"m{i:02d}.fits")
            fits.writeto(paths[-1], data)
    return paths, total / n


@pytest.mark.parametrize("compressed", [False, True], ids=["fits", "fz"])
def test_descriptor_limit(tmp_path, compressed):
    """60 inputs under RLIMIT_NOFILE = 32: the product is still the mean (or a one-line error,
    never a traceback)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    paths, expected = _many_frames(inputs, 60, compressed)
    digests = _digests(paths)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "out.fits"
    result = subprocess.run(_command(paths, output), env=_env(), capture_output=True,
                            text=True, timeout=120, preexec_fn=_limit_descriptors(32))
    _one_line_error(result.stderr)
    assert result.returncode == 0, result.stderr
    _check_product(output, expected)
    assert _leftovers(out_dir) == []
    assert _digests(paths) == digests


# -- two runs, one output --------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "new"])
def test_two_concurrent_runs_on_one_output(frames, small_frames, tmp_path, overwrite):
    """Two runs with different inputs write the same output at once: each ends with exit 0 or
    a one-line error, and the output is one run's complete product, never a mix."""
    paths, digests, expected = frames
    first = paths[: N_FRAMES // 2]
    second = paths[N_FRAMES // 2:]
    expected_first = np.mean([fits.getdata(p).astype(np.float64) for p in first], axis=0)
    expected_second = np.mean([fits.getdata(p).astype(np.float64) for p in second], axis=0)
    output = tmp_path / "out.fits"
    extra = ["--overwrite"] if overwrite else []
    if overwrite:
        _old_output(output)
    runs = [subprocess.Popen(_command(group, output, *extra, "--mem-limit", "40MB"), env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for group in (first, second)]
    results = [(proc.wait(timeout=120), proc.communicate()[1]) for proc in runs]
    for code, stderr in results:
        _one_line_error(stderr)
        assert code in (0, 2), (code, stderr)
        if code == 2:
            assert str(output) in stderr or output.name in stderr, stderr
    winners = [i for i, (code, _) in enumerate(results) if code == 0]
    assert winners, results
    data = fits.getdata(output).astype(np.float64)
    matches = [np.allclose(data, e, rtol=1e-5) for e in (expected_first, expected_second)]
    assert any(matches), "the output is neither run's product"
    assert matches.index(True) in winners, "the output is the product of a run that failed"
    _check_product(output, (expected_first, expected_second)[matches.index(True)])
    assert _leftovers(tmp_path) == []
    assert _digests(paths) == digests


def test_frames_fixture_is_sane(frames, tmp_path):
    """The fault tests' reference: a plain combine of the inputs is their mean."""
    paths, _, expected = frames
    result = subprocess.run(_command(paths, tmp_path / "out.fits"), env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    _check_product(tmp_path / "out.fits", expected)
