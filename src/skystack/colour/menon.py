"""Menon, Andriani & Calvagno (2007) demosaicing: directional filtering and a posteriori
decision (DDFAPD), the ``menon`` method of :func:`skystack.colour.debayer`.

"Demosaicing with directional filtering and a posteriori decision", IEEE Trans. Image
Processing 16(1), 2007. Unlike bilinear or Malvar-He-Cutler, which filter every pixel the same
way, it interpolates green *along* edges: at each red or blue photosite green is estimated
twice, along the row and along the column, and the direction whose colour differences
(R - G or B - G) vary least over a small window wins. Red and blue then follow from the
chosen green and the same direction, and a refining pass smooths the colour differences
along that direction. Steps (all 1-D filters along a row or a column):

1. green along rows and along columns at R/B sites: ``[-1/4, 1/2, 1/2, 1/2, -1/4]`` (the two
   green neighbours' mean corrected by the site's own colour's second difference);
2. the colour difference (site minus that green) at R/B sites, 0 at green sites, and its
   change two pixels further along each direction (to the next photosite of the same colour);
3. the decision: those changes summed over a 5 x 5 window (weights :data:`_CLASSIFIER`,
   transposed for columns); rows win where their sum is not larger;
4. red and blue at green sites from the two photosites of that colour beside them, plus the
   difference of the greens there; at blue (red) sites from the chosen direction;
5. refinement: green at R/B sites, R and B at green sites, then R at B and B at R sites
   recomputed from colour differences averaged along the chosen direction (3 taps) or taken
   from the two neighbours of that colour.

Edges: filters mirror the image about its first and last rows and columns (whole-sample
symmetric, which keeps the Bayer parity), and the decision window sees zeros beyond them, as
``colour_demosaicing.demosaicing_CFA_Bayer_Menon2007`` does (an independent implementation it
is tested against: they agree at every pixel, edges included). The input must be finite (NaN
photosites are filled beforehand by :func:`skystack.colour.debayer`); :data:`REACH` is how
far a photosite influences the result.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["REACH", "menon"]

REACH = 12  # pixels: farther than this a photosite does not change the result

_GREEN = np.array([-0.25, 0.5, 0.5, 0.5, -0.25])  # step 1
_PAIR = np.array([0.5, 0.0, 0.5])  # mean of the two neighbours
_THIRDS = np.ones(3) / 3  # mean of a pixel and its two neighbours
# Step 3's window (Menon et al.'s weights: the changes at this row and the next two rows).
_CLASSIFIER = np.array([[0, 0, 1, 0, 1],
                        [0, 0, 0, 1, 0],
                        [0, 0, 3, 0, 3],
                        [0, 0, 0, 1, 0],
                        [0, 0, 1, 0, 1]], float)


def _rows(data: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return ndimage.convolve1d(data, kernel, axis=1, mode="mirror")


def _cols(data: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return ndimage.convolve1d(data, kernel, axis=0, mode="mirror")


def _along(data: np.ndarray, by_rows: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``kernel`` applied along the rows where ``by_rows``, along the columns elsewhere."""
    return np.where(by_rows, _rows(data, kernel), _cols(data, kernel))


def _change(diff: np.ndarray, axis: int) -> np.ndarray:
    """|diff - diff two pixels further along ``axis``| (mirrored beyond the last one)."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (0, 2)
    further = np.take(np.pad(diff, pad, mode="reflect"), np.arange(2, diff.shape[axis] + 2),
                      axis=axis)
    return np.abs(diff - further)


def _decide(cfa: np.ndarray, g_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-3: (green, True where it was interpolated along the row)."""
    green_r = np.where(g_mask, cfa, _rows(cfa, _GREEN))
    green_c = np.where(g_mask, cfa, _cols(cfa, _GREEN))
    score_r = ndimage.convolve(_change(np.where(g_mask, 0.0, cfa - green_r), 1), _CLASSIFIER,
                               mode="constant")
    score_c = ndimage.convolve(_change(np.where(g_mask, 0.0, cfa - green_c), 0),
                               _CLASSIFIER.T, mode="constant")
    by_rows = score_c >= score_r
    return np.where(by_rows, green_r, green_c), by_rows


def menon(cfa: np.ndarray, masks) -> np.ndarray:
    """Planes ``(3, rows, cols)`` R, G, B (float64) of a finite float64 ``cfa`` whose
    photosites are ``masks`` (boolean R, G, B), by Menon et al. (2007) with the refining step
    (see module docstring)."""
    r_mask, g_mask, b_mask = masks
    red_rows = np.broadcast_to(r_mask.any(axis=1)[:, None], cfa.shape)
    blue_rows = np.broadcast_to(b_mask.any(axis=1)[:, None], cfa.shape)
    red_cols = np.broadcast_to(r_mask.any(axis=0)[None, :], cfa.shape)
    blue_cols = np.broadcast_to(b_mask.any(axis=0)[None, :], cfa.shape)
    green, by_rows = _decide(cfa, g_mask)

    # Step 4: R and B at green sites (colour plus the greens' difference), then at B / R sites.
    red, blue = np.where(r_mask, cfa, 0.0), np.where(b_mask, cfa, 0.0)
    red = np.where(g_mask, green + np.where(red_rows, _rows(red, _PAIR) - _rows(green, _PAIR),
                                            _cols(red, _PAIR) - _cols(green, _PAIR)), red)
    blue = np.where(g_mask, green + np.where(blue_rows,
                                             _rows(blue, _PAIR) - _rows(green, _PAIR),
                                             _cols(blue, _PAIR) - _cols(green, _PAIR)), blue)
    red = np.where(b_mask, blue + _along(red, by_rows, _PAIR) - _along(blue, by_rows, _PAIR),
                   red)
    blue = np.where(r_mask, red + _along(blue, by_rows, _PAIR) - _along(red, by_rows, _PAIR),
                    blue)

    # Step 5, refinement. Green at R / B sites from the colour differences along the direction.
    red_g, blue_g = red - green, blue - green
    green = np.where(r_mask, red - _along(red_g, by_rows, _THIRDS), green)
    green = np.where(b_mask, blue - _along(blue_g, by_rows, _THIRDS), green)
    # R and B at green sites: the two photosites of that colour beside them.
    red_g, blue_g = red - green, blue - green
    red = np.where(g_mask & blue_rows, green + _cols(red_g, _PAIR), red)
    red = np.where(g_mask & blue_cols, green + _rows(red_g, _PAIR), red)
    blue = np.where(g_mask & red_rows, green + _cols(blue_g, _PAIR), blue)
    blue = np.where(g_mask & red_cols, green + _rows(blue_g, _PAIR), blue)
    # R at B sites and B at R sites: the R - B difference along the direction.
    smooth = _along(red - blue, by_rows, _THIRDS)
    red = np.where(b_mask, blue + smooth, red)
    blue = np.where(r_mask, red - smooth, blue)
    return np.stack([red, green, blue])
