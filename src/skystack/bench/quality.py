"""Quality of a combined image: against a known truth, or by leave-one-out on real frames.

Units: residuals are in units of the ideal noise of the stack, ``sigma / sqrt(N)`` (the standard
deviation of the plain mean of N artefact-free frames at that pixel); flux biases and rejected
fractions are percentages.

Against the truth (:func:`truth_quality`, a :class:`~skystack.bench.truth.SyntheticStack`):

* ``noise_ratio``: standard deviation of ``image - truth`` over star-free, artefact-free
  background pixels, divided by the ideal ``sigma / sqrt(N)`` (1 for a plain mean; about
  ``sqrt(pi / 2) = 1.25`` for a median of many frames); ``bg_bias_sigma``: the mean of
  ``image - truth`` there, in the same unit (a normalisation error shows here);
* ``cr_rms_sigma`` / ``cr_max_sigma``: RMS and largest ``|image - truth|`` at the pixels hit by
  a cosmic ray in any frame; ``trail_*`` the same where the satellite trail exceeds the sky
  noise of its frame. A method that removes the artefacts scores about 1 (noise alone);
* ``faint_bias_pct`` / ``bright_bias_pct``: aperture photometry (radius 2 FWHM, sky from an
  annulus 3 to 5 FWHM, see :func:`aperture_photometry`) of every star, the same operator on the
  image and on the truth: ``sum(measured) / sum(true) - 1``, with a standard
  error ``*_err_pct`` from the scatter of the stars;
* ``good_rejected_pct``: ``1 - COUNT / N`` averaged over the pixels no artefact touches: how
  many good values the rejection threw away (minmax and percentile by design, clipping by
  chance or because of a real frame-to-frame change such as seeing).

Without a truth (:func:`prepare_loo`, :func:`loo_quality`, for the user's frames): outliers
(cosmic rays, trails) are values more than 8 sigma above the median of all frames, away from
sources (pixels more than one frame sigma above the sky in that median). The noise of each frame
``v_k`` comes from the variances of frame differences on the outlier- and source-free background
(``var(f_j - f_k) = v_j + v_k``, solved by least squares: sky structure cancels).

* ``noise_ratio``: the method's stacks of two disjoint random halves of the frames are
  subtracted; ``var(S_A - S_B)`` over the background against the ideal
  ``sum_A v / |A|^2 + sum_B v / |B|^2`` (the median of 4 splits). Halves, not N-1 frames
  against one, because then the stack noise is measured directly instead of as the small
  difference of two large variances;
* ``artefact_rms_sigma`` / ``artefact_max_sigma``: leave-one-out, for up to 8 frames k holding
  outliers: ``S_all - S_-k`` (the stack with and without frame k) at the outliers of frame k, in
  units of the ideal noise of the whole stack: about 0 when the method removes them, the outlier
  divided by N when it does not;
* ``good_rejected_pct`` as above, over the pixels with no outlier in any frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .truth import SyntheticStack, dilate

MAD_TO_SIGMA = 1.4826
OUTLIER_SIGMA = 8.0


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def residual_stats(z: np.ndarray) -> tuple[float | None, float | None]:
    """RMS and largest absolute value of the finite entries of ``z`` (None when none)."""
    z = z[np.isfinite(z)]
    if z.size == 0:
        return None, None
    return float(np.sqrt(np.mean(z * z))), float(np.max(np.abs(z)))


def aperture_photometry(image: np.ndarray, x: np.ndarray, y: np.ndarray, r_ap: float,
                        r_in: float, r_out: float, model: np.ndarray | None = None,
                        exclude: np.ndarray | None = None) -> np.ndarray:
    """Sky-subtracted sum within ``r_ap`` px of each ``(x, y)``.

    The sky is the mean of ``image - model`` over the annulus ``r_in..r_out`` without the
    ``exclude`` pixels: with the true star light as ``model`` and the artefacts excluded it is
    unbiased, where a median of the annulus would be pulled up by the wings of neighbours by an
    amount that grows with the noise (10 % of a faint star's flux at 8 frames). A pixel belongs
    to an aperture when its centre does. NaN for a star whose aperture holds a NaN or whose
    annulus leaves the image.
    """
    ny, nx = image.shape
    h = int(math.ceil(r_out))
    k = np.arange(-h, h + 1)
    out = np.full(x.size, np.nan)
    for i, (x0, y0) in enumerate(zip(x, y)):
        ix, iy = int(round(x0)), int(round(y0))
        if iy - h < 0 or ix - h < 0 or iy + h >= ny or ix + h >= nx:
            continue
        box = (slice(iy - h, iy + h + 1), slice(ix - h, ix + h + 1))
        cut = image[box]
        r2 = (k[:, None] + iy - y0) ** 2 + (k[None, :] + ix - x0) ** 2
        ring = (r2 >= r_in**2) & (r2 <= r_out**2)
        if exclude is not None:
            ring &= ~exclude[box]
        sky_values = cut[ring] - (0.0 if model is None else model[box][ring])
        inside = cut[r2 <= r_ap**2]
        if not np.all(np.isfinite(inside)) or not np.isfinite(sky_values).any():
            continue
        out[i] = inside.sum() - inside.size * np.nanmean(sky_values)
    return out


def flux_bias(measured: np.ndarray, true: np.ndarray) -> tuple[float | None, float | None]:
    """``sum(measured) / sum(true) - 1`` in percent and its standard error, over the stars
    measured in both."""
    ok = np.isfinite(measured) & np.isfinite(true) & (true > 0)
    if ok.sum() < 2:
        return None, None
    m, t = measured[ok], true[ok]
    bias = m.sum() / t.sum() - 1.0
    err = np.sqrt(np.sum((m - t * (1.0 + bias)) ** 2)) / t.sum()
    return 100.0 * float(bias), 100.0 * float(err)


@dataclass
class Photometry:
    """Apertures and the true fluxes in them, computed once per stack."""

    r_ap: float
    r_in: float
    r_out: float
    true_flux: np.ndarray

    @classmethod
    def for_stack(cls, stack: SyntheticStack) -> Photometry:
        fwhm = float(np.mean(stack.fwhm))
        r_ap, r_in, r_out = 2.0 * fwhm, 3.0 * fwhm, 5.0 * fwhm
        phot = cls(r_ap, r_in, r_out, np.empty(0))
        phot.true_flux = phot.measure(stack, stack.reference)
        return phot

    def measure(self, stack: SyntheticStack, image: np.ndarray) -> np.ndarray:
        return aperture_photometry(image, stack.star_x, stack.star_y, self.r_ap, self.r_in,
                                   self.r_out, model=stack.star_image,
                                   exclude=stack.artefact_mask)


def truth_quality(stack: SyntheticStack, image: np.ndarray, count: np.ndarray | None = None,
                  phot: Photometry | None = None) -> dict:
    """Every truth metric of ``image`` (module docstring); ``count`` (frames used per pixel)
    gives ``good_rejected_pct`` (None without it)."""
    image = np.asarray(image, np.float64)
    sigma = np.sqrt(stack.variance)
    z = (image - stack.reference) / sigma
    bg = stack.background_mask & np.isfinite(z)
    out: dict = {}
    if bg.any():
        ideal = math.sqrt(float(stack.variance[bg].mean()))
        d = image[bg] - stack.reference[bg]
        out["noise_ratio"] = float(d.std() / ideal)
        out["bg_bias_sigma"] = float(d.mean() / ideal)
    else:
        out["noise_ratio"] = out["bg_bias_sigma"] = None
    out["cr_rms_sigma"], out["cr_max_sigma"] = residual_stats(z[stack.cr_mask])
    out["trail_rms_sigma"], out["trail_max_sigma"] = residual_stats(z[stack.trail_mask])
    phot = phot or Photometry.for_stack(stack)
    measured = phot.measure(stack, image)
    for name, sel in (("faint", ~stack.star_bright), ("bright", stack.star_bright)):
        out[f"{name}_bias_pct"], out[f"{name}_bias_err_pct"] = flux_bias(measured[sel],
                                                                         phot.true_flux[sel])
    out["good_rejected_pct"] = rejected_pct(count, ~stack.artefact_mask, stack.n_frames)
    return out


def rejected_pct(count: np.ndarray | None, good: np.ndarray, n_frames: int) -> float | None:
    """``100 * (1 - mean(COUNT) / N)`` over the ``good`` pixels (None without a count)."""
    if count is None or not good.any():
        return None
    return 100.0 * (1.0 - float(np.mean(count[good], dtype=np.float64)) / n_frames)


def robust_var(values: np.ndarray) -> float:
    """Variance from the median absolute deviation (scaled to a Gaussian sigma), NaNs ignored."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan
    mad = np.median(np.abs(v - np.median(v)))
    return float((MAD_TO_SIGMA * mad) ** 2)


@dataclass
class LooContext:
    """What the truth-free metrics need from the frames, whatever the method."""

    frame_var: np.ndarray  # (N,) noise variance of each frame, ADU^2
    outliers: np.ndarray  # (N, ny, nx) bool
    good: np.ndarray  # (ny, nx): no outlier in any frame, even next to it
    background: np.ndarray  # (ny, nx): good and away from sources
    folds: np.ndarray  # held-out frame indices that hold outliers
    splits: list[tuple[np.ndarray, np.ndarray]]  # disjoint halves for the noise


def prepare_loo(cube: np.ndarray, max_folds: int = 8, n_splits: int = 4, sample: int = 200_000,
                seed: int = 0) -> LooContext:
    """Frame noises, outliers, held-out frames and split halves of ``cube`` (``(N, ny, nx)``,
    N >= 3)."""
    n = cube.shape[0]
    if n < 3:
        raise ValueError("leave-one-out needs at least 3 frames")
    rng = np.random.default_rng(seed)
    zero = np.array([np.nanmedian(f[::max(1, f.shape[0] // 256)]) for f in cube])
    levelled = cube - zero[:, None, None].astype(np.float32)
    med = np.nanmedian(levelled, axis=0)
    rough_var = np.array([robust_var((f - med).ravel()[::7]) for f in levelled])
    # Sources: more than one frame sigma above the sky in the median; their cores change with
    # the seeing from frame to frame and are neither outliers nor background.
    source = dilate(med - np.nanmedian(med) > math.sqrt(float(np.median(rough_var))), 2)
    outliers = (levelled - med) > OUTLIER_SIGMA * np.sqrt(rough_var)[:, None, None]
    outliers &= ~source
    good = ~dilate(outliers.any(axis=0), 1)
    background = good & ~source & np.all(np.isfinite(cube), axis=0)

    # var(f_j - f_k) = v_j + v_k on the background; pairs at frame distance 1..3 make odd cycles
    # (k, k+1, k+2) so that the least-squares system has one solution.
    pix = np.flatnonzero(background)
    pix = np.sort(rng.choice(pix, min(sample, pix.size), replace=False))
    samp = cube.reshape(n, -1)[:, pix].astype(np.float64)
    pairs = sorted({tuple(sorted((k, (k + d) % n))) for k in range(n)
                    for d in range(1, min(3, n - 1) + 1)})
    a = np.zeros((len(pairs), n))
    b = np.empty(len(pairs))
    for row, (j, k) in enumerate(pairs):
        a[row, j] = a[row, k] = 1.0
        b[row] = np.var(samp[j] - samp[k])
    frame_var = np.maximum(np.linalg.lstsq(a, b, rcond=None)[0], 1e-12)

    with_outliers = [k for k in range(n) if outliers[k].any()]
    pick = np.linspace(0, len(with_outliers) - 1, min(len(with_outliers), max_folds))
    folds = np.array([with_outliers[int(round(i))] for i in pick], int)
    half = n // 2
    splits = []
    if half >= 2:
        for _ in range(n_splits):
            perm = rng.permutation(n)
            splits.append((np.sort(perm[:half]), np.sort(perm[half:2 * half])))
    return LooContext(frame_var=frame_var, outliers=outliers, good=good, background=background,
                      folds=np.unique(folds), splits=splits)


def loo_quality(ctx: LooContext, cube: np.ndarray, combine, image: np.ndarray,
                count: np.ndarray | None) -> dict:
    """Truth-free metrics of one method (module docstring).

    ``combine(sub_cube) -> image`` combines frames with the method; ``image``/``count`` are its
    result on the whole ``cube``.
    """
    n = cube.shape[0]
    bg = ctx.background
    ratios = []
    for a, b in ctx.splits:
        d = np.asarray(combine(cube[a]), np.float64)[bg] - np.asarray(combine(cube[b]))[bg]
        ideal = (ctx.frame_var[a].sum() / a.size**2 + ctx.frame_var[b].sum() / b.size**2)
        ratios.append(math.sqrt(float(np.nanvar(d)) / ideal))
    ideal_all = math.sqrt(float(ctx.frame_var.sum()) / n**2)
    resid = []
    for k in ctx.folds:
        loo = np.asarray(combine(cube[np.delete(np.arange(n), k)]), np.float64)
        diff = image - loo
        diff -= np.nanmedian(diff[bg])  # each stack is normalised to its own first frame
        resid.append(diff[ctx.outliers[k]] / ideal_all)
    rms, mx = residual_stats(np.concatenate(resid)) if resid else (None, None)
    return {"noise_ratio": _nan_to_none(float(np.median(ratios))) if ratios else None,
            "artefact_rms_sigma": rms, "artefact_max_sigma": mx,
            "n_folds": int(ctx.folds.size),
            "outlier_pixels": int(sum(int(ctx.outliers[k].sum()) for k in ctx.folds)),
            "good_rejected_pct": rejected_pct(count, ctx.good, n)}
