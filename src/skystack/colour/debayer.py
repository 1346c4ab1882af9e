"""Demosaicing (debayering) of Bayer CFA images into R, G, B planes.

Methods (:data:`DEBAYER_METHODS`):

* ``bilinear``: each missing colour is the mean of the nearest photosites of that colour
  (2 or 4 neighbours), computed as a *normalised* convolution (the sum of the valid
  neighbours' values over the sum of their weights), so NaN photosites (bad pixels) are left
  out of their neighbours' values instead of spreading;
* ``mhc``: Malvar, He & Cutler (2004), "High-quality linear interpolation for demosaicing of
  Bayer-patterned color images": bilinear corrected by the Laplacian of the colour measured at
  the pixel (5 x 5 linear filters); sharper, with less colour fringing on stars;
* ``menon``: Menon, Andriani & Calvagno (2007), directional filtering with a posteriori
  decision (DDFAPD, :mod:`skystack.colour.menon`): green interpolated along the row or the
  column, whichever keeps the colour differences smoother, then refined; the fewest zipper
  and false-colour artefacts at sharp edges. (VNG, the other classic, has no independent
  implementation to test against in colour-demosaicing; Menon2007 has.)

Bilinear and MHC are linear in the data, menon linear given its row/column decisions: a
constant or a smooth (locally linear) colour image is recovered exactly away from the edges,
and the fluxes of the planes stay in ADU.

Edges: the mosaic is mirrored about its first and last rows and columns (whole-sample
symmetric, ``scipy.ndimage`` mode ``"mirror"``), which keeps the Bayer pattern's parity, so the
edge pixels are interpolated from real photosites of the right colour. ``colour_demosaicing``
reflects with the edge pixel repeated (mode ``"reflect"``), which puts photosites of the wrong
colour in the kernels: the two agree exactly at pixels at least 1 (bilinear) or 2 (MHC) pixels
from every edge and differ on that border (menon: see :mod:`skystack.colour.menon`).

NaN handling for ``mhc`` and ``menon``: a NaN photosite is first replaced by the mean of the
nearest valid photosites of its colour, so the filters stay defined around it; the pixel's own
measured colour is NaN in the output (it was not measured), the other two are interpolated.
A photosite with no valid neighbour of its colour leaves NaN in all three planes (over the
filters' reach: 2 pixels for mhc, :data:`skystack.colour.menon.REACH` for menon).

Returned planes: float32, shape ``(3, rows, cols)``, planes in the order R, G, B (the order of
a FITS cube's third axis, ``NAXIS3 = 3``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import SkystackError
from .cfa import CHANNELS, PATTERNS
from .menon import REACH, menon

DEBAYER_METHODS = ("bilinear", "mhc", "menon")

# Bilinear: G from its 4 direct neighbours, R and B from 2 or 4 (weights before normalising).
_BILINEAR_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], float) / 4
_BILINEAR_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], float) / 4

# Malvar-He-Cutler filters (coefficients from the paper, divided by 8).
_MHC_G_AT_RB = np.array([[0, 0, -1, 0, 0],
                         [0, 0, 2, 0, 0],
                         [-1, 2, 4, 2, -1],
                         [0, 0, 2, 0, 0],
                         [0, 0, -1, 0, 0]], float) / 8
# At a green site, the colour found left and right of it (the row's other colour).
_MHC_ROW_AT_G = np.array([[0, 0, 0.5, 0, 0],
                          [0, -1, 0, -1, 0],
                          [-1, 4, 5, 4, -1],
                          [0, -1, 0, -1, 0],
                          [0, 0, 0.5, 0, 0]], float) / 8
_MHC_COL_AT_G = _MHC_ROW_AT_G.T  # the colour found above and below it
# At a red site the blue value (and at a blue site the red one): from the 4 diagonals.
_MHC_DIAGONAL = np.array([[0, 0, -1.5, 0, 0],
                          [0, 2, 0, 2, 0],
                          [-1.5, 0, 6, 0, -1.5],
                          [0, 2, 0, 2, 0],
                          [0, 0, -1.5, 0, 0]], float) / 8


def _masks(layout: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks (R, G, B) of the photosites of an image whose ``data[0:2, 0:2]`` has the
    colours ``layout`` (row-major)."""
    masks = {ch: np.zeros(shape, bool) for ch in CHANNELS}
    for ch, (r, c) in zip(layout, ((0, 0), (0, 1), (1, 0), (1, 1)), strict=True):
        masks[ch][r::2, c::2] = True
    return masks["R"], masks["G"], masks["B"]


def _convolve(data: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return ndimage.convolve(data, kernel, mode="mirror")


def _normalised(data: np.ndarray, valid: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Weighted mean of the valid photosites under ``kernel`` (NaN where there is none)."""
    num = _convolve(np.where(valid, data, 0.0), kernel)
    den = _convolve(valid.astype(float), kernel)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-9, num / den, np.nan)


def _bilinear(cfa: np.ndarray, masks) -> np.ndarray:
    finite = np.isfinite(cfa)
    kernels = (_BILINEAR_RB, _BILINEAR_G, _BILINEAR_RB)
    return np.stack([_normalised(cfa, m & finite, k) for m, k in zip(masks, kernels,
                                                                       strict=True)])


def _fill_nan(cfa: np.ndarray, masks) -> tuple[np.ndarray, np.ndarray]:
    """``cfa`` with each NaN photosite replaced by the mean of the nearest valid photosites of
    its colour, and the mask of those that have none (left NaN)."""
    finite = np.isfinite(cfa)
    if finite.all():
        return cfa, np.zeros(cfa.shape, bool)
    same_rb = np.zeros((5, 5))
    same_rb[::2, ::2] = 1
    same_g = np.zeros((5, 5))
    same_g[1:4:2, 1:4:2] = 1
    same_g[2, ::4] = same_g[::4, 2] = 1
    filled = cfa.copy()
    for mask, kernel in zip(masks, (same_rb, same_g, same_rb), strict=True):
        estimate = _normalised(cfa, mask & finite, kernel)
        holes = mask & ~finite
        filled[holes] = estimate[holes]
    hopeless = ~np.isfinite(filled)
    filled[hopeless] = 0.0
    return filled, hopeless


def _filled(method, reach: int):
    """``method(data, masks)`` on finite data, made NaN-aware (see module docstring): NaN
    photosites filled first, their own colour NaN in the result, and NaN over ``reach``
    pixels around a photosite that could not be filled."""
    def run(cfa: np.ndarray, masks) -> np.ndarray:
        data, hopeless = _fill_nan(cfa, masks)
        planes = method(data, masks)
        measured_nan = ~np.isfinite(cfa)
        for plane, mask in zip(planes, masks, strict=True):
            plane[measured_nan & mask] = np.nan
        if hopeless.any():
            spread = ndimage.binary_dilation(hopeless, np.ones((2 * reach + 1,) * 2, bool))
            planes[:, spread] = np.nan
        return planes
    return run


def _mhc_finite(data: np.ndarray, masks) -> np.ndarray:
    r_mask, g_mask, b_mask = masks
    red_rows = r_mask.any(axis=1)[:, None]
    blue_rows = b_mask.any(axis=1)[:, None]
    green = np.where(g_mask, data, _convolve(data, _MHC_G_AT_RB))
    along_row = _convolve(data, _MHC_ROW_AT_G)
    along_col = _convolve(data, _MHC_COL_AT_G)
    diagonal = _convolve(data, _MHC_DIAGONAL)
    red = np.where(r_mask, data, np.where(b_mask, diagonal,
                                          np.where(red_rows, along_row, along_col)))
    blue = np.where(b_mask, data, np.where(r_mask, diagonal,
                                           np.where(blue_rows, along_row, along_col)))
    return np.stack([red, green, blue])


_METHODS = {"bilinear": _bilinear, "mhc": _filled(_mhc_finite, 2),
            "menon": _filled(menon, REACH)}


def debayer(cfa: np.ndarray, layout: str, method: str = "bilinear") -> np.ndarray:
    """Demosaic a 2-D Bayer image into float32 planes ``(3, rows, cols)``, R, G, B.

    ``layout`` is the pattern seen from ``cfa[0, 0]`` (:meth:`CfaPattern.layout`, one of
    :data:`~skystack.colour.cfa.PATTERNS`); ``method`` one of :data:`DEBAYER_METHODS` (see the
    module docstring for edges and NaN)."""
    if method not in DEBAYER_METHODS:
        raise SkystackError(f"invalid debayer method {method!r}: choose from "
                            f"{', '.join(DEBAYER_METHODS)}")
    layout = layout.upper()
    if layout not in PATTERNS:
        raise SkystackError(f"invalid Bayer pattern {layout!r}: choose from {', '.join(PATTERNS)}")
    data = np.asarray(cfa, np.float64)
    if data.ndim != 2 or min(data.shape) < 2:
        raise SkystackError(f"debayer needs a 2-D image of at least 2 x 2 pixels, got shape "
                            f"{data.shape}")
    masks = _masks(layout, data.shape)
    planes = _METHODS[method](data, masks)
    return planes.astype(np.float32)


def plane_cards(channel: str, method: str) -> list[tuple[str, str, str]]:
    """Header cards (keyword, value, comment) of a product made of debayered planes:
    ``CFACHAN`` (R, G or B) and ``DEBAYER`` (the method)."""
    return [("CFACHAN", channel, "colour plane of debayered Bayer frames"),
            ("DEBAYER", method, "demosaicing method")]
