"""``skystack night --tiles``: the lights of a night co-added on sky tiles instead of one grid
per object, checked against the generated night's truth."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skystack.cli import main
from skystack.demo_data import truth_image, write_sample_night
from skystack.night.run import run_night
from skystack.regrid.skytiles import SkyTiling

N_LIGHT = 4


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiles")
    sample = write_sample_night(root / "raw", shape=(160, 176), n_bias=3, n_dark=2,
                                dark_exptime=60.0, n_flat=3, filters=("V", "R"),
                                n_light=N_LIGHT, light_exptime=60.0, dither_px=5.0,
                                rotation_deg=1.0, seed=8)
    # Tiles of 0.05 deg at the night's 1 arcsec/px: the field (~3 arcmin) straddles tiles.
    tiling = SkyTiling(0.05, 1.0)
    result = run_night(root / "raw", root / "out", backend="cpu", previews=True, tiles=tiling,
                       uncertainty="scatter")
    return sample, root, result


def test_tile_products_and_their_bookkeeping(night):
    sample, root, result = night
    stacks = [p for p in result.products if p.kind == "stack"]
    assert stacks and all(p.status == "built" and "tile" in p.key for p in stacks)
    names = {os.path.basename(p.path) for p in stacks}
    assert all(n.endswith(("_V.fits", "_R.fits")) for n in names)
    assert not (root / "out" / "stacks" / "M67_V.fits").exists()  # no per-object stack
    tiles = json.loads((root / "out" / "stacks" / "tiles.json").read_text())
    summary = json.loads((root / "out" / "summary.json").read_text())
    lights = [f for f in summary["frames"] if f["role"] == "light"]
    assert len(lights) == 2 * N_LIGHT and all(f["used"] for f in lights)
    for f in lights:  # each light names the tiles it went into, as tiles.json and IMCMB do
        mine = sorted(f["group"].split(", "))
        assert mine == tiles["frames"][os.path.basename(f["file"])]
    for p in stacks:
        header = fits.getheader(p.path)
        labels = {header[f"IMCMB{i:03d}"] for i in range(1, header["NCOMBINE"] + 1)}
        assert labels == {os.path.basename(x) for x in p.inputs}
        assert (root / "out" / "previews" / (os.path.basename(p.path)[:-5] + ".png")).exists()


def test_tile_coadds_agree_with_the_truth(night):
    sample, root, result = night
    checked = 0
    for p in result.products:
        if p.kind != "stack" or p.key["filter"] != "V":
            continue
        with fits.open(p.path) as hdul:
            image = hdul[0].data.astype(np.float64)
            count = hdul["COUNT"].data
            wcs = WCS(hdul[0].header)
        good = count == N_LIGHT
        if good.sum() < 2000:
            continue
        truth = truth_image(sample, "M67", "V", wcs, image.shape)
        ratio = image[good] / truth[good]
        assert np.median(ratio) == pytest.approx(1.0, abs=0.003)
        checked += 1
    assert checked >= 1


def test_night_tiles_options_are_checked(night, tmp_path, capsys):
    _, root, _ = night
    for args, words in ((["--tiles", "0.1"], "--tiles needs --pixel-scale"),
                        (["--pixel-scale", "1"], "need --tiles")):
        code = main(["night", str(root / "raw"), "-o", str(tmp_path / "o"), *args])
        err = capsys.readouterr().err
        assert code == 2 and words in err and err.count("\n") == 1, err
        assert not (tmp_path / "o").exists()


def test_survey_demo_on_tiles_is_on_one_photometric_scale(tmp_path):
    """``skystack demo --survey``: the generated 6-CCD survey night (MEF, .fz, 3 x 3 pointings
    in g and r) reduced CCD by CCD in electrons and co-added on sky tiles. Every light CCD image
    is used; every well-covered tile's sky is the true sky in electrons (x the mosaic's median
    QE) within 5 %, and the tiles agree with each other within 3 % (gains of 1.2-2.6 e-/ADU and
    QEs of 0.93-1.07 left uncorrected would differ far more)."""
    from skystack.demo import run_survey_demo
    from skystack.survey_data import write_survey_night

    paths = run_survey_demo(tmp_path, backend="cpu", quiet=True)
    stacks = [p for p in paths if p.parent.name == "stacks"]
    assert stacks and (tmp_path / "stacks" / "tiles.json").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    lights = [f for f in summary["frames"] if f["role"] == "light"]
    assert len(lights) == 18 * 6 and all(f["used"] for f in lights)
    truth = write_survey_night(tmp_path / "truth").truth  # same seed: the same night
    qe = float(np.median([c.qe for c in truth.ccds]))
    for filt in ("g", "r"):
        ratios = []
        for path in stacks:
            if not path.name.endswith(f"_{filt}.fits"):
                continue
            with fits.open(path) as hdul:
                assert hdul[0].header["BUNIT"] == "electron"
                image, count = hdul[0].data.astype(float), hdul["COUNT"].data
            good = count >= 2
            if good.sum() >= 5000:
                ratios.append(np.median(image[good]) / (truth.sky[filt] * 60.0 * qe))
        assert len(ratios) >= 3, filt
        assert np.all(np.abs(np.array(ratios) - 1) < 0.05), (filt, ratios)
        assert max(ratios) / min(ratios) < 1.03, (filt, ratios)
