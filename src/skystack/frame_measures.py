"""Frame weights and normalisation measured from the pixels (``--weights bgnoise|stars|
psf-signal``, ``--scale stars|regression``, ``--zero regression``).

Every measurement is made before the tile loop, on a sample or a region of each frame (never a
whole large frame), and a frame where it fails (no stars, no noise) is refused with a one-line
error naming the file: a silent default weight would be a wrong product.

Definitions (frame k, the first frame is the reference; the combine uses ``v * s_k + z_k``):

* **Background noise** ``sigma_k``: the robust standard deviation of a pixel sample (up to
  :data:`NOISE_PIXELS` pixels in 32 bands of rows, :func:`skystack.normalization.sample_rows`):
  values beyond 3 sigma of the median are clipped, sigma = 1.4826 x the median absolute
  deviation, iterated until no value is clipped (at most 5 times). Stars and cosmic rays are
  clipped away; what remains is the sky's pixel-to-pixel noise.
* ``--weights bgnoise``: ``w_k = 1 / (s_k sigma_k)^2``, the inverse variance of the *scaled*
  values (the zero offset does not change it).
* ``--weights stars``: ``w_k = N_k / FWHM_k^2``, ``N_k`` the stars detected at 5 sigma and kept
  as stars, ``FWHM_k`` their median FWHM in pixels (:mod:`skystack.register.stars`). More stars
  (transparency, sky noise) and sharper ones (seeing) weigh more; independent of scaling.
* ``--weights psf-signal`` (PixInsight's PSF Signal Weight in spirit): ``w_k = (F_k /
  rms_k)^2``, ``F_k`` the summed flux of frame k's ``M`` brightest stars (``M`` the smallest
  star count of all frames, at most 100, so that every frame sums the same stars' worth) and
  ``rms_k`` the frame's background rms. It is the inverse variance of the frame once
  photometrically normalised, so it is unchanged by any ``--scale``.
* ``--scale stars``: stars are detected in the reference and in frame k, frame k's positions
  mapped onto the reference's pixels (identity for ``combine``: the frames are aligned; through
  both WCS for ``stack``), matched within ``max(2, FWHM)`` pixels (saturated and edge stars
  left out), and measured with the same circular aperture (radius 2.5 x the larger median FWHM)
  and local sky (sep's background map) in both frames. ``s_k`` is the median of the
  flux ratios ``F_ref / F_k`` after 3-sigma clipping (MAD) in log space; at least
  :data:`MIN_MATCHED` matches are needed. Star regions: the central :data:`STAR_REGION`
  square of large frames.
* ``--scale regression`` / ``--zero regression``: each frame's sample is regressed on the
  reference's sample at the same pixels (``combine``: the frames are aligned) or at the same
  sky positions (``stack``: frame k resampled bilinearly onto the reference's pixels, the
  reference smoothed to match that resampling: :mod:`skystack.sky_sample`). Both are first
  averaged in 8x8 blocks (noise down 8x, and star flux kept whatever the seeing), then
  ``ref = a x + b`` is fitted by Deming regression (errors in both variables, their variance
  ratio from the two frames' measured block noise; ordinary least squares would bias the slope
  low by the noise of x) with 3-sigma (MAD) clipping of the residuals, iterated until stable.
  ``s_k = a``; ``z_k = b``. With ``--zero regression`` and any other scale, ``z_k`` is the
  clipped median of ``ref - s_k x``.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np

from .config import CombineOptions
from .core.frame import Frame
from .core.tiles import Tile
from .errors import SkystackError
from .sky_sample import block_means, matched_block_samples

NOISE_PIXELS = 65_536  # the MAD sigma of 65k values is good to ~0.4 %
STAR_REGION = 1024
MIN_MATCHED = 3
BLOCK = 8
# Blocks of sky a stack's frame must share with the reference for a regression.
MIN_COMMON_BLOCKS = 30
_MAD_TO_SIGMA = 1.482602218505602

MEASURED_WEIGHTS = ("bgnoise", "stars", "psf-signal")
MEASURED_SCALES = ("stars", "regression")
MEASURED_ZEROS = ("regression",)


def robust_sigma(values: np.ndarray, clip: float = 3.0, maxiters: int = 5) -> float:
    """Standard deviation of ``values`` (finite, 1-D) from the MAD after iterative clipping at
    ``clip`` sigma about the median; NaN for fewer than 2 values."""
    v = np.asarray(values, np.float64)
    for _ in range(maxiters):
        if v.size < 2:
            return math.nan
        med = np.median(v)
        sigma = _MAD_TO_SIGMA * float(np.median(np.abs(v - med)))
        kept = v[np.abs(v - med) <= clip * sigma]
        if kept.size == v.size:
            break
        v = kept
    return _MAD_TO_SIGMA * float(np.median(np.abs(v - np.median(v)))) if v.size >= 2 else math.nan


def background_sigma(frame: Frame) -> float:
    """Robust background noise of a frame from a sample of its rows (module docstring), in the
    frame's units; a one-line error when it cannot be measured or is 0."""
    from .sampling import frame_sample, sample_rows

    sigma = robust_sigma(frame_sample(frame, sample_rows(frame.shape, NOISE_PIXELS)))
    if not (math.isfinite(sigma) and sigma > 0):
        raise SkystackError(f"{frame.label}: background noise is {sigma:g} (flat or empty "
                            "frame), cannot weight by it")
    return sigma


def star_region(shape: tuple[int, int]) -> Tile:
    """The central (at most :data:`STAR_REGION` square) region whose stars are measured."""
    rows, cols = shape
    h, w = min(rows, STAR_REGION), min(cols, STAR_REGION)
    r0, c0 = (rows - h) // 2, (cols - w) // 2
    return Tile(r0, r0 + h, c0, c0 + w)


@dataclass
class FrameStars:
    """A frame's star region: its tile, its stars (positions relative to the tile) and, for
    photometry, its sky-subtracted pixels (0 where missing) and their missing-data mask."""

    tile: Tile
    stars: object  # skystack.register.stars.StarList
    subtracted: np.ndarray | None = None
    bad: np.ndarray | None = None


def frame_stars(frame: Frame, photometry: bool = False) -> FrameStars:
    """Read a frame's star region and detect its stars (``photometry``: keep its pixels less
    the sky, sep's background map on 32-pixel meshes: clipped per mesh, so neighbouring stars
    do not lift it as an annulus mean would, and it follows offsets and gradients); a one-line
    error naming the file when it has no stars."""
    import sep

    from .register.stars import measure_stars

    tile = star_region(frame.shape)
    pixels = np.empty((tile.r1 - tile.r0, tile.c1 - tile.c0), np.float32)
    frame.source.read(tile, pixels)
    stars = measure_stars(pixels)
    if stars.n_stars == 0 or not math.isfinite(stars.median_fwhm):
        raise SkystackError(f"{frame.label}: no stars detected, cannot measure its "
                            "star weight or star scale")
    if not photometry:
        return FrameStars(tile, stars)
    bad = ~np.isfinite(pixels)
    clean = np.where(bad, np.float32(0), pixels)
    mesh = int(min(32, max(8, min(pixels.shape) // 4)))
    sky = sep.Background(clean, mask=bad, bw=mesh, bh=mesh, fw=3, fh=3)
    return FrameStars(tile, stars, clean - sky.back(), bad)


def star_weight(fs: FrameStars) -> float:
    """``N / FWHM^2`` (module docstring)."""
    return fs.stars.n_stars / fs.stars.median_fwhm ** 2


def psf_signal_weights(measured: list[FrameStars], frames: list[Frame]) -> np.ndarray:
    """``(F_k / rms_k)^2`` with F the summed flux of the M brightest stars (module docstring)."""
    m = min(100, min(fs.stars.n_stars for fs in measured))
    out = np.empty(len(measured))
    for k, (fs, f) in enumerate(zip(measured, frames)):
        rms = fs.stars.background_rms
        if not (math.isfinite(rms) and rms > 0):
            raise SkystackError(f"{f.label}: background rms is {rms:g}, cannot compute its "
                                "PSF signal weight")
        out[k] = (float(np.sum(np.sort(fs.stars.flux)[::-1][:m])) / rms) ** 2
    return out


def _clipped_median(values: np.ndarray, clip: float = 3.0) -> float:
    v = values[np.isfinite(values)]
    for _ in range(10):
        med = np.median(v)
        sigma = _MAD_TO_SIGMA * np.median(np.abs(v - med))
        kept = v[np.abs(v - med) <= clip * sigma] if sigma > 0 else v
        if kept.size == v.size:
            break
        v = kept
    return float(np.median(v))


def _aperture_flux(fs: FrameStars, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Flux above the sky in circles of radius ``r`` (exact pixel overlap) of a frame's
    sky-subtracted region; NaN where the aperture touches missing data or the region's edge."""
    import sep

    data = fs.subtracted
    flux, _, flag = sep.sum_circle(data, x, y, r, mask=fs.bad, subpix=0)
    edge = ((x - r < 0) | (y - r < 0) | (x + r > data.shape[1] - 1)
            | (y + r > data.shape[0] - 1))
    return np.where(edge | (flag != 0), np.nan, flux)


def star_flux_ratio(ref: FrameStars, other: FrameStars, label: str, to_ref=None) -> float:
    """``s`` such that ``s x other`` has the reference's star fluxes (module docstring).

    ``to_ref(x, y)`` maps full-frame pixel positions of ``other`` onto the reference's (None:
    the same pixels)."""
    from scipy.spatial import cKDTree

    from .register.stars import EDGE, SATURATED

    good_r = (ref.stars.flags & (EDGE | SATURATED)) == 0
    good_o = (other.stars.flags & (EDGE | SATURATED)) == 0
    xo = other.stars.x[good_o] + other.tile.c0
    yo = other.stars.y[good_o] + other.tile.r0
    if to_ref is not None:
        xo, yo = to_ref(xo, yo)
    xr = ref.stars.x[good_r] + ref.tile.c0
    yr = ref.stars.y[good_r] + ref.tile.r0
    fwhm = max(ref.stars.median_fwhm, other.stars.median_fwhm)
    ratio = np.empty(0)
    if xr.size and xo.size:
        dist, idx = cKDTree(np.column_stack([xr, yr])).query(np.column_stack([xo, yo]))
        ok = dist <= max(2.0, fwhm)
        r_idx, o_idx = idx[ok], np.flatnonzero(ok)
        # One match per reference star: a reference star matched twice is ambiguous.
        uniq, counts = np.unique(r_idx, return_counts=True)
        single = np.isin(r_idx, uniq[counts == 1])
        r_idx, o_idx = r_idx[single], o_idx[single]
        radius = 2.5 * fwhm
        f_ref = _aperture_flux(ref, ref.stars.x[good_r][r_idx],
                               ref.stars.y[good_r][r_idx], radius)
        f_oth = _aperture_flux(other, other.stars.x[good_o][o_idx],
                               other.stars.y[good_o][o_idx], radius)
        ok = np.isfinite(f_ref) & np.isfinite(f_oth) & (f_ref > 0) & (f_oth > 0)
        ratio = np.log(f_ref[ok] / f_oth[ok])
    if ratio.size < MIN_MATCHED:
        raise SkystackError(f"{label}: only {ratio.size} stars matched with the reference "
                            f"frame (at least {MIN_MATCHED} needed for --scale stars)")
    return math.exp(_clipped_median(ratio))


def regression_rows(shape: tuple[int, int]) -> np.ndarray:
    """Rows of the regression sample: up to 32 bands of 2 blocks of rows (all rows of small
    frames), so that the 8x8 block averages lie inside a band."""
    rows = shape[0]
    n_blocks = rows // BLOCK
    if n_blocks * BLOCK <= 64 * BLOCK:
        return np.arange(n_blocks * BLOCK)
    starts = np.linspace(0, n_blocks - 2, 32).round().astype(int) * BLOCK
    return np.unique((starts[:, None] + np.arange(2 * BLOCK)[None, :]).ravel())


def block_sample(frame: Frame, rows: np.ndarray) -> np.ndarray:
    """8x8 block means of the given rows (a multiple of 8 rows, block-aligned), NaN where a
    block has any missing pixel; 1-D."""
    from .sampling import read_rows

    return block_means(read_rows(frame, rows), BLOCK)


def _block_noise(values: np.ndarray) -> float:
    """Noise of one block mean: the robust sigma of neighbour differences over sqrt(2). Blocks
    that are NaN (a masked or missing pixel) are left out: one NaN made the noise NaN and the
    Deming fit fall back to equal noise in both frames."""
    values = np.asarray(values)
    return robust_sigma(np.diff(values[np.isfinite(values)])) / math.sqrt(2.0)


def deming_fit(x: np.ndarray, y: np.ndarray, sx: float, sy: float,
               label: str) -> tuple[float, float]:
    """Clipped Deming fit ``y = a x + b`` (module docstring); ``sx``, ``sy``: noise of x, y."""
    keep = np.isfinite(x) & np.isfinite(y)
    delta = (sy / sx) ** 2 if sx > 0 else 1.0
    a = b = math.nan
    for _ in range(20):
        if keep.sum() < 10:
            break
        xm, ym = x[keep].mean(), y[keep].mean()
        dx, dy = x[keep] - xm, y[keep] - ym
        sxx, syy, sxy = (dx * dx).mean(), (dy * dy).mean(), (dx * dy).mean()
        if sxy <= 0:
            break
        d = syy - delta * sxx
        a = (d + math.sqrt(d * d + 4 * delta * sxy * sxy)) / (2 * sxy)
        b = ym - a * xm
        resid = y - a * x - b
        finite = np.isfinite(resid)
        med = np.median(resid[keep])
        sigma = _MAD_TO_SIGMA * np.median(np.abs(resid[keep] - med))
        new = finite & (np.abs(resid - med) <= 3.0 * max(sigma, 1e-30))
        if np.array_equal(new, keep):
            break
        keep = new
    if not (math.isfinite(a) and a > 0):
        raise SkystackError(f"{label}: no linear relation with the reference frame's pixels "
                            "(flat or unrelated frame): cannot fit --scale/--zero regression")
    return a, b


def regression_params(frames: list[Frame], scale: np.ndarray | None,
                      wcs_list=None) -> tuple[np.ndarray, np.ndarray]:
    """``(s, z)`` of each frame by regression on the reference (module docstring); ``scale``
    given: only the zero, for those scales. ``wcs_list``: the frames' WCS when they are not
    aligned (a stack): each frame is compared with the reference at the same sky positions
    (:func:`skystack.sky_sample.matched_block_samples`)."""
    shapes = {f.shape for f in frames}
    if len(shapes) > 1 and wcs_list is None:
        raise SkystackError(f"{frames[-1].label}: --scale/--zero regression compares pixels "
                            "and needs frames of one shape (aligned)")
    rows = regression_rows(frames[0].shape)
    if rows.size == 0 or frames[0].shape[1] < BLOCK:
        raise SkystackError(f"{frames[0].label}: too small for --scale/--zero regression "
                            f"(at least {BLOCK}x{BLOCK} pixels)")
    y = block_sample(frames[0], rows)
    sy = _block_noise(y)
    s = np.ones(len(frames))
    z = np.zeros(len(frames))
    for k, f in enumerate(frames[1:], start=1):
        yk, syk = y, sy
        if f is frames[0]:
            x = y
        elif wcs_list is None:
            x = block_sample(f, rows)
        else:
            yk, x = matched_block_samples(frames[0], f, wcs_list[0], wcs_list[k], rows, BLOCK)
            common = int(np.sum(np.isfinite(yk) & np.isfinite(x)))
            if common < MIN_COMMON_BLOCKS:
                raise SkystackError(
                    f"{f.label}: shares only {common} of the sampled {BLOCK}x{BLOCK}-pixel blocks "
                    f"with the reference frame {frames[0].label} (at least {MIN_COMMON_BLOCKS}): "
                    "too little sky in common for --scale/--zero regression")
            syk = _block_noise(yk)
        if scale is None:
            s[k], z[k] = deming_fit(x, yk, _block_noise(x), syk, f.label)
        else:
            s[k] = scale[k]
            z[k] = _clipped_median(yk - scale[k] * x)
    return s, z


@dataclass(frozen=True)
class Measured:
    """What was measured: per-frame scale and zero (None where not measured here) and
    weights (None unless a measured kind)."""

    scale: np.ndarray | None
    zero_fit: np.ndarray | None
    weights: np.ndarray | None


_CACHE: list[tuple[list, tuple, object]] = []


def cached(frames: list[Frame], key: tuple, compute):
    """``compute()``, remembered for the last few calls with these very frame objects and
    ``key``: the header and the combine then measure once. Frames are held by weak reference
    (no frame's pixels kept alive, and a new frame never matches a dead one)."""
    for refs, cached_key, result in _CACHE:
        if cached_key == key and len(refs) == len(frames) and all(
                r() is f for r, f in zip(refs, frames)):
            return result
    result = compute()
    _CACHE.insert(0, ([weakref.ref(f) for f in frames], key, result))
    del _CACHE[8:]
    return result


def needs_measurement(options: CombineOptions) -> bool:
    """Whether any option is measured from the pixels (this module)."""
    return (options.scale in MEASURED_SCALES or options.zero in MEASURED_ZEROS
            or (options.weighted and options.weights.kind in MEASURED_WEIGHTS))


def measure(frames: list[Frame], options: CombineOptions, base_scale,
            wcs_list=None) -> Measured:
    """The measured scale / regression zero / weights of ``frames`` (module docstring).

    ``base_scale()`` gives the scale of the other (not measured) kinds, for the bgnoise weight
    and the regression zero. ``wcs_list``: the frames' WCS for a reprojected stack (star
    positions are matched on the sky). Cached (:func:`cached`)."""
    key = ("measure", options.scale, options.zero, options.weights.kind, options.weighted,
           None if wcs_list is None else tuple(id(w) for w in wcs_list))
    return cached(frames, key, lambda: _measure(frames, options, base_scale, wcs_list))


def _to_reference(wcs_list, k: int):
    if wcs_list is None:
        return None
    w_ref, w_k = wcs_list[0], wcs_list[k]

    def to_ref(x, y):
        ra, dec = w_k.all_pix2world(x, y, 0)
        return w_ref.all_world2pix(ra, dec, 0)
    return to_ref


def _measure(frames, options, base_scale, wcs_list) -> Measured:
    wkind = options.weights.kind if options.weighted else "none"
    star_kinds = options.scale == "stars" or wkind in ("stars", "psf-signal")
    stars = None
    scale = zero_fit = weights = None
    if star_kinds:
        photometry = options.scale == "stars"
        ref = frame_stars(frames[0], photometry)
        stars = [FrameStars(ref.tile, ref.stars)]
        scale = np.ones(len(frames)) if photometry else None
        for k, f in enumerate(frames[1:], start=1):
            fs = frame_stars(f, photometry)
            if photometry:
                scale[k] = star_flux_ratio(ref, fs, f.label, _to_reference(wcs_list, k))
            stars.append(FrameStars(fs.tile, fs.stars))  # the pixels are not kept
    if options.scale == "regression":
        scale, zero_fit = regression_params(frames, None, wcs_list)
    if options.zero == "regression" and zero_fit is None:
        s = scale if scale is not None else np.asarray(base_scale(), np.float64)
        _, zero_fit = regression_params(frames, s, wcs_list)
    if wkind == "bgnoise":
        s = scale if scale is not None else np.asarray(base_scale(), np.float64)
        weights = np.array([1.0 / (sk * background_sigma(f)) ** 2 for sk, f in zip(s, frames)])
    elif wkind == "stars":
        weights = np.array([star_weight(fs) for fs in stars])
    elif wkind == "psf-signal":
        weights = psf_signal_weights(stars, frames)
    return Measured(scale, zero_fit, weights)
