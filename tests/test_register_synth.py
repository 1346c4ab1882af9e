"""Synthetic star fields with known truth for the registration tests (and checks of the generator).

A *catalogue* holds stars in reference-frame pixel coordinates (0-based, (x, y) = (column, row)).
A frame is rendered from it through a known map ``G`` (reference pixel → frame pixel): shift,
rotation about the frame centre, scale and an optional polynomial distortion. Registration must
recover ``T = G⁻¹`` (frame pixel → reference pixel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from skystack.demo_data import moffat_stars


@dataclass(frozen=True)
class TrueMap:
    """Reference pixel → frame pixel: ``p_f = c + s R(θ) (p_r - c) + (dx, dy) + D(p_r - c)``,
    with ``c`` the frame centre and ``D`` a cubic distortion ``k3 * r² * (p - c) / half²`` plus a
    quadratic term ``k2 * (u², v²)`` (u, v = (p - c) / half)."""

    shape: tuple[int, int]
    dx: float = 0.0
    dy: float = 0.0
    theta_deg: float = 0.0
    scale: float = 1.0
    k2: float = 0.0  # px at the frame edge
    k3: float = 0.0  # px at the frame edge

    @property
    def centre(self) -> tuple[float, float]:
        return (self.shape[1] - 1) / 2.0, (self.shape[0] - 1) / 2.0

    def forward(self, x, y):
        cx, cy = self.centre
        half = max(self.shape) / 2.0
        u = np.asarray(x, float) - cx
        v = np.asarray(y, float) - cy
        t = math.radians(self.theta_deg)
        c, s = math.cos(t), math.sin(t)
        xf = cx + self.scale * (c * u - s * v) + self.dx
        yf = cy + self.scale * (s * u + c * v) + self.dy
        un, vn = u / half, v / half
        r2 = un * un + vn * vn
        xf = xf + self.k3 * r2 * un + self.k2 * un * un
        yf = yf + self.k3 * r2 * vn + self.k2 * vn * vn
        return xf, yf

    def inverse(self, xf, yf, iters: int = 50):
        """Frame pixel → reference pixel (Newton iterations on :meth:`forward`)."""
        xf = np.asarray(xf, float)
        yf = np.asarray(yf, float)
        cx, cy = self.centre
        t = math.radians(self.theta_deg)
        c, s = math.cos(t), math.sin(t)
        a = (xf - cx - self.dx) / self.scale
        b = (yf - cy - self.dy) / self.scale
        x = cx + c * a + s * b
        y = cy - s * a + c * b
        for _ in range(iters):
            fx, fy = self.forward(x, y)
            ex, ey = xf - fx, yf - fy
            x = x + (c * ex + s * ey) / self.scale
            y = y + (-s * ex + c * ey) / self.scale
            if max(np.abs(ex).max(initial=0), np.abs(ey).max(initial=0)) < 1e-12:
                break
        return x, y


def catalogue(n: int, shape: tuple[int, int], rng: np.random.Generator, margin: float = 150.0,
              flux_range=(3e3, 3e5)):
    """``n`` stars over the frame area plus ``margin`` px, fluxes (e-) log-uniform in range."""
    rows, cols = shape
    x = rng.uniform(-margin, cols - 1 + margin, n)
    y = rng.uniform(-margin, rows - 1 + margin, n)
    flux = np.exp(rng.uniform(math.log(flux_range[0]), math.log(flux_range[1]), n))
    return x, y, flux


def gaussian_stars(shape, x, y, flux, fwhm_major, fwhm_minor=None, theta=0.0, oversample=5,
                   half=12):
    """Elliptical Gaussian stars integrated over pixels (``theta``: major axis from +x, rad)."""
    fwhm_minor = fwhm_major if fwhm_minor is None else fwhm_minor
    k = 2.0 * math.sqrt(2.0 * math.log(2.0))
    sa, sb = fwhm_major / k, fwhm_minor / k
    c, s = math.cos(theta), math.sin(theta)
    image = np.zeros(shape)
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    off = np.arange(-half, half + 1)
    for xi, yi, fi in zip(x, y, flux):
        ix, iy = int(round(xi)), int(round(yi))
        gx = (off[None, :, None, None] + ix + sub[None, None, None, :]) - xi
        gy = (off[:, None, None, None] + iy + sub[None, None, :, None]) - yi
        u = c * gx + s * gy
        v = -s * gx + c * gy
        val = np.exp(-0.5 * (u * u / sa**2 + v * v / sb**2)).mean(axis=(2, 3))
        val *= fi / (2 * math.pi * sa * sb)
        r0, c0 = iy - half, ix - half
        rs = slice(max(0, r0), min(shape[0], iy + half + 1))
        cs = slice(max(0, c0), min(shape[1], ix + half + 1))
        if rs.start >= rs.stop or cs.start >= cs.stop:
            continue
        image[rs, cs] += val[rs.start - r0:rs.stop - r0, cs.start - c0:cs.stop - c0]
    return image


def render_frame(truth: TrueMap, cat, rng: np.random.Generator, *, fwhm: float = 3.0,
                 sky: float = 200.0, read_noise: float = 5.0, hot_pixels: int = 0,
                 cosmic_rays: int = 0, beta: float = 3.5) -> np.ndarray:
    """A float32 frame (ADU, gain 1) of the catalogue seen through ``truth``: Moffat stars, sky,
    Poisson and read noise, optional hot pixels and cosmic rays (single pixels and tracks)."""
    x, y, flux = cat
    xf, yf = truth.forward(x, y)
    rows, cols = truth.shape
    inside = (xf > -20) & (xf < cols + 20) & (yf > -20) & (yf < rows + 20)
    image = moffat_stars(truth.shape, xf[inside], yf[inside], flux[inside], fwhm, beta=beta)
    image += sky
    image = rng.poisson(image).astype(np.float64) + rng.normal(0, read_noise, truth.shape)
    if hot_pixels:
        r = rng.integers(0, rows, hot_pixels)
        c = rng.integers(0, cols, hot_pixels)
        image[r, c] += rng.uniform(2e3, 4e4, hot_pixels)
    for _ in range(cosmic_rays):
        y0, x0 = rng.uniform(0, rows - 1), rng.uniform(0, cols - 1)
        length = rng.uniform(0, 20)
        ang = rng.uniform(0, math.pi)
        t = np.arange(0, length + 0.5, 0.5)
        py = np.clip(np.rint(y0 + t * math.sin(ang)).astype(int), 0, rows - 1)
        px = np.clip(np.rint(x0 + t * math.cos(ang)).astype(int), 0, cols - 1)
        image[py, px] += rng.uniform(1e3, 2e4)
    return image.astype(np.float32)


def grid_error(transform, truth: TrueMap, step: int = 16) -> np.ndarray:
    """|T(p_f) - G⁻¹(p_f)| (px) over a grid of frame positions ``p_f`` every ``step`` px."""
    rows, cols = truth.shape
    yy, xx = np.mgrid[0:rows:step, 0:cols:step]
    xf, yf = xx.ravel().astype(float), yy.ravel().astype(float)
    xr, yr = transform(xf, yf)
    tx, ty = truth.inverse(xf, yf)
    return np.hypot(xr - tx, yr - ty)


def test_true_map_inverse_round_trips():
    truth = TrueMap((300, 400), dx=12.3, dy=-7.1, theta_deg=2.5, scale=1.01, k2=1.5, k3=2.0)
    yy, xx = np.mgrid[0:300:10, 0:400:10]
    xr, yr = truth.inverse(xx.ravel(), yy.ravel())
    xf, yf = truth.forward(xr, yr)
    assert np.abs(xf - xx.ravel()).max() < 1e-9 and np.abs(yf - yy.ravel()).max() < 1e-9


def test_gaussian_star_total_flux_and_centre():
    img = gaussian_stars((41, 41), [20.3], [19.6], [1e4], 4.0, 2.0, 0.4)
    assert abs(img.sum() - 1e4) < 1.0
    yy, xx = np.mgrid[0:41, 0:41]
    assert abs((img * xx).sum() / img.sum() - 20.3) < 1e-3
    assert abs((img * yy).sum() / img.sum() - 19.6) < 1e-3
