"""Synthetic stacks with a known truth for the resampling and the frame-weights comparisons.

Both are calibrated light frames of sky plus Moffat stars (:func:`skystack.demo_data.moffat_stars`)
with Poisson and read noise (gain :data:`~skystack.bench.truth.GAIN` e-/ADU, read noise
:data:`~skystack.bench.truth.READ_NOISE` ADU), and no artefacts: what is measured is resampling or
weighting, not rejection.

* :func:`make_dithered` (resampling): ``N`` frames of one seeing (FWHM :data:`DITHER_FWHM` px,
  sharp enough for interpolation to broaden it), each dithered by a random sub-pixel shift of up
  to :data:`MAX_SHIFT_PX` and a rotation of up to :data:`MAX_ROTATION_DEG` about its centre, with
  the matching TAN WCS (:func:`skystack.demo_data.frame_wcs`). The output grid is the undithered
  reference WCS; the truth is the noiseless sky plus stars on that grid.
* :func:`make_unequal` (weights): ``N`` aligned frames of unequal exposure time (EXPTIME),
  transparency (star light scaled by ``t_k``) and sky brightness (moonlight on some frames), so
  unequal noise and star flux. Frame 0 (t = 1) is the reference: the truth is its noiseless sky
  plus stars. In reference units (stars scaled by ``a_k = e_k t_k / e_0``) frame k has the
  background noise ``sigma_k / a_k``; the optimal (inverse-variance) mean of the scaled frames
  has the noise ``1 / sqrt(sum_k a_k^2 / sigma_k^2)`` (:attr:`UnequalStack.optimal_sigma`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.wcs import WCS

from ..demo_data import frame_positions, frame_wcs, moffat_stars, reference_wcs, seeded_rng
from .truth import GAIN, READ_NOISE, SEED

DITHER_FWHM = 2.2  # px
MAX_SHIFT_PX = 3.0
MAX_ROTATION_DEG = 0.5
SKY_ADU = 800.0
STAR_FLUX = (2e3, 2e5)  # total ADU per frame, log-uniform
STAR_DENSITY = 1 / 2500  # stars per pixel
BRIGHT_FLUX = 1e4  # stars at least this bright give the flux ratios (S/N > ~100)

EXPTIMES = (120.0, 60.0, 180.0, 300.0)  # s, cycled; frame 0 is the reference
SKY_RATE = 4.0  # ADU/s
MOON_FACTOR = 2.5  # sky brightness of one frame in three (every exposure time in turn)
TRANSPARENCY = (0.5, 1.0)
UNEQUAL_FWHM = (2.6, 3.6)
UNEQUAL_FLUX_RATE = (10.0, 1500.0)  # ADU/s per star, log-uniform


def _noisy(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.poisson(expected * GAIN) / GAIN
            + rng.normal(0.0, READ_NOISE, expected.shape)).astype(np.float32)


def _stars(rng: np.random.Generator, shape: tuple[int, int], margin: int, flux: tuple,
           density: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ny, nx = shape
    n = max(4, round(ny * nx * density))
    x = rng.uniform(margin, nx - 1 - margin, n)
    y = rng.uniform(margin, ny - 1 - margin, n)
    return x, y, np.exp(rng.uniform(*np.log(flux), n))


def _background(star_image: np.ndarray, sigma: float, margin: int) -> np.ndarray:
    ny, nx = star_image.shape
    edge = np.zeros(star_image.shape, bool)
    edge[margin:ny - margin, margin:nx - margin] = True
    return edge & (star_image < 0.01 * sigma)


@dataclass
class DitheredStack:
    """Dithered, rotated frames and their truth on the output grid (arrays ``(y, x)``, ADU)."""

    frames: list[CCDData]  # float32, each with its own WCS (meta and .wcs)
    grid_header: fits.Header  # the output grid: reference WCS and NAXIS1/2
    grid_wcs: WCS
    truth: np.ndarray  # noiseless sky + stars on the grid
    star_image: np.ndarray  # stars alone on the grid
    star_x: np.ndarray  # grid positions, 0-based pixel centres
    star_y: np.ndarray
    star_flux: np.ndarray  # total ADU per frame
    fwhm: float
    frame_sigma: float  # background noise of one frame, ADU
    background_mask: np.ndarray  # star-free, covered by every frame
    dithers: np.ndarray  # (N, 3): dy, dx (px), rotation (deg)
    seed: int

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def ideal_sigma(self) -> float:
        """Noise of the plain mean of N frames without resampling: sigma / sqrt(N)."""
        return self.frame_sigma / math.sqrt(self.n_frames)

    def describe(self) -> dict:
        ny, nx = self.truth.shape
        return {"model": "dithered and rotated frames with WCS: sky + Moffat stars, Poisson "
                         "and read noise, no artefacts; grid = the undithered reference",
                "n_frames": self.n_frames, "shape": [ny, nx], "seed": self.seed,
                "fwhm_px": self.fwhm, "sky_adu": SKY_ADU, "frame_sigma_adu":
                round(self.frame_sigma, 3), "ideal_sigma_adu": round(self.ideal_sigma, 4),
                "max_shift_px": MAX_SHIFT_PX, "max_rotation_deg": MAX_ROTATION_DEG,
                "n_stars": int(self.star_x.size),
                "background_pixels": int(self.background_mask.sum())}


def make_dithered(n_frames: int, shape: tuple[int, int], seed: int = SEED) -> DitheredStack:
    """Render ``n_frames`` dithered frames of ``shape`` (ny, nx) and their truth (module
    docstring); the same arguments always give the same frames."""
    ny, nx = shape
    rng = seeded_rng(seed, "bench-dithered", n_frames, ny, nx)
    margin = min(20, max(4, min(ny, nx) // 8))
    x, y, flux = _stars(rng, shape, margin, STAR_FLUX, STAR_DENSITY)
    ref = reference_wcs(shape)
    star_image = moffat_stars(shape, x, y, flux, DITHER_FWHM)
    frames, dithers = [], []
    for _ in range(n_frames):
        dy, dx = rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX, 2)
        theta = float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
        w = frame_wcs(ref, float(dy), float(dx), theta)
        px, py = frame_positions(x, y, shape, float(dy), float(dx), theta)
        data = _noisy(SKY_ADU + moffat_stars(shape, px, py, flux, DITHER_FWHM), rng)
        header = w.to_header()
        header["EXPTIME"] = 1.0
        frames.append(CCDData(data, unit="adu", wcs=w, meta=header))
        dithers.append((dy, dx, theta))
    grid_header = ref.to_header()
    grid_header["NAXIS"] = 2
    grid_header["NAXIS1"], grid_header["NAXIS2"] = nx, ny
    ref.pixel_shape = (nx, ny)
    sigma = math.sqrt(READ_NOISE**2 + SKY_ADU / GAIN)
    # Frames shifted by up to MAX_SHIFT and turned about their centre leave a border of the grid
    # that some frames miss: measured only inside it.
    border = margin + math.ceil(MAX_SHIFT_PX + math.radians(MAX_ROTATION_DEG) * max(shape))
    return DitheredStack(
        frames=frames, grid_header=grid_header, grid_wcs=ref, truth=SKY_ADU + star_image,
        star_image=star_image, star_x=x, star_y=y, star_flux=flux, fwhm=DITHER_FWHM,
        frame_sigma=sigma, background_mask=_background(star_image, sigma, border),
        dithers=np.array(dithers), seed=seed)


@dataclass
class UnequalStack:
    """Aligned frames of unequal noise and transparency and the reference frame's truth."""

    frames: list[CCDData]  # float32 with EXPTIME
    reference: np.ndarray  # noiseless frame 0: its sky + its stars
    star_image: np.ndarray  # frame 0's stars (mean seeing)
    star_x: np.ndarray
    star_y: np.ndarray
    exptime: np.ndarray  # (N,) s
    transparency: np.ndarray  # (N,)
    sky: np.ndarray  # (N,) ADU
    fwhm: np.ndarray  # (N,) px
    flux_scale: np.ndarray  # (N,) a_k: star flux of frame k relative to frame 0
    frame_sigma: np.ndarray  # (N,) background noise of frame k in its own ADU
    background_mask: np.ndarray
    seed: int

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def optimal_sigma(self) -> float:
        """Background noise of the inverse-variance weighted mean of the frames scaled to frame
        0 (the best any weighting can do)."""
        return float(1.0 / math.sqrt(np.sum(self.flux_scale**2 / self.frame_sigma**2)))

    @property
    def equal_sigma(self) -> float:
        """Background noise of the unweighted mean of the scaled frames."""
        return float(math.sqrt(np.sum((self.frame_sigma / self.flux_scale) ** 2))
                     / self.n_frames)

    def describe(self) -> dict:
        ny, nx = self.reference.shape
        return {"model": "aligned frames of unequal exposure, transparency and sky (moon): "
                         "sky + Moffat stars, Poisson and read noise, no artefacts; truth = "
                         "frame 0",
                "n_frames": self.n_frames, "shape": [ny, nx], "seed": self.seed,
                "exptime_s": self.exptime.tolist(),
                "transparency": [round(float(t), 3) for t in self.transparency],
                "sky_adu": [round(float(s), 1) for s in self.sky],
                "fwhm_px": [round(float(f), 2) for f in self.fwhm],
                "frame_sigma_ref_units": [round(float(s), 3) for s in
                                          self.frame_sigma / self.flux_scale],
                "optimal_sigma_adu": round(self.optimal_sigma, 4),
                "equal_weight_sigma_adu": round(self.equal_sigma, 4),
                "n_stars": int(self.star_x.size)}


def make_unequal(n_frames: int, shape: tuple[int, int], seed: int = SEED) -> UnequalStack:
    """Render ``n_frames`` aligned frames of unequal noise and transparency (module docstring)."""
    if n_frames < 2:
        raise ValueError("a stack needs at least 2 frames")
    ny, nx = shape
    rng = seeded_rng(seed, "bench-unequal", n_frames, ny, nx)
    margin = min(20, max(4, min(ny, nx) // 8))
    x, y, rate = _stars(rng, shape, margin, UNEQUAL_FLUX_RATE, STAR_DENSITY)
    exptime = np.array([EXPTIMES[k % len(EXPTIMES)] for k in range(n_frames)])
    transparency = rng.uniform(*TRANSPARENCY, n_frames)
    transparency[0] = 1.0
    sky = SKY_RATE * exptime
    sky[2::3] *= MOON_FACTOR
    fwhm = rng.uniform(*UNEQUAL_FWHM, n_frames)
    frames = []
    for k in range(n_frames):
        stars = moffat_stars(shape, x, y, rate * exptime[k] * transparency[k], float(fwhm[k]))
        header = fits.Header({"EXPTIME": float(exptime[k]), "IMAGETYP": "LIGHT"})
        frames.append(CCDData(_noisy(sky[k] + stars, rng), unit="adu", meta=header))
    star_image = moffat_stars(shape, x, y, rate * exptime[0], float(np.mean(fwhm)))
    sigma = np.sqrt(READ_NOISE**2 + sky / GAIN)
    return UnequalStack(
        frames=frames, reference=sky[0] + star_image, star_image=star_image, star_x=x,
        star_y=y, exptime=exptime, transparency=transparency, sky=sky, fwhm=fwhm,
        flux_scale=exptime * transparency / exptime[0], frame_sigma=sigma,
        background_mask=_background(star_image, float(sigma.min()), margin), seed=seed)
