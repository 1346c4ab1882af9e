"""Synthetic, already-aligned stacks of calibrated light frames with a known noiseless truth.

Every frame ``k`` is, in ADU::

    frame_k = Poisson(gain * (sky_k + stars_k)) / gain + Normal(0, read_noise)
              + cosmic_rays_k + trail_k

* ``sky_k`` is :data:`SKY_ADU` except for a few frames (about one in eight, never frame 0) whose
  sky is :data:`BRIGHT_SKY_FACTOR` times brighter (moonlight, twilight), so that an additive
  normalisation (``--zero median``) matters;
* ``stars_k`` are Moffat stars (:func:`skystack.demo_data.moffat_stars`) at fixed positions
  with known total fluxes, faint (per-frame S/N of 1 to 6 in an aperture) and bright, rendered
  with each frame's own seeing (FWHM 2.6 to 3.6 px), so that medians and clipping are tested on
  star cores that really change from frame to frame;
* cosmic rays (:func:`skystack.demo_data.cosmic_rays`: single pixels, blobs, short tracks of
  800 to 9000 ADU), about 20 events per frame and megapixel;
* one satellite trail in one frame: a straight line across the whole image with a Gaussian
  cross-section (FWHM 2.8 px) of :data:`TRAIL_PEAK_SIGMA` times the frame's sky noise at its
  crest, whose wings fade into the noise as real trails do.

The truth (:attr:`SyntheticStack.reference`) is what a perfect combine normalised to the first
frame returns: ``sky_0`` plus the mean of the frames' star images. :attr:`SyntheticStack.variance`
is the variance of the plain mean of the artefact-free frames at each pixel, ``sum_k var_k / N^2``
(``var_k = read_noise^2 + (sky_k + stars_k) / gain``): the ideal ``sigma / sqrt(N)`` that the
noise of every method is compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..demo_data import MOFFAT_BETA, cosmic_rays, moffat_stars, seeded_rng

SKY_ADU = 800.0  # sky per frame, ADU
GAIN = 1.5  # e-/ADU
READ_NOISE = 5.0  # ADU
BRIGHT_SKY_FACTOR = 1.4
FAINT_FLUX = (300.0, 1500.0)  # total ADU per frame, log-uniform
BRIGHT_FLUX = (3e4, 3e5)
FAINT_DENSITY = 1 / 1500  # stars per pixel
BRIGHT_DENSITY = 1 / 8000
FWHM_RANGE = (2.6, 3.6)  # px
CR_CALLS_PER_MPIX = 10  # calls of cosmic_rays (1-3 events each) per frame and megapixel
TRAIL_PEAK_SIGMA = 15.0
TRAIL_SIGMA_PX = 1.2
SEED = 20261201


@dataclass
class SyntheticStack:
    """A stack and its truth. Arrays are ``(y, x)``; values in ADU; masks are ``(ny, nx)``."""

    frames: np.ndarray  # (N, ny, nx) float32
    reference: np.ndarray  # (ny, nx) float64: the ideal combined image
    variance: np.ndarray  # (ny, nx) float64: variance of the ideal mean of N clean frames
    star_image: np.ndarray  # (ny, nx) float64: mean star light, no sky
    sky: np.ndarray  # (N,) sky of each frame, ADU
    fwhm: np.ndarray  # (N,) seeing of each frame, px
    star_x: np.ndarray
    star_y: np.ndarray
    star_flux: np.ndarray  # total ADU per frame
    star_bright: np.ndarray  # bool
    cr_mask: np.ndarray  # pixels hit by a cosmic ray in any frame
    trail_mask: np.ndarray  # pixels where the trail exceeds the frame's sky noise
    artefact_mask: np.ndarray  # every pixel an artefact touches at all (dilated)
    background_mask: np.ndarray  # star-free, artefact-free pixels away from the edges
    frame_sigma: float  # sky noise of frame 0, ADU
    trail_frame: int | None
    bright_sky_frames: tuple[int, ...]
    seed: int

    @property
    def n_frames(self) -> int:
        return self.frames.shape[0]

    def describe(self) -> dict:
        """JSON-ready description of how the stack was made."""
        return {
            "model": "aligned calibrated lights: sky + Moffat stars, Poisson and read noise, "
                     "cosmic rays, one satellite trail, some frames with a brighter sky",
            "n_frames": self.n_frames, "shape": list(self.frames.shape[1:]),
            "seed": self.seed, "gain_e_per_adu": GAIN, "read_noise_adu": READ_NOISE,
            "sky_adu": [float(s) for s in self.sky],
            "bright_sky_frames": list(self.bright_sky_frames),
            "fwhm_px": [round(float(f), 3) for f in self.fwhm], "moffat_beta": MOFFAT_BETA,
            "frame_sigma_adu": round(self.frame_sigma, 3),
            "ideal_sigma_adu": round(float(np.sqrt(self.variance[self.background_mask].mean()))
                                     if self.background_mask.any() else math.nan, 4),
            "n_faint_stars": int((~self.star_bright).sum()),
            "n_bright_stars": int(self.star_bright.sum()),
            "faint_flux_adu": list(FAINT_FLUX), "bright_flux_adu": list(BRIGHT_FLUX),
            "cosmic_ray_pixels": int(self.cr_mask.sum()), "trail_frame": self.trail_frame,
            "trail_pixels": int(self.trail_mask.sum()),
            "trail_peak_sigma": TRAIL_PEAK_SIGMA,
            "background_pixels": int(self.background_mask.sum()),
        }


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square (shifts; no SciPy needed)."""
    out = mask.copy()
    ny, nx = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ys, yd = slice(max(0, -dy), ny - max(0, dy)), slice(max(0, dy), ny - max(0, -dy))
            xs, xd = slice(max(0, -dx), nx - max(0, dx)), slice(max(0, dx), nx - max(0, -dx))
            out[yd, xd] |= mask[ys, xs]
    return out


def _trail(shape: tuple[int, int], rng: np.random.Generator, peak: float) -> np.ndarray:
    """A straight trail through the central third of the image at a random angle, ADU."""
    ny, nx = shape
    y0 = rng.uniform(ny / 3, 2 * ny / 3)
    x0 = rng.uniform(nx / 3, 2 * nx / 3)
    angle = rng.uniform(0.15, math.pi - 0.15)  # never exactly along rows or columns
    yy, xx = np.mgrid[0:ny, 0:nx]
    d = (xx - x0) * math.sin(angle) - (yy - y0) * math.cos(angle)
    return peak * np.exp(-0.5 * (d / TRAIL_SIGMA_PX) ** 2)


def make_stack(n_frames: int, shape: tuple[int, int], seed: int = SEED) -> SyntheticStack:
    """Render ``n_frames`` frames of ``shape`` (ny, nx) and their truth (see module docstring).

    The same ``seed``, ``n_frames`` and ``shape`` always give the same stack.
    """
    if n_frames < 2:
        raise ValueError("a stack needs at least 2 frames")
    ny, nx = shape
    npix = ny * nx
    rng = seeded_rng(seed, "bench", n_frames, ny, nx)
    margin = min(16, max(2, min(ny, nx) // 8))
    n_faint = max(3, round(npix * FAINT_DENSITY))
    n_bright = max(2, round(npix * BRIGHT_DENSITY))
    x = rng.uniform(margin, nx - 1 - margin, n_faint + n_bright)
    y = rng.uniform(margin, ny - 1 - margin, n_faint + n_bright)
    lo, hi = np.log(FAINT_FLUX), np.log(BRIGHT_FLUX)
    flux = np.exp(np.concatenate([rng.uniform(*lo, n_faint), rng.uniform(*hi, n_bright)]))
    bright = np.arange(n_faint + n_bright) >= n_faint

    n_bright_sky = n_frames // 8 if n_frames >= 4 else 0
    bright_sky = tuple(sorted(int(i) for i in rng.choice(np.arange(1, n_frames), n_bright_sky,
                                                         replace=False)))
    sky = np.full(n_frames, SKY_ADU)
    sky[list(bright_sky)] *= BRIGHT_SKY_FACTOR
    fwhm = rng.uniform(*FWHM_RANGE, n_frames)
    frame_sigma = math.sqrt(READ_NOISE**2 + SKY_ADU / GAIN)
    trail_frame = n_frames // 2 if n_frames >= 3 else None

    frames = np.empty((n_frames, ny, nx), np.float32)
    star_sum = np.zeros(shape)
    var_sum = np.zeros(shape)
    cr_mask = np.zeros(shape, bool)
    trail_signal = np.zeros(shape)
    cr_calls = max(2, round(CR_CALLS_PER_MPIX * npix / 1e6))
    for k in range(n_frames):
        stars = moffat_stars(shape, x, y, flux, float(fwhm[k]))
        star_sum += stars
        expected = sky[k] + stars
        var_sum += READ_NOISE**2 + expected / GAIN
        adu = rng.poisson(expected * GAIN) / GAIN + rng.normal(0.0, READ_NOISE, shape)
        for _ in range(cr_calls):
            cy, cx, cr_adu = cosmic_rays(shape, rng)
            np.add.at(adu, (cy, cx), cr_adu)
            cr_mask[cy, cx] = True
        if k == trail_frame:
            trail_signal = _trail(shape, rng, TRAIL_PEAK_SIGMA * frame_sigma)
            adu += trail_signal
        frames[k] = adu

    star_image = star_sum / n_frames
    trail_mask = trail_signal > frame_sigma
    artefact = dilate(cr_mask, 1) | dilate(trail_signal > 0.05 * frame_sigma, 1)
    edge = np.zeros(shape, bool)
    edge[margin:ny - margin, margin:nx - margin] = True
    background = (star_image < 0.01 * frame_sigma) & ~artefact & edge
    return SyntheticStack(
        frames=frames, reference=sky[0] + star_image, variance=var_sum / n_frames**2,
        star_image=star_image, sky=sky, fwhm=fwhm, star_x=x, star_y=y, star_flux=flux,
        star_bright=bright, cr_mask=cr_mask & ~trail_mask, trail_mask=trail_mask,
        artefact_mask=artefact, background_mask=background, frame_sigma=frame_sigma,
        trail_frame=trail_frame, bright_sky_frames=bright_sky, seed=seed)


def sweep_cube(frames: np.ndarray, n: int) -> np.ndarray:
    """``n`` frames for timing only, cycling through ``frames``; repeats are shifted along x
    (by 7 px per cycle) so that no two frames hold the same values at a pixel."""
    m = frames.shape[0]
    out = np.empty((n, *frames.shape[1:]), frames.dtype)
    for k in range(n):
        out[k] = np.roll(frames[k % m], 7 * (k // m), axis=1)
    return out
