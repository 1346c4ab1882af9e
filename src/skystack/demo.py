"""``skystack demo DIR``: a synthetic night written to ``DIR/raw``, reduced by ``skystack night``.

The night (see :mod:`skystack.demo_data`): biases, 60 s darks, flats in B, V and R, and 9 lights
of M67 per filter exposed 90 s (so the dark is scaled), dithered by up to 8 px and rotated by up
to 1.5 degrees, with hot pixels, vignetting, dust and cosmic rays. Products land in ``DIR`` in
the layout of ``skystack night`` (``masters/``, ``stacks/``, ``previews/`` with an RGB
composite, ``summary.json``).

The raw night is written once: a second ``skystack demo DIR`` finds it (``raw/demo.json``) and
the night reuses every product that is up to date.

``skystack demo --survey DIR``: the survey night of :mod:`skystack.survey_data` instead (a
6-CCD mosaic camera, MEF exposures, some ``.fits.fz``, 3 x 3 overlapping pointings in g and r),
reduced CCD by CCD with ``--gain-normalise`` and co-added on sky tiles of
:data:`SURVEY_TILE_DEG` (``stacks/<TILE>_<FILTER>.fits`` and ``stacks/tiles.json``).

``skystack demo --osc DIR``: the one-shot-colour night of :mod:`skystack.osc_data` (a Bayer
RGGB CMOS camera with amplifier glow, hot pixels and a coloured, vignetted flat), calibrated in
CFA space and stacked in R, G and B (``stacks/<OBJECT>_R.fits`` … and an RGB composite).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .demo_data import write_sample_night

DEMO_NIGHT = dict(shape=(512, 512), n_bias=9, n_dark=5, dark_exptime=60.0, n_flat=5,
                  filters=("B", "V", "R"), n_light=9, light_exptime=90.0, dither_px=8.0,
                  rotation_deg=1.5, seed=0)


def _raw_night(raw: Path, quiet: bool) -> None:
    marker = raw / "demo.json"
    recipe = json.dumps(DEMO_NIGHT, sort_keys=True, default=list)
    if marker.is_file() and marker.read_text() == recipe:
        if not quiet:
            print(f"using the sample night already in {raw}")
        return
    t0 = time.perf_counter()
    night = write_sample_night(raw, **DEMO_NIGHT)
    marker.write_text(recipe)
    if not quiet:
        n = len(night.bias) + len(night.dark) + sum(map(len, night.flat.values())) + sum(
            map(len, night.light.values()))
        print(f"wrote {n} raw frames to {raw} ({time.perf_counter() - t0:.1f} s)")


SURVEY_TILE_DEG = 0.1  # the survey demo's tiles: a few over its 3 x 3 pointings


def _raw_survey(raw: Path, quiet: bool) -> None:
    from .survey_data import write_survey_night

    marker = raw / "survey.json"
    if marker.is_file():
        if not quiet:
            print(f"using the survey night already in {raw}")
        return
    t0 = time.perf_counter()
    night = write_survey_night(raw)
    marker.write_text(json.dumps({"exposures": len(night.exposures)}))
    if not quiet:
        print(f"wrote {len(night.exposures)} mosaic exposures to {raw} "
              f"({time.perf_counter() - t0:.1f} s)")


def run_survey_demo(directory: str | os.PathLike, *, backend: str = "auto",
                    overwrite: bool = False, quiet: bool = False) -> list[Path]:
    """Write the survey night into ``directory/raw`` (once) and reduce it into ``directory``
    on sky tiles (see module docstring); returns the product paths."""
    from .night.run import format_night_table, run_night
    from .regrid.skytiles import SkyTiling
    from .survey_data import SURVEY_PIXEL_SCALE

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _raw_survey(directory / "raw", quiet)
    result = run_night(directory / "raw", directory, backend=backend, overwrite=overwrite,
                       gain_normalise=True, tiles=SkyTiling(SURVEY_TILE_DEG, SURVEY_PIXEL_SCALE),
                       log=None if quiet else print)
    if not quiet:
        print()
        print(format_night_table(result))
        tiles = [p for p in result.products if p.kind == "stack"]
        print(f"\n{len(tiles)} tile co-adds in {directory / 'stacks'} (tiles.json maps exposures "
              f"to tiles); done in {result.seconds:.1f} s")
    return [Path(p.path) for p in result.products]


def run_demo(directory: str | os.PathLike, *, backend: str = "auto", overwrite: bool = False,
             quiet: bool = False) -> list[Path]:
    """Write the sample night into ``directory/raw`` (once) and reduce it into ``directory``;
    returns the product paths."""
    from .night.run import format_night_table, run_night

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _raw_night(directory / "raw", quiet)
    result = run_night(directory / "raw", directory, backend=backend, overwrite=overwrite,
                       log=None if quiet else print)
    if not quiet:
        print()
        print(format_night_table(result))
        stack = result.product("stack", "M67_V.fits")
        if stack is not None:
            _report_stack(Path(stack.path))
        print(f"done in {result.seconds:.1f} s; previews in {directory / 'previews'}, open the "
              "FITS products with astropy.nddata.CCDData.read or any FITS viewer")
    return [Path(p.path) for p in result.products]


def _report_stack(path: Path) -> None:
    from astropy.io import fits

    with fits.open(path) as hdul:
        count = hdul["COUNT"].data
        image = hdul[0].data
        print(f"{path.name}: median sky {np.nanmedian(image):.1f} ADU, coverage "
              f"{int(count.min())}..{int(count.max())} frames, NCOMBINE="
              f"{hdul[0].header['NCOMBINE']}")


def run_osc_demo(directory: str | os.PathLike, *, backend: str = "auto",
                 overwrite: bool = False, quiet: bool = False) -> list[Path]:
    """Write the one-shot-colour night into ``directory/raw`` (once) and reduce it into
    ``directory`` (see module docstring); returns the product paths."""
    from .night.run import format_night_table, run_night
    from .osc_data import write_osc_night

    directory = Path(directory)
    raw = directory / "raw"
    marker = raw / "osc.json"
    if not marker.is_file():
        night = write_osc_night(raw)
        marker.write_text(json.dumps({"lights": len(night.light)}))
        if not quiet:
            print(f"wrote the one-shot-colour night to {raw}")
    result = run_night(raw, directory, backend=backend, overwrite=overwrite,
                       log=None if quiet else print)
    if not quiet:
        print()
        print(format_night_table(result))
        print(f"done in {result.seconds:.1f} s; R, G, B stacks in {directory / 'stacks'}, "
              f"RGB composite in {directory / 'previews'}")
    return [Path(p.path) for p in result.products]
