"""register_frames / select_frames, stacks aligned by stars, and the command line."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import skystack
from skystack.cli import main
from skystack.demo_data import _reference_wcs
from skystack.errors import SkystackError
from skystack.io.inputs import load_frames
from skystack.register import (
    FrameMeasurement,
    StarList,
    format_register_table,
    register_frames,
    select_frames,
)
from tests.test_register_synth import TrueMap, catalogue, grid_error, render_frame

SHAPE = (256, 288)
# Dithers and rotations of the frames relative to frame 0 (the reference grid).
MAPS = [dict(), dict(dx=7.3, dy=-4.6, theta_deg=1.2), dict(dx=-11.8, dy=9.1, theta_deg=-2.4),
        dict(dx=3.7, dy=12.2, theta_deg=2.9)]


def _true_wcs(truth: TrueMap):
    """The frame's true WCS, built independently of skystack: the reference WCS seen through
    ``p_f = c + R(θ) (p_r - c) + d`` (CRPIX of the reference is the frame centre c)."""
    w = _reference_wcs(truth.shape)
    t = math.radians(truth.theta_deg)
    rot_inv = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    cd = np.diag(w.wcs.cdelt) @ rot_inv
    out = w.deepcopy()
    out.wcs.crpix = [w.wcs.crpix[0] + truth.dx, w.wcs.crpix[1] + truth.dy]
    out.wcs.cdelt = [1.0, 1.0]
    out.wcs.pc = cd
    out.wcs.set()
    return out


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """Four frames of one field with known maps, written with and without their true WCS, plus
    a blurred frame and a frame without stars."""
    d = tmp_path_factory.mktemp("register")
    rng = np.random.default_rng(2026)
    cat = catalogue(220, SHAPE, rng, margin=40)
    out = {"truth": [], "wcs": [], "plain": []}
    for k, kw in enumerate(MAPS):
        truth = TrueMap(SHAPE, **kw)
        img = render_frame(truth, cat, rng, fwhm=2.6 if k == 2 else 3.2, hot_pixels=40,
                           cosmic_rays=3)
        hdr = _true_wcs(truth).to_header()
        hdr["EXPTIME"] = 60.0
        fits.PrimaryHDU(img, header=hdr).writeto(d / f"wcs_{k}.fits")
        fits.PrimaryHDU(img, header=fits.Header({"EXPTIME": 60.0})).writeto(d / f"f_{k}.fits")
        out["truth"].append(truth)
        out["wcs"].append(str(d / f"wcs_{k}.fits"))
        out["plain"].append(str(d / f"f_{k}.fits"))
    blurred = render_frame(TrueMap(SHAPE, dx=2.0), cat, rng, fwhm=6.5)
    fits.PrimaryHDU(blurred).writeto(d / "blurred.fits")
    fits.PrimaryHDU(rng.normal(200, 15, SHAPE).astype(np.float32)).writeto(d / "clouds.fits")
    out["blurred"] = str(d / "blurred.fits")
    out["clouds"] = str(d / "clouds.fits")
    out["dir"] = d
    return out


def test_register_frames_recovers_the_maps_and_picks_the_sharpest_reference(night):
    frames = load_frames(night["plain"] + [night["clouds"]])
    result = register_frames(frames)
    assert result.reference_index == 2  # the sharpest frame (FWHM 2.6 px)
    assert "sharpest" in result.reference_reason
    assert result.reference_wcs_source.startswith("synthetic TAN, 1\"/px")
    ref_truth = night["truth"][2]
    for k, truth in enumerate(night["truth"]):
        reg = result.registrations[k]
        assert reg.ok, reg.reason
        # frame k → reference = G_ref ∘ G_k⁻¹ (both maps from the common catalogue grid)
        def composed(x, y, truth=truth):
            return ref_truth.forward(*truth.inverse(x, y))
        xf, yf = np.meshgrid(np.arange(0, SHAPE[1], 16.0), np.arange(0, SHAPE[0], 16.0))
        got = np.hypot(*(np.subtract(a, b) for a, b in zip(reg.transform(xf, yf),
                                                            composed(xf, yf))))
        assert got.mean() < 0.1 and got.max() < 0.3
    clouds = result.registrations[4]
    assert not clouds.ok and clouds.reason == "0 stars detected (need >= 4)"
    assert result.wcs[4] is None and result.measurements[4].n_stars == 0
    text = format_register_table(result)
    assert "clouds.fits" in text and "failed: 0 stars detected" in text


def test_register_frames_with_a_given_reference_and_model(night):
    frames = load_frames(night["plain"])
    result = register_frames(frames, reference=load_frames([night["plain"][0]])[0],
                             model="affine")
    assert result.reference_index == 0 and result.reference_reason == "given"
    assert result.registrations[0].reason == "reference"
    for reg, truth in zip(result.registrations[1:], night["truth"][1:]):
        assert reg.ok and reg.model == "affine"
        err = grid_error(reg.transform, truth)
        assert err.mean() < 0.1 and err.max() < 0.3


def _meas(label, n, fwhm, ell):
    stars = StarList.empty(SHAPE)
    z = np.zeros(n)
    stars = StarList(z, z, z, z, z, z, z, np.zeros(n, np.uint8), SHAPE, 100.0, 5.0, fwhm, ell, n)
    return FrameMeasurement(label, stars)


def test_select_frames_flags_and_reasons():
    ms = [_meas("a", 50, 3.0, 0.05), _meas("b", 40, 5.5, 0.05), _meas("c", 8, 3.2, 0.05),
          _meas("d", 60, 3.4, 0.35), _meas("e", 55, 2.8, 0.10), _meas("f", 0, math.nan,
                                                                     math.nan)]
    sel = select_frames(ms, max_fwhm=5, max_ellipticity=0.3, min_stars=10)
    assert [s.keep for s in sel] == [True, False, False, False, True, False]
    assert sel[1].reason == "FWHM 5.50 px > 5"
    assert sel[2].reason == "8 stars < 10"
    assert sel[3].reason == "ellipticity 0.35 > 0.3"
    assert sel[5].reason == "0 stars < 10"
    assert select_frames(ms, max_fwhm=5)[5].reason == "no FWHM measured"
    best = select_frames(ms, best_fraction=0.5)
    # 5 frames with a FWHM + one without, ceil(0.5 * 6) = 3 sharpest kept
    assert [s.label for s in best if s.keep] == ["a", "c", "e"]
    assert "not in the best 50%" in best[1].reason
    assert all(s.keep for s in select_frames(ms))
    with pytest.raises(SkystackError, match="best-fraction"):
        select_frames(ms, best_fraction=1.5)


def test_stack_aligned_by_stars_matches_stack_aligned_by_true_wcs(night):
    by_wcs = skystack.stack(night["wcs"], reference=night["wcs"][0], align="wcs")
    by_stars = skystack.stack(night["plain"], reference=night["plain"][0], align="stars")
    assert by_stars.data.shape == by_wcs.data.shape == SHAPE
    assert by_stars.meta["ALIGN"] == "stars" and by_stars.registration.reference_index == 0
    both = (by_wcs.coverage == 4) & (by_stars.coverage == 4)
    assert both.mean() > 0.7
    # Differences in units of each pixel's noise (the standard error of the stack, which
    # includes the stars' photon noise): a registration error of ~0.01 px shows only on the
    # steep sides of bright stars, well within the noise.
    ratio = np.abs(by_stars.data - by_wcs.data)[both] / by_wcs.uncertainty.array[both]
    assert np.median(ratio) < 0.03 and np.percentile(ratio, 99.9) < 0.5
    assert ratio.max() < 4
    # auto: frames without WCS are aligned by stars
    auto = skystack.stack(night["plain"], reference=night["plain"][0], align="auto")
    assert auto.meta["ALIGN"] == "stars"
    np.testing.assert_array_equal(auto.data, by_stars.data)


def test_stack_skips_unregistered_and_unselected_frames(night, caplog):
    inputs = night["plain"] + [night["blurred"], night["clouds"]]
    ccd = skystack.stack(inputs, align="stars", max_fwhm=5.0)
    assert ccd.meta["NSKIPPED"] == 2
    history = "\n".join(ccd.meta["HISTORY"])
    assert "skipped clouds.fits: not registered: 0 stars detected" in history
    assert "skipped blurred.fits: FWHM" in history
    assert "blurred.fits: skipped (FWHM" in caplog.text
    assert [s.keep for s in ccd.selection] == [True] * 4 + [False, False]
    # Selection works with WCS alignment too (the stars are measured, not matched).
    ccd = skystack.stack(night["wcs"], align="wcs", best_fraction=0.25)
    assert ccd.meta["NSKIPPED"] == 3 and ccd.registration is None
    with pytest.raises(SkystackError, match="no frame left to stack: clouds.fits: not "
                                            "registered"):
        skystack.stack([night["clouds"], night["clouds"]], align="stars")


def test_cli_register_writes_a_table(night, tmp_path, capsys):
    out = tmp_path / "t.ecsv"
    code = main(["register", *night["plain"], night["clouds"], "--reference",
                 night["plain"][0], "-o", str(out)])
    assert code == 1  # one frame could not be registered
    printed = capsys.readouterr().out
    assert "reference: f_0.fits (given)" in printed and "wrote" in printed
    table = Table.read(out)
    assert table.meta["reference"] == "f_0.fits"
    assert list(table["status"]) == ["reference", "ok", "ok", "ok", "failed"]
    for row, truth in zip(table[1:4], night["truth"][1:]):
        # Shift of the frame centre: T(c) - c, with T = G⁻¹ for a rotation about c.
        cx, cy = truth.centre
        tx, ty = truth.inverse(cx, cy)
        assert abs(row["dx"] - (tx - cx)) < 0.05 and abs(row["dy"] - (ty - cy)) < 0.05
        assert abs(row["rotation_deg"] + truth.theta_deg) < 0.02
    assert table["reason"][4] == "0 stars detected (need >= 4)"
    csv = tmp_path / "t.csv"
    assert main(["register", *night["plain"], "-o", str(csv), "-q", "--model", "shift"]) == 0
    assert len(Table.read(csv, format="ascii.csv")) == 4


def test_cli_stack_align_stars(night, tmp_path, caplog):
    out = tmp_path / "s.fits"
    code = main(["stack", *night["plain"], night["clouds"], "-o", str(out), "--align", "stars",
                 "--max-fwhm", "5", "-q"])
    assert code == 0
    header = fits.getheader(out)
    assert header["ALIGN"] == "stars" and header["NSKIPPED"] == 1
    assert "clouds.fits: skipped (not registered" in caplog.text


@pytest.mark.parametrize("args, message", [
    (["register", "{txt}"], "not a FITS file"),
    (["register", "{f0}", "--best-fraction", "1.5"], "invalid --best-fraction 1.5"),
    (["register", "{f0}", "-o", "{dir}/t.txt"], "table must end in .csv or .ecsv"),
    (["stack", "{clouds}", "{clouds}", "-o", "{dir}/o.fits", "--align", "stars"],
     "no frame left to stack"),
    (["stack", "{f0}", "-o", "{dir}/o.fits", "--align", "wcs"], "WCS is not celestial"),
])
def test_cli_bad_input_is_a_one_line_error(night, tmp_path, capsys, args, message):
    txt = tmp_path / "notes.txt"
    txt.write_text("not FITS")
    names = dict(txt=str(txt), f0=night["plain"][0], clouds=night["clouds"], dir=str(tmp_path))
    assert main([a.format(**names) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_one_alignment_decision_for_stack_and_night_subsets(night):
    """align_frames decides once for a set of frames (as the night does for an object's
    lights of every filter); choose_frames then chooses within any subset (one filter)."""
    from skystack.register.plan import (
        NO_WCS,
        NOT_REGISTERED,
        NOT_SELECTED,
        align_frames,
        alignment_cards,
        choose_frames,
    )

    frames = load_frames(night["plain"] + [night["clouds"]])
    alignment = align_frames(frames, "auto")
    assert alignment.mode == "stars" and "f_0.fits" in alignment.why
    assert alignment.wcs[4] is None and all(w is not None for w in alignment.wcs[:4])
    # Frame 2 is the sharpest (FWHM 2.6 px against 3.2): the best half of {1, 2} keeps it.
    choice = choose_frames(alignment, [1, 2, 4], selection={"best_fraction": 0.5,
                                                            "max_fwhm": None})
    assert choice.kept == [2]
    assert [(s.index, s.stage) for s in choice.skipped] == [(1, NOT_SELECTED),
                                                            (4, NOT_REGISTERED)]
    assert choice.skipped[1].reason.startswith("not registered: 0 stars detected")
    assert sorted(choice.measurements) == [1, 2, 4]
    cards = alignment_cards(alignment)
    assert (cards["ALIGN"], cards["REGREF"], cards["REGMODEL"]) == (
        "stars", "f_2.fits", "similarity")
    assert list(alignment_cards(alignment, on_gridref=True)) == ["ALIGN", "REGMODEL"]

    mixed = load_frames(night["wcs"][:2] + [night["plain"][0]])
    by_wcs = align_frames(mixed, "wcs")
    assert by_wcs.mode == "wcs" and by_wcs.result is None
    choice = choose_frames(by_wcs)
    assert choice.kept == [0, 1] and choice.selection is None and not choice.measurements
    assert [(s.index, s.stage) for s in choice.skipped] == [(2, NO_WCS)]
    assert "f_0.fits" in choice.skipped[0].reason
    assert align_frames(mixed[:2], "auto").mode == "wcs"
    assert dict(alignment_cards(by_wcs, on_gridref=True)) == {"ALIGN": "wcs"}


def test_cli_register_selects_by_exclude_list_and_header(night, tmp_path, capsys):
    # --exclude drops the frame without stars (which alone made the exit code 1); --where
    # on a header value every frame has keeps them all, one nobody has keeps nothing.
    excl = tmp_path / "bad.txt"
    excl.write_text("clouds.fits  # no stars\n")
    out = tmp_path / "t.csv"
    code = main(["register", *night["plain"], night["clouds"], "--exclude", str(excl),
                 "--where", "NAXIS1 > 0", "-o", str(out), "-q"])
    assert code == 0
    assert len(Table.read(out, format="ascii.csv")) == 4
    assert main(["register", *night["plain"], "--where", "NAXIS1 < 0", "-q"]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
