"""Co-adds on sky tiles (skystack.coadd_tiles, ``skystack stack --tiles``), checked against
reproject.reproject_interp of the frames onto each tile + numpy's mean, and against the known
flux of a star seen in two tiles."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skystack.cli import main
from skystack.coadd_tiles import stack_files_on_tiles
from skystack.errors import SkystackError
from skystack.regrid.skytiles import SkyTiling

reproject = pytest.importorskip("reproject")

SIZE, SCALE, MARGIN = 0.05, 1.0, 16  # 180 px cores + 16 px on each side
SKY, NOISE, STAR_FLUX, STAR_SIGMA = 100.0, 5.0, 20000.0, 1.3
# The star sits 1.8" west of RA 0: in tile 0's margin and in the last tile's core.
STAR = (360.0 - 1.8 / 3600, 0.003)


def _wcs(ra, dec, rot_deg, shape):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    s = SCALE / 3600
    c, si = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    w.wcs.cd = [[-s * c, s * si], [s * si, s * c]]
    w.wcs.set()
    return w


def _image(wcs, shape, rng, star=True):
    data = SKY + rng.normal(0, NOISE, shape)
    if star:
        x0, y0 = wcs.all_world2pix([[STAR[0], STAR[1]]], 0)[0]
        y, x = np.mgrid[: shape[0], : shape[1]]
        data += STAR_FLUX / (2 * np.pi * STAR_SIGMA**2) * np.exp(
            -((x - x0) ** 2 + (y - y0) ** 2) / (2 * STAR_SIGMA**2))
    return data.astype(np.float32)


@pytest.fixture
def survey(tmp_path):
    """Four r frames dithered around (0, 0) (straddling the RA wrap), one MEF exposure in g with
    one CCD there and one 0.125 deg east (inside one tile), all 120 x 120 at 1"/px."""
    rng = np.random.default_rng(7)
    shape = (120, 120)
    paths = []
    for k, (dra, ddec, rot) in enumerate([(0, 0, 0), (4, -3, 0.5), (-5, 2, -0.7), (2, 6, 0.2)]):
        w = _wcs((dra / 3600) % 360, ddec / 3600, rot, shape)
        header = w.to_header()
        header["FILTER"], header["EXPTIME"] = "r", 60.0
        p = tmp_path / f"r{k}.fits"
        fits.PrimaryHDU(_image(w, shape, rng), header).writeto(p)
        paths.append(str(p))
    primary = fits.PrimaryHDU()
    primary.header["FILTER"], primary.header["EXPTIME"] = "g", 30.0
    hdus = [primary]
    for name, ra in (("CCD1", 0.0), ("CCD2", 0.125)):
        w = _wcs(ra, 0.0, 0.0, shape)
        hdus.append(fits.ImageHDU(_image(w, shape, rng, star=ra == 0.0), w.to_header(),
                                  name=name))
    p = tmp_path / "g_mef.fits"
    fits.HDUList(hdus).writeto(p)
    paths.append(str(p))
    return paths


def _reference(paths_hdus, tile):
    """reproject_interp of each frame onto the tile, NaN outside, numpy mean of the finite."""
    stack = []
    for path, hdu in paths_hdus:
        with fits.open(path) as hdul:
            data, header = hdul[hdu].data.astype(np.float64), hdul[hdu].header
            values, _ = reproject.reproject_interp((data, WCS(header)), tile.wcs,
                                                   shape_out=tile.shape, order="bilinear")
        stack.append(values)
    stack = np.array(stack)
    with np.errstate(all="ignore"):
        return np.nanmean(stack, axis=0), np.isfinite(stack).sum(axis=0)


def _aperture_flux(data, wcs, radius=6.0):
    x0, y0 = wcs.all_world2pix([[STAR[0], STAR[1]]], 0)[0]
    y, x = np.mgrid[: data.shape[0], : data.shape[1]]
    r = np.hypot(x - x0, y - y0)
    annulus = data[(r > 8) & (r < 12)]
    assert np.all(np.isfinite(annulus))
    inner = data[r <= radius]
    assert np.all(np.isfinite(inner))
    return float(np.sum(inner - np.median(annulus)))


def test_frames_on_two_tiles_match_reproject_and_agree_in_the_overlap(survey, tmp_path):
    out = tmp_path / "tiles"
    products = stack_files_on_tiles(survey, out, size_deg=SIZE, scale_arcsec=SCALE,
                                    margin=MARGIN, method="mean", reject="none", backend="cpu")
    tiling = SkyTiling(SIZE, SCALE, MARGIN)
    ring = tiling.ring_of(0.0)
    n = tiling.tiles_in_ring(ring)
    west, east, far = tiling.tile(ring, n - 1), tiling.tile(ring, 0), tiling.tile(ring, 2)
    names = sorted(p.path.rsplit("/", 1)[1] for p in products)
    assert names == sorted([f"{west.name}_r.fits", f"{east.name}_r.fits", f"{west.name}_g.fits",
                            f"{east.name}_g.fits", f"{far.name}_g.fits"])
    r_frames = [(p, 0) for p in survey[:4]]

    # Each r tile against the independent reference: same values, same coverage.
    for tile in (west, east):
        with fits.open(out / f"{tile.name}_r.fits") as hdul:
            image, count = hdul[0].data, hdul["COUNT"].data
            header = hdul[0].header
            expmap = hdul["EXPMAP"].data
        ref, ref_count = _reference(r_frames, tile)
        assert header["TILENAME"] == tile.name and header["FILTER"] == "r"
        assert header["NCOMBINE"] == 4
        np.testing.assert_array_equal(count, ref_count)
        np.testing.assert_array_equal(np.isfinite(image), ref_count > 0)
        good = ref_count > 0
        np.testing.assert_allclose(image[good], ref[good], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(expmap, 60.0 * ref_count)
        assert WCS(header).wcs.crval == pytest.approx([tile.ra, tile.dec])

    # No seam: the east tile resampled onto the west tile agrees with it in their overlap.
    with fits.open(out / f"{west.name}_r.fits") as a, fits.open(out / f"{east.name}_r.fits") as b:
        wa, wb = WCS(a[0].header), WCS(b[0].header)
        da, db = a[0].data.astype(np.float64), b[0].data.astype(np.float64)
        east_on_west, _ = reproject.reproject_interp((db, wb), wa, shape_out=da.shape,
                                                     order="bilinear")
        both = np.isfinite(da) & np.isfinite(east_on_west)
        assert both.sum() > 20 * 100  # a strip of 2 x 16 px, over ~100 rows
        diff = (east_on_west - da)[both]
        assert abs(np.median(diff)) < 0.05 * NOISE and np.std(diff) < 0.5 * NOISE
        # The star, in the margin of one and the core of the other, keeps its flux.
        flux_w, flux_e = _aperture_flux(da, wa), _aperture_flux(db, wb)
    assert flux_e == pytest.approx(flux_w, rel=0.005)
    assert flux_w == pytest.approx(STAR_FLUX, rel=0.02)

    # tiles.json: each frame's tiles are exactly the products whose IMCMB list it.
    doc = json.loads((out / "tiles.json").read_text())
    assert doc["tiling"]["tile_size_deg"] == pytest.approx(SIZE)
    assert doc["frames"]["g_mef.fits[CCD1]"] == sorted([west.name, east.name])
    assert doc["frames"]["g_mef.fits[CCD2]"] == [far.name]
    for k in range(4):
        assert doc["frames"][f"r{k}.fits"] == sorted([west.name, east.name])
    for name, entry in doc["tiles"].items():
        for filt, product in entry["products"].items():
            header = fits.getheader(out / product["file"])
            listed = [header[f"IMCMB{i:03d}"] for i in range(1, header["NCOMBINE"] + 1)]
            assert listed == product["frames"] and header["FILTER"] == filt
            for label in listed:
                assert name in doc["frames"][label]
    assert set(doc["tiles"]) == {west.name, east.name, far.name}  # untouched tiles: nothing


def test_user_tiles_from_headers_and_untouched_tile_not_written(survey, tmp_path):
    tiling = SkyTiling(SIZE, SCALE, MARGIN)
    near = tiling.tile_at(0.0, 0.0)
    away = tiling.tile_at(40.0, 10.0)
    files = []
    for tile, name in ((near, "mine"), (away, "nobody")):
        header = tile.wcs.to_header()
        header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, tile.shape[1], tile.shape[0]
        header["TILENAME"] = name
        path = tmp_path / f"{name}.hdr"
        header.totextfile(path)
        files.append(str(path))
    out = tmp_path / "user"
    products = stack_files_on_tiles(survey[:4], out, tile_headers=files, backend="cpu",
                                    method="median")
    assert [p.path.rsplit("/", 1)[1] for p in products] == ["mine_r.fits"]
    assert not (out / "nobody_r.fits").exists()
    assert json.loads((out / "tiles.json").read_text())["tiling"] == "user"


def test_cli_stack_tiles(survey, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["stack", *survey[:4], "--tiles", str(SIZE), "--pixel-scale", "1",
                 "--tile-margin", "16", "-o", str(out), "-q", "--backend", "cpu"]) == 0
    assert len(list(out.glob("*_r.fits"))) == 2
    # Existing products are refused before any work, naming the file.
    assert main(["stack", *survey[:4], "--tiles", str(SIZE), "--pixel-scale", "1",
                 "--tile-margin", "16", "-o", str(out), "-q"]) == 2
    assert "output exists" in capsys.readouterr().err
    for bad in (["--tiles", "0.05"], ["--tiles", "0.05", "--pixel-scale", "1", "--crop",
                                      "intersection"],
                ["--tiles", "0", "--pixel-scale", "1"]):
        assert main(["stack", *survey[:4], *bad, "-o", str(tmp_path / "x"), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("skystack: error:") and err.count("\n") == 1


def test_api_refuses_a_grid_option(survey, tmp_path):
    from skystack.coadd_tiles import load_tile_frames, stack_on_tiles

    frames = load_tile_frames(survey[:1])
    with pytest.raises(SkystackError, match="grid"):
        stack_on_tiles(frames, None, SkyTiling(SIZE, SCALE), tmp_path, grid_header="x")
