"""combine / stack / night on a real Dask ``LocalCluster`` (2 worker processes, loopback).

Products must be identical to the in-process run: every pixel plane bit for bit, and the same
header apart from ``SKYSBKND`` (the workers' backend, e.g. another thread count) and the added
``SKYSDASK`` (number of workers). Faults: a worker killed mid-run, a run interrupted and
restarted (the journal), a restart with other options (journal not reused).
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pytest
from astropy.io import fits

import skystack
from skystack.api_reproject import stack_to_file
from skystack.cli import main
from skystack.errors import SkystackError

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHAPE = (256, 256)
N = 10
ROWS = 8  # tiles of 8 rows: 32 tiles per product
CLUSTER_ONLY = {"SKYSBKND", "SKYSDASK"}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=logging.ERROR)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """10 uint16 frames (int16 + BZERO on disk) with a sky gradient, noise, cosmic rays."""
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    paths = []
    for k in range(N):
        data = 1000 + 0.5 * xx + 0.2 * yy + 20 * k + rng.normal(0, 8, SHAPE)
        data[rng.random(SHAPE) < 0.005] += 4000
        hdu = fits.PrimaryHDU(np.round(data).astype(np.uint16))  # int16 + BZERO on disk
        hdu.header["EXPTIME"] = 30.0 + k
        hdu.header["DATE-OBS"] = f"2026-03-14T20:{k:02d}:00"
        path = folder / f"f{k:02d}.fits"
        hdu.writeto(path)
        paths.append(str(path))
    return paths


def _wcs_header(shape, ra, dec, rot_deg, sip=False):
    from astropy.wcs import WCS, Sip

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    s, t = 1.0 / 3600, np.radians(rot_deg)
    w.wcs.cd = [[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]]
    if sip:
        a, b = np.zeros((3, 3)), np.zeros((3, 3))
        a[2, 0], a[0, 2], b[1, 1] = 2e-6, -1.5e-6, 1e-6
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    return w.to_header(relax=True)


@pytest.fixture(scope="module")
def lights(tmp_path_factory):
    """8 dithered, rotated float32 frames of 160² with TAN WCS (one with SIP)."""
    folder = tmp_path_factory.mktemp("lights")
    rng = np.random.default_rng(5)
    shape = (160, 160)
    paths = []
    for k in range(8):
        header = _wcs_header(shape, 150 + rng.uniform(-5, 5) / 3600,
                             30 + rng.uniform(-5, 5) / 3600, rng.uniform(-5, 5), sip=k == 3)
        header["EXPTIME"] = 60.0
        data = rng.normal(500, 5, shape).astype(np.float32)
        data[rng.random(shape) < 0.005] += 3000
        path = folder / f"l{k}.fits"
        fits.PrimaryHDU(data, header=header).writeto(path)
        paths.append(str(path))
    return paths


def assert_same_product(a, b) -> None:
    """Every HDU's pixels identical (NaN where NaN); headers equal apart from CLUSTER_ONLY."""
    with fits.open(a) as ha, fits.open(b) as hb:
        assert [h.name for h in ha] == [h.name for h in hb]
        for x, y in zip(ha, hb):
            assert x.data.dtype == y.data.dtype
            assert np.array_equal(x.data, y.data, equal_nan=True), x.name
            cards_a = [(c.keyword, c.value) for c in x.header.cards
                       if c.keyword not in CLUSTER_ONLY]
            cards_b = [(c.keyword, c.value) for c in y.header.cards
                       if c.keyword not in CLUSTER_ONLY]
            assert cards_a == cards_b, x.name
        assert hb[0].header["SKYSDASK"] >= 1


COMBINE = dict(method="mean", reject="sigclip", sigma=2.5, scale="median", weights="exptime")


@pytest.fixture(scope="module")
def reference(frames, tmp_path_factory):
    """The in-process product of COMBINE, and of the median combine."""
    folder = tmp_path_factory.mktemp("ref")
    out = {}
    for name, opts in (("sigclip", COMBINE), ("median", dict(method="median"))):
        out[name] = skystack.combine_to_file(frames, folder / f"{name}.fits", backend="cpu",
                                             max_tile_rows=ROWS, **opts)
    return out


def test_combine_on_cluster_is_identical(client, frames, reference, tmp_path):
    out = tmp_path / "c.fits"
    calls = []
    path = skystack.combine_to_file(frames, out, backend="cpu", max_tile_rows=ROWS,
                                    cluster=client, progress=lambda d, t: calls.append((d, t)),
                                    **COMBINE)
    assert path == str(out)
    assert_same_product(reference["sigclip"], out)
    assert len(calls) == SHAPE[0] // ROWS and calls[-1] == (32, 32)
    assert sorted(os.listdir(tmp_path)) == ["c.fits"]  # no partial file, no journal left


def test_stack_on_cluster_is_identical(client, lights, tmp_path, caplog):
    opts = dict(method="median", reject="sigclip", sigma=3.0, backend="cpu", max_tile_rows=7)
    stack_to_file(lights, tmp_path / "a.fits", **opts)
    with caplog.at_level(logging.INFO, logger="skystack"):
        stack_to_file(lights, tmp_path / "b.fits", cluster=client, **opts)
    assert "cluster stack: 26 tiles" in caplog.text
    assert "cannot be sent to workers exactly" not in caplog.text  # WCS rebuilt exactly
    assert_same_product(tmp_path / "a.fits", tmp_path / "b.fits")
    assert fits.getdata(tmp_path / "b.fits", "EXPMAP").max() == 8 * 60.0


def test_stack_on_cluster_counts_and_labels_like_in_process(client, lights, tmp_path):
    """A frame off the given grid is skipped (not counted) and star-aligned frames without WCS
    get the pixel-only WCS, on the cluster exactly as in process."""
    from astropy.wcs import WCS

    from tests.test_register_synth import TrueMap, catalogue, render_frame

    far = tmp_path / "far.fits"
    header = _wcs_header((160, 160), 150.2, 30.0, 0.0)
    header["EXPTIME"] = 600.0
    fits.PrimaryHDU(np.full((160, 160), 9e3, np.float32), header=header).writeto(far)
    opts = dict(method="mean", backend="cpu", max_tile_rows=16, reference=lights[0])
    stack_to_file([*lights, str(far)], tmp_path / "a.fits", **opts)
    stack_to_file([*lights, str(far)], tmp_path / "b.fits", cluster=client, **opts)
    assert_same_product(tmp_path / "a.fits", tmp_path / "b.fits")
    h = fits.getheader(tmp_path / "b.fits")
    assert h["NCOMBINE"] == 8 and h["NSKIPPED"] == 1 and h["EXPTIME"] == 60.0
    rng = np.random.default_rng(8)
    cat = catalogue(80, (128, 128), rng, margin=20)
    plain = []
    for k, kw in enumerate([dict(), dict(dx=3.2, dy=-2.1), dict(dx=-4.4, theta_deg=1.0)]):
        path = tmp_path / f"p{k}.fits"
        fits.PrimaryHDU(render_frame(TrueMap((128, 128), **kw), cat, rng)).writeto(path)
        plain.append(str(path))
    opts = dict(method="mean", backend="cpu", max_tile_rows=16, align="stars")
    stack_to_file(plain, tmp_path / "c.fits", **opts)
    stack_to_file(plain, tmp_path / "d.fits", cluster=client, **opts)
    assert_same_product(tmp_path / "c.fits", tmp_path / "d.fits")
    h = fits.getheader(tmp_path / "d.fits")
    assert h["CTYPE1"] == "PIXEL" and not WCS(h).has_celestial


def test_worker_killed_mid_run_gives_the_identical_product(client, frames, reference,
                                                           tmp_path):
    from skystack.cluster.tasks import install_test_fault

    marker = tmp_path / "killed"
    client.run(install_test_fault, str(marker), 4)
    try:
        out = tmp_path / "k.fits"
        skystack.combine_to_file(frames, out, backend="cpu", max_tile_rows=ROWS,
                                 cluster=client, **COMBINE)
    finally:
        client.run(install_test_fault, str(marker), 10**9)  # disarm the survivor
    assert marker.exists()  # a worker did die, after writing its 4th tile but before reporting
    assert_same_product(reference["sigclip"], out)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it


class Stop(Exception):
    pass


def _stop_after(k: int):
    def progress(done, total):
        if done >= k:
            raise Stop
    return progress


def test_interrupted_run_resumes_from_the_journal(client, frames, reference, tmp_path, caplog):
    out = tmp_path / "r.fits"
    with pytest.raises(Stop):
        skystack.combine_to_file(frames, out, backend="cpu", max_tile_rows=ROWS,
                                 cluster=client, progress=_stop_after(5), **COMBINE)
    assert not out.exists()
    journal = (tmp_path / "r.fits.journal").read_text().splitlines()
    assert journal[0].startswith("skystack-journal 1 ") and len(journal) == 1 + 5
    assert (tmp_path / "r.fits.partial").exists()
    calls = []
    with caplog.at_level(logging.INFO, logger="skystack"):
        skystack.combine_to_file(frames, out, backend="cpu", max_tile_rows=ROWS,
                                 cluster=client, progress=lambda d, t: calls.append(d),
                                 **COMBINE)
    assert "5 already written" in caplog.text and "27 submitted" in caplog.text
    assert len(calls) == 32 - 5 and calls[0] == 6
    assert_same_product(reference["sigclip"], out)
    assert not (tmp_path / "r.fits.journal").exists()
    assert not (tmp_path / "r.fits.partial").exists()


def test_restart_with_other_tiles_reuses_the_journaled_rows(client, frames, reference,
                                                            tmp_path, caplog):
    out = tmp_path / "t.fits"
    with pytest.raises(Stop):
        skystack.combine_to_file(frames, out, backend="cpu", max_tile_rows=ROWS,
                                 cluster=client, progress=_stop_after(9), **COMBINE)
    journaled = {int(line.split()[0]) for line in
                 (tmp_path / "t.fits.journal").read_text().splitlines()[1:]}
    covered = sum(r0 in journaled and r0 + ROWS in journaled for r0 in range(0, 256, 2 * ROWS))
    assert covered >= 1
    with caplog.at_level(logging.INFO, logger="skystack"):  # 16-row tiles: some are covered
        skystack.combine_to_file(frames, out, backend="cpu", max_tile_rows=2 * ROWS,
                                 cluster=client, **COMBINE)
    assert f"16 tiles, {covered} already written" in caplog.text
    assert_same_product(reference["sigclip"], out)


def test_restart_with_other_options_starts_afresh(client, frames, reference, tmp_path, caplog):
    out = tmp_path / "o.fits"
    with pytest.raises(Stop):
        skystack.combine_to_file(frames, out, backend="cpu", max_tile_rows=ROWS,
                                 cluster=client, progress=_stop_after(5), **COMBINE)
    with caplog.at_level(logging.INFO, logger="skystack"):
        skystack.combine_to_file(frames, out, backend="cpu", max_tile_rows=ROWS,
                                 cluster=client, method="median")
    assert "starting afresh" in caplog.text and "0 already written" in caplog.text
    assert_same_product(reference["median"], out)


def test_cli_scheduler_address(client, frames, reference, tmp_path, capsys):
    out = tmp_path / "cli.fits"
    code = main(["combine", *frames, "-o", str(out), "--backend", "cpu", "--method", "median",
                 "--scheduler", client.scheduler.address, "-q"])
    assert code == 0
    with fits.open(out) as got, fits.open(reference["median"]) as ref:
        assert np.array_equal(got[0].data, ref[0].data)  # other tiles (no --max-rows): same


def test_cli_stack_on_a_local_cluster(lights, tmp_path):
    args = ["stack", *lights, "--backend", "cpu", "--method", "mean", "-q"]
    assert main([*args, "-o", str(tmp_path / "a.fits")]) == 0
    assert main([*args, "-o", str(tmp_path / "b.fits"), "--workers", "1"]) == 0
    assert_same_product(tmp_path / "a.fits", tmp_path / "b.fits")
    assert fits.getval(tmp_path / "b.fits", "SKYSDASK") == 1


def test_night_on_cluster_is_identical(client, tmp_path):
    from skystack.demo_data import write_sample_night
    from skystack.night.run import run_night

    write_sample_night(tmp_path / "raw", shape=(96, 96), n_bias=3, n_dark=3, n_flat=3,
                       filters=("V",), n_light=3, dither_px=3.0, rotation_deg=1.0,
                       overscan=8, seed=2)
    run_night(tmp_path / "raw", tmp_path / "a", backend="cpu", previews=False)
    run_night(tmp_path / "raw", tmp_path / "b", backend="cpu", previews=False, cluster=client)
    names = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "a")
                   for d, _, fs in os.walk(tmp_path / "a") for f in fs if f.endswith(".fits"))
    assert "stacks/M67_V.fits" in names and "masters/flat_V.fits" in names
    for name in names:
        if name.startswith("masters/badpix"):  # made on the client from the masters
            with fits.open(tmp_path / "a" / name) as a, fits.open(tmp_path / "b" / name) as b:
                assert np.array_equal(a[0].data, b[0].data)
            continue
        assert_same_product(tmp_path / "a" / name, tmp_path / "b" / name)


def test_interrupted_night_on_cluster_resumes_its_stack(client, tmp_path, monkeypatch,
                                                         caplog):
    import skystack.cluster.driver as driver
    from skystack.demo_data import write_sample_night
    from skystack.night.run import run_night

    write_sample_night(tmp_path / "raw", shape=(96, 96), n_bias=3, n_dark=3, n_flat=3,
                       filters=("V",), n_light=3, dither_px=3.0, rotation_deg=1.0, seed=3)
    run_night(tmp_path / "raw", tmp_path / "a", backend="cpu", previews=False)
    real = driver.stack_on_cluster
    stop = {"after": 3}

    def small_tiles(*args, **kwargs):  # 12 bands of 8 rows; the first run stops after 3
        if stop["after"]:
            kwargs["progress"] = _stop_after(stop["after"])
        return real(*args, **{**kwargs, "max_tile_rows": 8})

    monkeypatch.setattr(driver, "stack_on_cluster", small_tiles)
    with pytest.raises(Stop):
        run_night(tmp_path / "raw", tmp_path / "b", backend="cpu", previews=False,
                  cluster=client)
    left = sorted(p.name for p in (tmp_path / "b" / "stacks").iterdir())
    assert left == [".M67_V.fits.inprogress.fits.journal", ".M67_V.fits.inprogress.fits.partial"]
    stop["after"] = 0
    with caplog.at_level(logging.INFO, logger="skystack"):
        run_night(tmp_path / "raw", tmp_path / "b", backend="cpu", previews=False,
                  cluster=client)
    assert "3 already written" in caplog.text
    assert sorted(p.name for p in (tmp_path / "b" / "stacks").iterdir()) == ["M67_V.fits"]
    assert_same_product(tmp_path / "a" / "stacks" / "M67_V.fits",
                        tmp_path / "b" / "stacks" / "M67_V.fits")


def test_in_memory_inputs_are_refused(client, tmp_path):
    with pytest.raises(SkystackError, match="in-memory input cannot run on a cluster"):
        skystack.combine_to_file([np.zeros((8, 8))] * 3, tmp_path / "x.fits", cluster=client)


def test_without_dask_one_line_error(frames, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(SkystackError, match=r"pip install 'skystack\[cluster\]'"):
        skystack.combine_to_file(frames, tmp_path / "x.fits", cluster=2)
    code = main(["combine", *frames, "-o", str(tmp_path / "y.fits"), "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "skystack[cluster]" in err
    assert not os.listdir(tmp_path)


HOLD_LOCK = """
import sys, time
from skystack.io.lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_run_on_an_output_another_run_is_writing_is_refused(client, frames, tmp_path):
    """Another process writes the output (holds its lock): the cluster run refuses at once and
    leaves that run's partial file alone, instead of writing its tiles into it."""
    import subprocess

    out = tmp_path / "x.fits"
    partial = tmp_path / "x.fits.partial"
    partial.write_bytes(b"another run's tiles")
    src = os.path.dirname(os.path.dirname(skystack.__file__))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], text=True,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": src})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SkystackError, match="another skystack run is writing this output"):
            skystack.combine_to_file(frames, out, backend="cpu", max_tile_rows=ROWS,
                                     cluster=client, overwrite=True, **COMBINE)
    finally:
        holder.kill()
        holder.wait()
    assert partial.read_bytes() == b"another run's tiles" and not out.exists()


def test_in_process_run_removes_an_interrupted_cluster_runs_partial(client, frames,
                                                                     reference, tmp_path):
    out = tmp_path / "r.fits"
    with pytest.raises(Stop):
        skystack.combine_to_file(frames, out, backend="cpu", max_tile_rows=ROWS,
                                 cluster=client, progress=_stop_after(5), **COMBINE)
    assert (tmp_path / "r.fits.partial").exists() and (tmp_path / "r.fits.journal").exists()
    skystack.combine_to_file(frames, out, backend="cpu", max_tile_rows=ROWS, **COMBINE)
    assert sorted(os.listdir(tmp_path)) == ["r.fits"]
    assert np.array_equal(fits.getdata(reference["sigclip"]), fits.getdata(out), equal_nan=True)


def test_restart_after_an_input_changed_in_place_starts_afresh(client, frames, tmp_path,
                                                               caplog):
    """An input rewritten between the interruption and the restart, its size and modification
    time set back: the journaled tiles are of the old pixels, so none is reused."""
    import shutil

    copies = []
    for p in frames:
        copies.append(str(tmp_path / os.path.basename(p)))
        shutil.copy2(p, copies[-1])
    out = tmp_path / "c.fits"
    with pytest.raises(Stop):
        skystack.combine_to_file(copies, out, backend="cpu", max_tile_rows=ROWS,
                                 cluster=client, progress=_stop_after(5), method="median")
    st = os.stat(copies[3])
    with fits.open(copies[3], mode="update") as hdul:
        hdul[0].data[:, :] = hdul[0].data + 3000
    os.utime(copies[3], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.path.getsize(copies[3]) == st.st_size
    with caplog.at_level(logging.INFO, logger="skystack"):
        skystack.combine_to_file(copies, out, backend="cpu", max_tile_rows=ROWS,
                                 cluster=client, method="median")
    assert "starting afresh" in caplog.text and "0 already written" in caplog.text
    data = np.stack([fits.getdata(p).astype(np.float64) for p in copies])
    np.testing.assert_allclose(fits.getdata(out), np.median(data, axis=0), rtol=1e-6)


def test_model_uncertainty_on_cluster_is_identical(client, frames, lights, tmp_path):
    """The noise-model UNCERT (skystack.uncertainty) is computed per tile on the workers as
    in-process: combine and stack products identical, UNCMETH = model."""
    import shutil

    def with_noise(paths, folder):
        folder.mkdir()
        out = []
        for p in paths:
            q = folder / os.path.basename(p)
            shutil.copy(p, q)
            fits.setval(q, "GAIN", value=1.7)
            fits.setval(q, "RDNOISE", value=5.0)
            out.append(str(q))
        return out

    raw = with_noise(frames, tmp_path / "raw")
    opts = dict(backend="cpu", max_tile_rows=ROWS, uncertainty="model", **COMBINE)
    skystack.combine_to_file(raw, tmp_path / "a.fits", **opts)
    skystack.combine_to_file(raw, tmp_path / "b.fits", cluster=client, **opts)
    assert_same_product(tmp_path / "a.fits", tmp_path / "b.fits")
    assert fits.getheader(tmp_path / "b.fits")["UNCMETH"] == "model"
    cal = with_noise(lights, tmp_path / "lights")
    opts = dict(method="mean", reject="sigclip", sigma=3.0, backend="cpu", max_tile_rows=7)
    stack_to_file(cal, tmp_path / "c.fits", **opts)
    stack_to_file(cal, tmp_path / "d.fits", cluster=client, **opts)
    assert_same_product(tmp_path / "c.fits", tmp_path / "d.fits")
    assert fits.getheader(tmp_path / "d.fits")["UNCMETH"] == "model"  # auto: float, GAIN


def test_propagate_on_cluster_is_refused(client, tmp_path):
    from astropy.nddata import CCDData, StdDevUncertainty

    paths = []
    for k in range(2):
        p = tmp_path / f"u{k}.fits"
        CCDData(np.ones((8, 8)), unit="adu",
                uncertainty=StdDevUncertainty(np.ones((8, 8)))).write(p)
        paths.append(str(p))
    with pytest.raises(SkystackError, match="propagate does not run on a cluster"):
        skystack.combine_to_file(paths, tmp_path / "x.fits", cluster=client,
                                 uncertainty="propagate")


def test_masks_of_tile_compressed_inputs_are_honoured_on_cluster(client, tmp_path):
    """A tile-compressed frame with a (compressed) MASK extension: the workers reopen the MASK
    with the frame, so a huge value under it is ignored as in-process (it once was dropped by
    the compressed source's spec) and the products are identical."""
    rng = np.random.default_rng(11)
    paths = []
    for k in range(3):
        data = rng.normal(100.0, 1.0, (64, 48)).astype(np.float32)
        mask = np.zeros(data.shape, np.uint8)
        mask[10 + k, 5:9] = 1
        data[mask == 1] = 1e6
        p = tmp_path / f"m{k}.fits"
        fits.HDUList([fits.PrimaryHDU(),
                      fits.CompImageHDU(data, compression_type="GZIP_1"),
                      fits.CompImageHDU(mask, name="MASK", compression_type="GZIP_1")]
                     ).writeto(p)
        paths.append(str(p))
    opts = dict(backend="cpu", max_tile_rows=16, method="mean")
    skystack.combine_to_file(paths, tmp_path / "a.fits", **opts)
    skystack.combine_to_file(paths, tmp_path / "b.fits", cluster=client, **opts)
    assert_same_product(tmp_path / "a.fits", tmp_path / "b.fits")
    assert np.nanmax(fits.getdata(tmp_path / "b.fits")) < 200
