"""The night's feedback: the per-product progress line (terminal only) and the frame-quality
plots of its stacks."""

from __future__ import annotations

import io
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from skystack.night.quality_plot import quality_series, write_quality_plot
from skystack.night.run import run_night
from skystack.night.summary import FrameRecord
from skystack.progress import NightProgress
from tests.tiny_night import write_flat, write_lights


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _visible(text: str) -> list[str]:
    """The lines a terminal would show last, per carriage return (erase codes dropped)."""
    return [part for part in text.replace("\x1b[K", "").split("\r") if part]


def test_progress_line_format_and_eta_on_a_terminal():
    stream, clock = _Tty(), _Clock()
    p = NightProgress([("masters/bias.fits", 5), ("stacks/M67_V.fits", 10),
                       ("stacks/M67_R.fits", 5)], stream=stream, tick=None, clock=clock)
    p.start(0)
    assert _visible(stream.getvalue())[-1] == \
        "[1/3] masters/bias.fits  5 frames  0.0 s  (night 0.0 s, eta ?)"
    clock.now += 4.0
    p.finish()
    p.start(1)
    clock.now += 2.0
    p._draw()
    # 4 s for 5 frames done; 15 frames left (this product's included), 2 s of them run.
    assert _visible(stream.getvalue())[-1] == \
        "[2/3] stacks/M67_V.fits  10 frames  2.0 s  (night 6.0 s, eta 10.0 s)"
    logged = []
    p.above(logged.append, "flat built")
    assert logged == ["flat built"]
    p.close()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_progress_writes_nothing_when_not_a_terminal():
    stream = io.StringIO()
    p = NightProgress([("masters/bias.fits", 5)], stream=stream, tick=0.01)
    p.start(0)
    logged = []
    p.above(logged.append, "bias built")
    p.finish()
    p.close()
    assert stream.getvalue() == "" and logged == ["bias built"]


def _raw(name, date_obs, exptime):
    header = fits.Header({"EXPTIME": exptime})
    return SimpleNamespace(name=name, info=SimpleNamespace(date_obs=date_obs, header=header,
                                                           shape=(8, 8)))


def test_quality_series_are_the_records_values_and_plot_is_written(tmp_path):
    dates = ["2026-03-14T21:10:00", "2026-03-14T21:40:00", "2026-03-14T22:55:30", ""]
    frames = [_raw(f"l{k}.fits", d, 30.0 * (k + 1)) for k, d in enumerate(dates)]
    stars = [{"n_stars": 40, "fwhm_px": 2.5, "background": 1000.0},
             {"n_stars": 12, "fwhm_px": 4.75, "background": 1500.5},
             {"n_stars": 38, "fwhm_px": 2.25, "background": 990.0}, {}]
    records = {f.name: FrameRecord(f.name, "light", used=k != 1, stars=s)
               for k, (f, s) in enumerate(zip(frames, stars))}
    series = quality_series(frames, records, {"weights": "exptime"})
    mjd = Time(dates[:3], format="isot", scale="utc").mjd
    np.testing.assert_allclose(series.time[:3], (mjd - mjd[0]) * 24, rtol=1e-9)
    assert np.isnan(series.time[3])
    np.testing.assert_array_equal(series.fwhm[:3], [2.5, 4.75, 2.25])
    np.testing.assert_array_equal(series.n_stars[:3], [40, 12, 38])
    np.testing.assert_array_equal(series.background[:3], [1000.0, 1500.5, 990.0])
    assert np.isnan(series.fwhm[3])
    np.testing.assert_array_equal(series.rejected, [False, True, False, False])
    np.testing.assert_allclose(series.weight, [0.25, 0.0, 0.75, 1.0])  # EXPTIME / max, 0 out
    path = tmp_path / "q" / "M67_V_quality.png"
    assert write_quality_plot(series, str(path), "M67_V") is series
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unweighted_and_undated_frames(tmp_path):
    frames = [_raw(f"l{k}.fits", "", 30.0) for k in range(3)]
    records = {f.name: FrameRecord(f.name, "light", used=True) for f in frames}
    series = quality_series(frames, records, {})
    assert series.time_label.startswith("frame") and list(series.time) == [0, 1, 2]
    np.testing.assert_array_equal(series.weight, [1, 1, 1])
    assert np.isnan(series.fwhm).all()


@pytest.fixture(scope="module")
def tiny_night(tmp_path_factory):
    root = tmp_path_factory.mktemp("feedback")
    raw = root / "raw"
    raw.mkdir()
    write_flat(raw, "flat", "V")
    write_lights(raw, "light", "M1", "V")
    return raw, root


def test_night_writes_quality_plot_per_stack_and_no_progress_off_terminal(tiny_night, capfd):
    raw, root = tiny_night
    out = root / "out"
    run_night(raw, out, backend="cpu", progress=True)  # stderr is captured: not a terminal
    captured = capfd.readouterr()
    assert "\r" not in captured.err and "frames" not in captured.err
    plots = sorted(p for p in os.listdir(out / "previews") if p.endswith("_quality.png"))
    assert plots == ["M1_V_quality.png"]


def test_night_progress_on_a_fake_terminal(tiny_night, monkeypatch):
    raw, root = tiny_night
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    lines: list[str] = []
    run_night(raw, root / "out_tty", backend="cpu", progress=True, previews=False,
              log=lines.append)
    shown = _visible(tty.getvalue())
    assert any(re.fullmatch(r"\[\d/\d\] stacks/M1_V\.fits  3 frames  \d+\.\d s  "
                            r"\(night \d+\.\d s, eta (\?|\d+\.\d s)\)", s) for s in shown), shown
    assert any("stacks/M1_V.fits" in line for line in lines)
