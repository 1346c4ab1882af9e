"""Resampling comparison of ``skystack bench --sections resampling``: every interpolation of
``skystack stack`` (and drizzle) on dithered, rotated frames with a known truth, beside the peers.

Contestants: skystack's stack (mean, no rejection, no normalisation, CPU) with ``--interp``
bilinear, nearest, lanczos3, lanczos4 and drizzle (square kernel, scale 1, pixfrac 1.0 and 0.6);
peers ``reproject`` (``reproject.reproject_interp(order="bilinear")`` of each frame then
``numpy.nanmean``) and ``drizzle`` (the drizzle package's ``Drizzle`` called directly with
``calc_pixmap`` of each frame's WCS, pixfrac 1.0), when installed.

Metrics of each stacked image (:func:`resampled_quality`; the data: :func:`make_dithered`):

* ``noise_ratio``: standard deviation of ``image - truth`` over the star-free background covered
  by every frame, in units of the ideal ``sigma / sqrt(N)`` of a plain mean without resampling.
  Interpolation averages neighbouring pixels, so it is below 1 for bilinear and Lanczos: the
  noise is not removed but spread into neighbouring pixels (correlated);
* ``binned_noise_ratio``: the same residual averaged in 4x4 blocks, its standard deviation
  against the ideal of uncorrelated noise, ``sigma / sqrt(N) / 4``. Correlated noise shows here
  (the block means do not average down as 1/4); ``noise_correlation`` = binned / unbinned ratio
  is 1 for uncorrelated noise and grows with the smoothing;
* ``flux_ratio``: median over the bright stars (:data:`~.dithered.BRIGHT_FLUX` ADU and up) of
  their aperture flux (:func:`skystack.bench.quality.aperture_photometry`, radius 3 FWHM, sky
  from 4 to 6 FWHM) in the image over the same in the truth; ``flux_bias_pct`` /
  ``flux_bias_err_pct``: :func:`skystack.bench.quality.flux_bias` over every star;
* ``fwhm_px``: median FWHM of the stars that :func:`skystack.register.stars.measure_stars`
  finds in the image; ``fwhm_ratio``: that over the same measured on the truth plus Gaussian
  noise of the ideal ``sigma / sqrt(N)`` (the same operator, so its own bias cancels): the
  broadening by resampling;
* ``seconds``: median wall time of ``repeats`` runs in this process (every core for skystack;
  the peers as they come), after one untimed run on a tiny stack that compiles or loads what
  the first call needs; ``time_ratio``: over skystack's bilinear.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import quality
from .dithered import BRIGHT_FLUX, DitheredStack, make_dithered

BIN = 4


@dataclass(frozen=True)
class Resampler:
    """One contestant: its label, engine and the keyword options of :func:`skystack.stack`."""

    label: str
    engine: str  # skystack, reproject or drizzle
    options: tuple[tuple[str, object], ...] = ()

    @property
    def kwargs(self) -> dict:
        return dict(self.options)


SKYSTACK_RESAMPLERS = (
    Resampler("bilinear", "skystack", (("interp", "bilinear"),)),
    Resampler("nearest", "skystack", (("interp", "nearest"),)),
    Resampler("lanczos3", "skystack", (("interp", "lanczos3"),)),
    Resampler("lanczos4", "skystack", (("interp", "lanczos4"),)),
    Resampler("drizzle pixfrac=1", "skystack", (("interp", "drizzle"), ("pixfrac", 1.0))),
    Resampler("drizzle pixfrac=0.6", "skystack", (("interp", "drizzle"), ("pixfrac", 0.6))),
)
PEER_RESAMPLERS = (
    Resampler("bilinear", "reproject", (("order", "bilinear"),)),
    Resampler("drizzle pixfrac=1", "drizzle", (("pixfrac", 1.0),)),
)
RESAMPLING_PEERS = ("reproject", "drizzle")


def peer_unavailable(name: str) -> str | None:
    """Why the resampling peer ``name`` cannot run here, or None when it can."""
    if importlib.util.find_spec(name) is None:
        return f"python package {name} is not installed"
    return None


def _skystack_op(ds: DitheredStack, r: Resampler, threads: int | None) -> Callable[[], np.ndarray]:
    import skystack

    def op() -> np.ndarray:
        out = skystack.stack(ds.frames, grid_header=ds.grid_header, backend="cpu",
                             threads=threads, method="mean", reject="none", zero="none",
                             scale="none", **r.kwargs)
        return np.asarray(out.data, np.float64)
    return op


def _reproject_op(ds: DitheredStack, r: Resampler) -> Callable[[], np.ndarray]:
    from reproject import reproject_interp

    def op() -> np.ndarray:
        planes = [reproject_interp((f.data, f.wcs), ds.grid_wcs, shape_out=ds.truth.shape,
                                   order=r.kwargs["order"], return_footprint=False)
                  for f in ds.frames]
        with warnings.catch_warnings():  # grid pixels no frame covers stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(planes, axis=0)
    return op


def _drizzle_op(ds: DitheredStack, r: Resampler) -> Callable[[], np.ndarray]:
    from drizzle.resample import Drizzle
    from drizzle.utils import calc_pixmap

    def op() -> np.ndarray:
        driz = Drizzle(kernel="square", out_shape=ds.truth.shape, disable_ctx=True)
        for f in ds.frames:
            w = f.wcs.deepcopy()
            w.pixel_shape = f.data.shape[::-1]
            driz.add_image(f.data, 1.0, calc_pixmap(w, ds.grid_wcs),
                           pixfrac=r.kwargs["pixfrac"])
        image = np.asarray(driz.out_img, np.float64)
        image[np.asarray(driz.out_wht) <= 0] = np.nan
        return image
    return op


def _op(ds: DitheredStack, r: Resampler, threads: int | None) -> Callable[[], np.ndarray]:
    if r.engine == "skystack":
        return _skystack_op(ds, r, threads)
    return _reproject_op(ds, r) if r.engine == "reproject" else _drizzle_op(ds, r)


def binned_std(residual: np.ndarray, mask: np.ndarray, b: int = BIN) -> float:
    """Standard deviation of the means of the ``b`` x ``b`` blocks of ``residual`` whose pixels
    are all in ``mask`` and finite (NaN when fewer than 10 such blocks)."""
    ny, nx = (s - s % b for s in residual.shape)
    r = residual[:ny, :nx].reshape(ny // b, b, nx // b, b)
    m = (mask[:ny, :nx] & np.isfinite(residual[:ny, :nx])).reshape(ny // b, b, nx // b, b)
    full = m.all(axis=(1, 3))
    if full.sum() < 10:
        return math.nan
    return float(r.mean(axis=(1, 3))[full].std())


def _median_fwhm(image: np.ndarray) -> float:
    from ..register.stars import measure_stars

    return float(measure_stars(np.nan_to_num(image, nan=float(np.nanmedian(image))))
                 .median_fwhm)


@dataclass
class ResamplingTruth:
    """What the metrics need from the truth, measured once."""

    r_ap: float
    r_in: float
    r_out: float
    true_flux: np.ndarray
    truth_fwhm: float

    @classmethod
    def for_stack(cls, ds: DitheredStack) -> ResamplingTruth:
        r_ap, r_in, r_out = 3.0 * ds.fwhm, 4.0 * ds.fwhm, 6.0 * ds.fwhm
        flux = quality.aperture_photometry(ds.truth, ds.star_x, ds.star_y, r_ap, r_in, r_out,
                                           model=ds.star_image)
        rng = np.random.default_rng(ds.seed)
        noisy = ds.truth + rng.normal(0.0, ds.ideal_sigma, ds.truth.shape)
        return cls(r_ap, r_in, r_out, flux, _median_fwhm(noisy))


def resampled_quality(ds: DitheredStack, image: np.ndarray,
                      ref: ResamplingTruth | None = None) -> dict:
    """Every metric of the module docstring for one stacked ``image`` on ``ds``'s grid."""
    ref = ref or ResamplingTruth.for_stack(ds)
    image = np.asarray(image, np.float64)
    resid = image - ds.truth
    bg = ds.background_mask & np.isfinite(resid)
    ideal = ds.ideal_sigma
    out: dict = {"noise_ratio": float(resid[bg].std() / ideal) if bg.any() else None}
    binned = binned_std(resid, ds.background_mask)
    out["binned_noise_ratio"] = None if not math.isfinite(binned) else binned / (ideal / BIN)
    out["noise_correlation"] = (out["binned_noise_ratio"] / out["noise_ratio"]
                                if out["binned_noise_ratio"] and out["noise_ratio"] else None)
    measured = quality.aperture_photometry(image, ds.star_x, ds.star_y, ref.r_ap, ref.r_in,
                                           ref.r_out, model=ds.star_image)
    bright = (ds.star_flux >= BRIGHT_FLUX) & np.isfinite(measured) & np.isfinite(ref.true_flux)
    out["flux_ratio"] = float(np.median(measured[bright] / ref.true_flux[bright])) \
        if bright.any() else None
    out["flux_bias_pct"], out["flux_bias_err_pct"] = quality.flux_bias(measured, ref.true_flux)
    fwhm = _median_fwhm(image)
    out["fwhm_px"] = fwhm if math.isfinite(fwhm) else None
    out["truth_fwhm_px"] = ref.truth_fwhm
    out["fwhm_ratio"] = fwhm / ref.truth_fwhm if math.isfinite(fwhm) else None
    return out


def run_resampling(n_frames: int, shape: tuple[int, int], seed: int, repeats: int = 1,
                   threads: int | None = None, peers: tuple[str, ...] = RESAMPLING_PEERS,
                   say: Callable[[str], None] = lambda _m: None) -> dict:
    """Make the dithered stack, run every contestant ``repeats`` times and measure it.

    Returns ``{"data": ..., "peers": {name: status}, "rows": [...]}`` (rows in the order of
    :data:`SKYSTACK_RESAMPLERS` then :data:`PEER_RESAMPLERS`; a failed contestant has an
    ``error`` instead of metrics)."""
    from ..errors import SkystackError

    ds = make_dithered(n_frames, shape, seed)
    ref = ResamplingTruth.for_stack(ds)
    status = {p: (peer_unavailable(p) or "ok") for p in RESAMPLING_PEERS}
    for p in RESAMPLING_PEERS:
        if p not in peers:
            status[p] = "not requested"
    contestants = list(SKYSTACK_RESAMPLERS) + [r for r in PEER_RESAMPLERS
                                               if status[r.engine] == "ok"]
    warm = make_dithered(2, (64, 64), seed)
    rows = []
    for r in contestants:
        row: dict = {"method": r.label, "engine": r.engine, "n_frames": n_frames,
                     "ny": shape[0], "nx": shape[1]}
        op = _op(ds, r, threads)
        try:
            _op(warm, r, threads)()  # untimed: compiles/loads the kernels the first call needs
            times = []
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                image = op()
                times.append(time.perf_counter() - t0)
        except (SkystackError, ValueError, RuntimeError, ImportError) as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            say(f"resampling {r.label} · {r.engine}: {row['error']}")
            continue
        row["seconds"] = statistics.median(times)
        row.update(resampled_quality(ds, image, ref))
        rows.append(row)
        say(f"resampling {r.label} · {r.engine}: {row['seconds']:.3f} s")
    base = next((x["seconds"] for x in rows if x["engine"] == "skystack"
                 and x["method"] == "bilinear" and "seconds" in x), None)
    for x in rows:
        x["time_ratio"] = x["seconds"] / base if base and "seconds" in x else None
    return {"data": ds.describe(), "peers": status, "rows": rows}
