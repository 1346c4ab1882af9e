"""``skystack demo DIR``: a synthetic night written to ``DIR/raw`` and combined end to end.

Products (the layout that ``skystack night`` will use):
``DIR/masters/bias.fits`` (sigma-clipped mean), ``DIR/masters/dark_<T>s.fits`` (median),
``DIR/masters/flat_<F>.fits`` (median of flats scaled to a common median), and
``DIR/stacks/<OBJECT>_<F>.fits`` (sigma-clipped mean of the lights, cosmic rays rejected).
The demo stacks raw lights: calibration with the masters arrives with ``skystack night``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .api import combine_to_file
from .demo_data import write_sample_night
from .io.writer import check_output_path


def _products(night, directory: Path) -> list[tuple[str, list, Path, dict]]:
    masters = directory / "masters"
    stacks = directory / "stacks"
    dark_t = int(round(float(_exptime(night.dark[0]))))
    jobs = [("master bias", night.bias, masters / "bias.fits",
             dict(method="mean", reject="sigclip", sigma=3.0, maxiters=0)),
            (f"master dark {dark_t}s", night.dark, masters / f"dark_{dark_t}s.fits",
             dict(method="median"))]
    for filt, flats in night.flat.items():
        jobs.append((f"master flat {filt}", flats, masters / f"flat_{filt}.fits",
                     dict(method="median", scale="median")))
    for filt, lights in night.light.items():
        obj = _header_value(lights[0], "OBJECT")
        jobs.append((f"stack {obj} {filt}", lights, stacks / f"{obj}_{filt}.fits",
                     dict(method="mean", reject="sigclip", center="median", spread="mad",
                          sigma_low=4.0, sigma_high=3.0, maxiters=0)))
    return jobs


def _header_value(path, key):
    from astropy.io import fits

    return fits.getheader(path)[key]


def _exptime(path) -> float:
    return float(_header_value(path, "EXPTIME"))


def run_demo(directory: str | os.PathLike, *, backend: str = "auto", overwrite: bool = False,
             quiet: bool = False) -> list[Path]:
    """Write the sample night into ``directory`` and combine it; returns the product paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    night = write_sample_night(directory / "raw")
    jobs = _products(night, directory)
    for _, _, out, _ in jobs:
        out.parent.mkdir(parents=True, exist_ok=True)
        check_output_path(out, overwrite)  # refuse before any work, not halfway through
    if not quiet:
        n = len(night.bias) + len(night.dark) + sum(map(len, night.flat.values())) + sum(
            map(len, night.light.values()))
        print(f"wrote {n} raw frames to {directory / 'raw'} ({time.perf_counter() - t0:.1f} s)")
    written = []
    for label, inputs, out, options in jobs:
        t = time.perf_counter()
        combine_to_file([str(p) for p in inputs], out, backend=backend, overwrite=overwrite,
                        **options)
        written.append(out)
        if not quiet:
            seconds = time.perf_counter() - t
            print(f"{label:<18} {len(inputs):3d} frames -> {out}  ({seconds:.2f} s)")
    if not quiet:
        _report_stack(written[-1])
        print(f"done in {time.perf_counter() - t0:.1f} s; open the products with "
              "astropy.nddata.CCDData.read or any FITS viewer")
    return written


def _report_stack(path: Path) -> None:
    from astropy.io import fits

    with fits.open(path) as hdul:
        count = hdul["COUNT"].data
        image = hdul[0].data
        print(f"{path.name}: median level {np.nanmedian(image):.1f} ADU, "
              f"{int((count < count.max()).sum())} pixels with at least one value rejected, "
              f"NCOMBINE={hdul[0].header['NCOMBINE']}")
