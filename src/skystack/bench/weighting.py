"""Frame-weights comparison of ``skystack bench --sections weights``: ``--weights`` and
``--scale``/``--zero`` choices on frames of unequal noise and transparency with a known truth.

Contestants (:data:`WEIGHTINGS`): skystack's combine (mean, no rejection, CPU) of the frames of
:func:`~skystack.bench.dithered.make_unequal` with ``--weights`` none, exptime, bgnoise,
psf-signal and stars under ``--scale stars --zero median``; and bgnoise weights under
``--scale median`` (the sky level, not the stars: wrong when transparency or moonlight vary) and
``--scale regression --zero regression``.

Metrics (:func:`weighted_quality`):

* ``noise_vs_optimal``: standard deviation of ``image - truth`` over the star-free background,
  divided by the noise of the optimal inverse-variance mean computed from the truth's sigmas
  (:attr:`~skystack.bench.dithered.UnequalStack.optimal_sigma`): 1 is the best any weighting
  can do; ``equal_vs_optimal`` in the section's data is what equal weights give in theory;
* ``flux_ratio``: median over the bright stars of aperture flux (radius 2.5 x the largest
  seeing FWHM, sky from 3.5 to 5.5 FWHM, :func:`skystack.bench.quality.aperture_photometry`)
  in the image over the same in the truth (frame 0's noiseless image): a wrong scale shows as a
  ratio away from 1; ``flux_bias_pct`` / ``flux_bias_err_pct``:
  :func:`skystack.bench.quality.flux_bias` over every star;
* ``bg_bias_sigma``: mean of ``image - truth`` on the background in units of the optimal sigma
  (a wrong zero offset);
* ``seconds``: median wall time of ``repeats`` runs in this process (after one untimed call
  that loads the kernels), measurements of the frames (noise, stars, regression) included;
  ``time_ratio``: over equal weights.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import quality
from .dithered import UnequalStack, make_unequal

BRIGHT_RATE_S = 200.0  # ADU/s: stars at least this bright (frame 0) give the flux ratio


@dataclass(frozen=True)
class Weighting:
    """One contestant: a label and the options of :func:`skystack.combine`."""

    label: str
    weights: str
    scale: str
    zero: str


WEIGHTINGS = (
    Weighting("none", "none", "stars", "median"),
    Weighting("exptime", "exptime", "stars", "median"),
    Weighting("bgnoise", "bgnoise", "stars", "median"),
    Weighting("psf-signal", "psf-signal", "stars", "median"),
    Weighting("stars", "stars", "stars", "median"),
    Weighting("bgnoise, scale median", "bgnoise", "median", "median"),
    Weighting("bgnoise, regression", "bgnoise", "regression", "regression"),
)


@dataclass
class WeightingTruth:
    """Apertures and true fluxes, measured once per stack."""

    r_ap: float
    r_in: float
    r_out: float
    true_flux: np.ndarray
    bright: np.ndarray

    @classmethod
    def for_stack(cls, us: UnequalStack) -> WeightingTruth:
        f = float(us.fwhm.max())
        r_ap, r_in, r_out = 2.5 * f, 3.5 * f, 5.5 * f
        flux = quality.aperture_photometry(us.reference, us.star_x, us.star_y, r_ap, r_in,
                                           r_out, model=us.star_image)
        bright = np.isfinite(flux) & (flux >= BRIGHT_RATE_S * us.exptime[0] * 0.9)
        return cls(r_ap, r_in, r_out, flux, bright)


def weighted_quality(us: UnequalStack, image: np.ndarray,
                     ref: WeightingTruth | None = None) -> dict:
    """The metrics of the module docstring for one combined ``image``."""
    ref = ref or WeightingTruth.for_stack(us)
    image = np.asarray(image, np.float64)
    resid = image - us.reference
    bg = us.background_mask & np.isfinite(resid)
    opt = us.optimal_sigma
    out: dict = {"noise_vs_optimal": float(resid[bg].std() / opt) if bg.any() else None,
                 "bg_bias_sigma": float(resid[bg].mean() / opt) if bg.any() else None}
    measured = quality.aperture_photometry(image, us.star_x, us.star_y, ref.r_ap, ref.r_in,
                                           ref.r_out, model=us.star_image)
    ok = ref.bright & np.isfinite(measured)
    out["flux_ratio"] = float(np.median(measured[ok] / ref.true_flux[ok])) if ok.any() else None
    out["flux_bias_pct"], out["flux_bias_err_pct"] = quality.flux_bias(measured, ref.true_flux)
    return out


def run_weighting(n_frames: int, shape: tuple[int, int], seed: int, repeats: int = 1,
                  threads: int | None = None,
                  say: Callable[[str], None] = lambda _m: None) -> dict:
    """Make the unequal stack, run every contestant of :data:`WEIGHTINGS` and measure it.

    Returns ``{"data": ..., "rows": [...]}`` (a failed contestant has an ``error``)."""
    import skystack

    from ..errors import SkystackError

    us = make_unequal(n_frames, shape, seed)
    ref = WeightingTruth.for_stack(us)
    # Untimed: loads what the first combine call needs (kernels, star detection).
    skystack.combine(us.frames[:2], backend="cpu", threads=threads, weights="bgnoise")
    rows = []
    for w in WEIGHTINGS:
        row: dict = {"method": w.label, "engine": "skystack", "weights": w.weights,
                     "scale": w.scale, "zero": w.zero, "n_frames": n_frames, "ny": shape[0],
                     "nx": shape[1]}
        try:
            times = []
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                out = skystack.combine(us.frames, backend="cpu", threads=threads,
                                       method="mean", reject="none", weights=w.weights,
                                       scale=w.scale, zero=w.zero)
                times.append(time.perf_counter() - t0)
        except SkystackError as exc:
            row["error"] = str(exc)
            rows.append(row)
            say(f"weights {w.label}: {row['error']}")
            continue
        row["seconds"] = statistics.median(times)
        row.update(weighted_quality(us, out.data, ref))
        rows.append(row)
        say(f"weights {w.label}: {row['seconds']:.3f} s")
    base = next((x["seconds"] for x in rows if x["method"] == "none" and "seconds" in x), None)
    for x in rows:
        x["time_ratio"] = x["seconds"] / base if base and "seconds" in x else None
    data = us.describe()
    data["equal_vs_optimal"] = round(us.equal_sigma / us.optimal_sigma, 4)
    data["bright_stars"] = int(ref.bright.sum())
    return {"data": data, "rows": rows}
