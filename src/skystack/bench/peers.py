"""The peers: the same combine methods done with the tools astronomers otherwise use.

Each peer gets the frames already normalised (the benchmark's ``--zero``/``--scale`` applied
beforehand, untimed, since most of them have no such option) and returns the combined image and,
where it knows it, the number of frames kept per pixel.

=========== ======================================================================== ==========
peer        what runs                                                                methods
=========== ======================================================================== ==========
numpy       ``np.mean`` / ``np.median`` / ``np.sum`` / ``np.min`` / ``np.max`` along   none,
            the frames; minmax and percentile by ``np.sort`` and trimming            minmax,
                                                                                     percentile
bottleneck  ``bn.nanmean`` / ``nanmedian`` / ``nansum`` / ``nanmin`` / ``nanmax``    none
astropy     ``astropy.stats.sigma_clip(axis=0)`` then the masked mean or median      sigclip
ccdproc     ``ccdproc.combine`` of CCDData (``average``/``median``/``sum``), with    none,
            ``sigma_clip=True`` (one pass) or ``clip_extrema=True``                  sigclip,
                                                                                     minmax
swarp       ``SWarp -RESAMPLE N -COMBINE_TYPE AVERAGE|MEDIAN|SUM|MIN|MAX`` on FITS   none
            files with a minimal TAN WCS (a separate program: its time includes
            reading the files and writing its output)
=========== ======================================================================== ==========

Differences from skystack's rule are given as a note with each result (e.g. ccdproc clips
once). SWarp's ``CLIPPED`` combine is left out: without resampling and weight maps
(``-RESAMPLE N -WEIGHT_TYPE NONE``) it returns the plain mean, so it would not be compared
fairly.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

PEERS = ("numpy", "bottleneck", "astropy", "ccdproc", "swarp")

#: ``op() -> (image, count or None)``.
Op = Callable[[], tuple[np.ndarray, np.ndarray | None]]


def swarp_executable() -> str | None:
    return shutil.which("SWarp") or shutil.which("swarp")


def peer_unavailable(name: str) -> str | None:
    """Why ``name`` cannot run here, or None when it can."""
    if name == "numpy":
        return None
    if name == "swarp":
        return None if swarp_executable() else "SWarp is not installed (apt-get install swarp)"
    if importlib.util.find_spec(name) is None:
        return f"python package {name} is not installed"
    return None


def _trim_counts(n: int, opts: dict) -> tuple[int, int] | None:
    """Values dropped at each end by minmax / percentile (skystack's rounding: down)."""
    if opts.get("reject") == "minmax":
        lo, hi = opts["nlow"], opts["nhigh"]
    elif opts.get("reject") == "percentile":
        lo, hi = int(n * opts["plow"] / 100.0), int(n * opts["phigh"] / 100.0)
    else:
        return None
    return (lo, hi) if lo + hi < n else None


_NUMPY_REDUCE = {"mean": np.mean, "median": np.median, "sum": np.sum, "min": np.min,
                 "max": np.max}


def _numpy_op(opts: dict, cube: np.ndarray) -> tuple[Op, str] | None:
    reduce = _NUMPY_REDUCE[opts["method"]]
    reject = opts.get("reject", "none")
    n = cube.shape[0]
    if reject == "none":
        return (lambda: (reduce(cube, axis=0), None)), "NaNs not skipped"
    trim = _trim_counts(n, opts)
    if trim is None:
        return None
    lo, hi = trim

    def op():
        kept = np.sort(cube, axis=0)[lo:n - hi]
        return reduce(kept, axis=0), np.full(cube.shape[1:], n - lo - hi, np.int32)
    return op, "np.sort and trim"


def _bottleneck_op(opts: dict, cube: np.ndarray) -> tuple[Op, str] | None:
    import bottleneck as bn

    if opts.get("reject", "none") != "none":
        return None
    reduce = getattr(bn, "nan" + opts["method"])
    return (lambda: (reduce(cube, axis=0), None)), ""


def _astropy_op(opts: dict, cube: np.ndarray) -> tuple[Op, str] | None:
    from astropy.stats import sigma_clip

    if opts.get("reject") != "sigclip" or opts["method"] not in ("mean", "median", "sum"):
        return None
    stdfunc = "mad_std" if opts["spread"] == "mad" else "std"
    maxiters = opts["maxiters"] or None  # skystack's 0 = until nothing changes = astropy's None
    reduce = getattr(np.ma, opts["method"])

    def op():
        clipped = sigma_clip(cube, sigma_lower=opts["sigma_low"], sigma_upper=opts["sigma_high"],
                             maxiters=maxiters, cenfunc=opts["center"], stdfunc=stdfunc, axis=0,
                             masked=True, copy=False)
        count = clipped.count(axis=0).astype(np.int32)
        return np.ma.filled(reduce(clipped, axis=0).astype(np.float32), np.nan), count
    return op, f"sigma_clip(cenfunc={opts['center']}, stdfunc={stdfunc})"


def _ccdproc_op(opts: dict, cube: np.ndarray) -> tuple[Op, str] | None:
    import ccdproc
    from astropy.nddata import CCDData

    method = {"mean": "average", "median": "median", "sum": "sum"}.get(opts["method"])
    reject = opts.get("reject", "none")
    if method is None or reject not in ("none", "sigclip", "minmax"):
        return None
    # Building the CCDData list is the user's loading step, not the combine: done untimed.
    ccds = [CCDData(frame, unit="adu") for frame in cube]
    kwargs: dict = {"method": method, "mem_limit": 16e9, "dtype": np.float32}
    note = ""
    if reject == "sigclip":
        from astropy.stats import mad_std

        kwargs.update(sigma_clip=True, sigma_clip_low_thresh=opts["sigma_low"],
                      sigma_clip_high_thresh=opts["sigma_high"],
                      sigma_clip_func=np.ma.median if opts["center"] == "median" else np.ma.mean,
                      sigma_clip_dev_func=mad_std if opts["spread"] == "mad" else np.ma.std)
        note = "clips once (no iterations)"
    elif reject == "minmax":
        kwargs.update(clip_extrema=True, nlow=opts["nlow"], nhigh=opts["nhigh"])

    def op():
        result = ccdproc.combine(ccds, **kwargs)
        return np.asarray(result.data, np.float32), None
    return op, note


_SWARP_TYPES = {"mean": "AVERAGE", "median": "MEDIAN", "sum": "SUM", "min": "MIN", "max": "MAX"}


def write_swarp_inputs(cube: np.ndarray, folder: Path) -> list[str]:
    """FITS files of the frames with one shared minimal TAN WCS (1"/px), for SWarp."""
    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    ny, nx = cube.shape[1:]
    header = fits.Header()
    for key, value in (("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"), ("CRVAL1", 180.0),
                       ("CRVAL2", 0.0), ("CRPIX1", (nx + 1) / 2), ("CRPIX2", (ny + 1) / 2),
                       ("CDELT1", -1 / 3600), ("CDELT2", 1 / 3600), ("CUNIT1", "deg"),
                       ("CUNIT2", "deg"), ("EXPTIME", 1.0), ("GAIN", 0.0)):
        header[key] = value
    paths = []
    for k, frame in enumerate(cube):
        path = folder / f"frame_{k:04d}.fits"
        fits.writeto(path, frame, header, overwrite=True)
        paths.append(str(path))
    return paths


def swarp_command(paths: list[str], opts: dict, folder: Path) -> list[str] | None:
    """The SWarp command combining ``paths`` without resampling, or None if not supported."""
    if opts.get("reject", "none") != "none":
        return None
    kind = _SWARP_TYPES[opts["method"]]
    cmd = [swarp_executable() or "SWarp", *paths, "-RESAMPLE", "N", "-COMBINE_TYPE", kind,
           "-SUBTRACT_BACK", "N", "-WEIGHT_TYPE", "NONE", "-FSCALASTRO_TYPE", "NONE",
           "-CENTER_TYPE", "ALL", "-PIXELSCALE_TYPE", "MEDIAN",
           "-IMAGEOUT_NAME", str(folder / "swarp.fits"),
           "-WEIGHTOUT_NAME", str(folder / "swarp.weight.fits"), "-RESAMPLE_DIR", str(folder),
           "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET", "-NTHREADS", str(os.cpu_count() or 1)]
    return cmd


def run_swarp(cmd: list[str], folder: Path) -> tuple[np.ndarray, float | None]:
    """Run SWarp; return its image and its own peak RSS in MiB.

    The peak is SWarp's ``VmHWM`` read from ``/proc/PID/status`` every 5 ms while it runs (its
    own address space only: the ``ru_maxrss`` that ``wait4`` reports would include the pages of
    this process, which the child shares between fork and exec). None where /proc is missing.
    """
    from astropy.io import fits

    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status = Path(f"/proc/{proc.pid}/status")
    peak_kib = None
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib = max(peak_kib or 0, int(line.split()[1]))
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.005)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"SWarp exit {proc.returncode}: "
                           f"{' | '.join(err.strip().splitlines()[-2:])}")
    image = fits.getdata(folder / "swarp.fits").astype(np.float32)
    return image, None if peak_kib is None else peak_kib / 1024.0


_BUILDERS = {"numpy": _numpy_op, "bottleneck": _bottleneck_op, "astropy": _astropy_op,
             "ccdproc": _ccdproc_op}


def peer_op(name: str, opts: dict, cube: np.ndarray) -> tuple[Op, str] | None:
    """``(op, note)`` for an in-memory peer doing the method ``opts`` on ``cube``, or None
    when that peer has no such method (SWarp: see :func:`swarp_command`)."""
    return _BUILDERS[name](opts, cube)


def peer_supports(name: str, opts: dict, n_frames: int) -> bool:
    """Whether ``name`` does the method ``opts`` on ``n_frames`` frames (tried on a tiny cube;
    the peer must be available)."""
    if name == "swarp":
        return swarp_command([], opts, Path(".")) is not None
    return peer_op(name, opts, np.zeros((n_frames, 2, 2), np.float32)) is not None
