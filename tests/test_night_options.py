"""``skystack night`` options that change how the stacks are made: ``--debayer`` (colour
lights) and ``--interp drizzle`` (with --pixfrac / --drizzle-scale); both go into the stacks'
recipe, so that a stack made otherwise is refused, or rebuilt with --overwrite. And a colour
light's record in ``summary.json`` names its three plane stacks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from skystack.cli import main
from skystack.errors import SkystackError
from skystack.night.run import run_night
from skystack.osc_data import write_osc_night
from tests.tiny_night import SHAPE, SKY, write_lights


@pytest.fixture
def osc_raw(tmp_path):
    night = write_osc_night(tmp_path / "raw", shape=(64, 64), n_bias=2, n_dark=2, n_flat=2,
                            n_light=3, n_stars=3)
    return tmp_path / "raw", night


def _planes(out, obj):
    return [out / "stacks" / f"{obj}_{c}.fits" for c in "RGB"]


def test_debayer_method_is_in_the_colour_stacks_recipe(osc_raw, tmp_path):
    raw, night = osc_raw
    out = tmp_path / "out"
    run_night(raw, out, backend="cpu", previews=False)
    bilinear = [fits.getdata(p).astype(float) for p in _planes(out, night.object)]
    assert all(fits.getval(p, "DEBAYER") == "bilinear" for p in _planes(out, night.object))
    with pytest.raises(SkystackError) as err:  # another method: the stacks are stale
        run_night(raw, out, backend="cpu", previews=False, debayer="mhc")
    assert "\n" not in str(err.value) and f"{night.object}_" in str(err.value)

    result = run_night(raw, out, backend="cpu", previews=False, debayer="mhc", overwrite=True)
    status = {p.path.split("/")[-1]: p.status for p in result.products}
    assert all(status[p.name] == "built" for p in _planes(out, night.object))
    assert all(v == "reused" for k, v in status.items() if not k.startswith(night.object))
    mhc = [fits.getdata(p).astype(float) for p in _planes(out, night.object)]
    assert all(fits.getval(p, "DEBAYER") == "mhc" for p in _planes(out, night.object))
    # MHC is sharper than bilinear: the stacks differ where the stars are.
    assert all(np.nanmax(np.abs(a - b)) > 1 for a, b in zip(bilinear, mhc))
    # The same method again: everything reused.
    again = run_night(raw, out, backend="cpu", previews=False, debayer="mhc")
    assert all(p.status == "reused" for p in again.products)


def test_invalid_debayer_is_one_line(osc_raw, tmp_path):
    raw, _ = osc_raw
    with pytest.raises(SkystackError, match="invalid --debayer 'vng2'"):
        run_night(raw, tmp_path / "o", backend="cpu", previews=False, debayer="vng2")
    with pytest.raises(SystemExit) as exit_:  # argparse: one line naming the choices
        main(["night", str(raw), "-o", str(tmp_path / "o"), "--debayer", "nope", "-q"])
    assert exit_.value.code == 2


def test_summary_lists_a_colour_lights_three_plane_stacks(osc_raw, tmp_path):
    raw, night = osc_raw
    out = tmp_path / "out"
    for _ in range(2):  # built, then reused: both record the three planes
        run_night(raw, out, backend="cpu", previews=False)
        summary = json.loads((out / "summary.json").read_text())
        planes = [f"stacks/{night.object}_{c}.fits" for c in "RGB"]
        lights = [f for f in summary["frames"] if f["role"] == "light"]
        assert len(lights) == len(night.light)
        for f in lights:
            assert f["used"] and f["group"] == ", ".join(planes), f
        inputs = {p["path"]: p["inputs"] for p in summary["products"]}
        assert all(sorted(inputs[p]) == sorted(f["file"] for f in lights) for p in planes)


@pytest.fixture
def mono_raw(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_lights(raw, "l", "M1", "V", n=3)
    return raw


def _drizzle_weights(n: int, pixfrac: float) -> np.ndarray:
    """The drizzle package's weight map of ``n`` unit-weight frames of SHAPE drizzled onto a
    grid twice finer (square kernel)."""
    from drizzle.resample import Drizzle

    y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1]].astype(float)
    pixmap = np.dstack([2 * x + 0.5, 2 * y + 0.5])
    drz = Drizzle(kernel="square", out_shape=(2 * SHAPE[0], 2 * SHAPE[1]), disable_ctx=True)
    for _ in range(n):
        drz.add_image(np.ones(SHAPE, np.float32), 1.0, pixmap, pixfrac=pixfrac,
                      weight_map=np.ones(SHAPE, np.float32), pixel_scale_ratio=0.5)
    return drz.out_wht


def test_drizzled_night_weight_map_and_header(mono_raw, tmp_path):
    out = tmp_path / "out"
    lines = []
    run_night(mono_raw, out, backend="cpu", previews=False, interp="drizzle", pixfrac=0.5,
              drizzle_scale=0.5, log=lines.append)
    assert any("reject none" in line for line in lines)
    with fits.open(out / "stacks" / "M1_V.fits") as hdul:
        header = hdul[0].header
        assert header["INTERP"] == "drizzle" and header["DRZPFRAC"] == 0.5
        assert header["DRZSCALE"] == 0.5 and header["NCOMBINE"] == 3
        assert "reject none" in str(header["HISTORY"])
        image, expmap = hdul[0].data, hdul["EXPMAP"].data
    # Lights on one grid, output pixels half its side: EXPMAP is the drizzle package's weight
    # map of three unit-weight frames whose pixel centres land at x_out = 2 x_in + 0.5.
    assert image.shape == expmap.shape == (2 * SHAPE[0], 2 * SHAPE[1])
    inner = (slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(expmap[inner], _drizzle_weights(3, 0.5)[inner], rtol=1e-5)
    assert abs(np.nanmedian(image[inner]) / SKY - 1) < 0.01
    # Another pixfrac: the stack is stale; with --overwrite rebuilt.
    with pytest.raises(SkystackError, match="M1_V.fits"):
        run_night(mono_raw, out, backend="cpu", previews=False, interp="drizzle", pixfrac=1.0,
                  drizzle_scale=0.5)
    run_night(mono_raw, out, backend="cpu", previews=False, interp="drizzle",
              drizzle_scale=0.5, overwrite=True)
    assert fits.getval(out / "stacks" / "M1_V.fits", "DRZPFRAC") == 1.0
    np.testing.assert_allclose(fits.getdata(out / "stacks" / "M1_V.fits", "EXPMAP")[inner],
                               _drizzle_weights(3, 1.0)[inner], rtol=1e-5)


def test_night_drizzle_rejection_and_options_errors(mono_raw, tmp_path, capsys):
    out = str(tmp_path / "o")
    # A rejection the user chose cannot apply to drizzle: one line, exit 2, nothing written.
    assert main(["night", str(mono_raw), "-o", out, "--interp", "drizzle", "--reject",
                 "sigclip", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--reject sigclip cannot apply to --interp drizzle" in err and "\n" not in err
    assert main(["night", str(mono_raw), "-o", out, "--pixfrac", "0.5", "-q"]) == 2
    assert "--pixfrac applies to --interp drizzle only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # From the CLI, --interp drizzle alone stacks with reject none.
    assert main(["night", str(mono_raw), "-o", out, "--interp", "drizzle", "--reject", "none",
                 "--no-previews", "-q"]) == 0
    assert fits.getval(tmp_path / "o" / "stacks" / "M1_V.fits", "INTERP") == "drizzle"


def test_cli_debayer_choices_are_the_engines():
    from skystack.cli import DEBAYER_CHOICES
    from skystack.colour.debayer import DEBAYER_METHODS

    assert DEBAYER_CHOICES == DEBAYER_METHODS
