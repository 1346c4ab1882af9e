"""The CCDs of a mosaic camera in a night: gain normalisation, the union grid of a mosaic's
stacks, and the CCD-to-CCD photometric consistency check in the overlaps.

Conventions
-----------
* A CCD image is one image extension of one exposure (``file[EXTNAME]``); its CCD is its
  ``EXTNAME`` (else its HDU index), as in :attr:`skystack.night.scan.FrameInfo.ccd`.
* Gain: the header's ``GAIN`` in e-/ADU; ``--gain-normalise`` multiplies a CCD's calibrated
  pixels by it (:class:`skystack.night.calibrate.Calibration`), so that a co-add of several
  CCDs is in electrons.
* Consistency: for every pair of calibrated CCD images of *different* CCDs (any exposures)
  that overlap on the sky, the sky-subtracted pixels of one are resampled (bilinear) onto the
  other's pixels in the overlap, and the ratio of their summed signal over the bright sources
  there (pixels more than :data:`DETECT_SIGMA` sigma above the sky in both images, grown
  by :data:`GROW_PX` pixels) is that pair's flux ratio. Each CCD gets the median of its
  ratios to the other CCDs' images (``median_ratio``; 1 for consistent CCDs) and their
  robust spread (1.4826 x MAD); one deviating by more than the threshold (2 % by default)
  and by more than 3 standard errors of its median is flagged. A gain left in ADU shows as a
  ratio equal to the ratio of the gains.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ..errors import SkystackError
from ..io.inputs import Frame
from ..io.reader import Tile

__all__ = ["DETECT_SIGMA", "GROW_PX", "CONSISTENCY_THRESHOLD", "frame_gain", "frame_ccd",
           "is_mosaic", "union_grid", "ccd_consistency", "consistency_warnings"]

DETECT_SIGMA = 10.0  # a source pixel is this many sigma above the sky
GROW_PX = 3  # source masks grown by this many pixels, so that faint wings count too
CONSISTENCY_THRESHOLD = 0.02  # a CCD whose median ratio to the others is off by more: flagged
MIN_SOURCE_PX = 10  # fewer source pixels in an overlap: no ratio for that pair


def frame_gain(frame: Frame) -> float:
    """The frame's ``GAIN`` (e-/ADU); one-line :class:`SkystackError` when missing or not a
    positive number (``--gain-normalise`` needs every CCD's gain)."""
    value = frame.header.get("GAIN")
    try:
        gain = float(value)
    except (TypeError, ValueError):
        gain = math.nan
    if not (math.isfinite(gain) and gain > 0):
        what = "no GAIN keyword" if value is None else f"GAIN = {value!r} is not a positive number"
        raise SkystackError(f"{frame.label}: {what} (--gain-normalise needs each CCD's gain "
                            "in e-/ADU)")
    return gain


def frame_ccd(frame: Frame) -> str:
    """The CCD of a calibrated CCD image: its EXTNAME, else its HDU index."""
    name = str(frame.header.get("EXTNAME", "")).strip()
    return name or str(frame.hdu_index)


def is_mosaic(raw_frames) -> bool:
    """Whether ``raw_frames`` (:class:`skystack.night.plan.RawFrame`) hold CCDs of mosaic
    files (then a stack needs a grid covering every CCD)."""
    return any(f.info.hdu is not None for f in raw_frames)


def union_grid(frames: list, wcs_list: list, reference):
    """A :class:`~skystack.core.grid.Grid` covering every pixel of ``frames`` (placed by their
    celestial ``wcs_list``), oriented as ``reference`` (a WCS, or None: north up)."""
    from ..core.grid import Grid
    from ..regrid.grid import optimal_grid

    wcs, shape = optimal_grid([(w, f.shape) for f, w in zip(frames, wcs_list)],
                              reference=reference, labels=[f.label for f in frames])
    return Grid(wcs, shape)


def _pixels(frame: Frame) -> np.ndarray:
    data = np.empty(frame.shape, np.float32)
    frame.source.read(Tile(0, frame.shape[0], 0, frame.shape[1]), data)
    return data


def _sky(data: np.ndarray) -> tuple[float, float]:
    """(median, robust sigma) of the finite pixels, after clipping sources at 3 sigma."""
    values = data[np.isfinite(data)]
    if values.size == 0:
        return math.nan, math.nan
    med = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - med)))
    for _ in range(3):
        keep = values[np.abs(values - med) < 3 * sigma] if sigma > 0 else values
        if keep.size == 0:
            break
        med = float(np.median(keep))
        sigma = 1.4826 * float(np.median(np.abs(keep - med)))
    return med, sigma


def _pair_ratio(a: np.ndarray, wa, b: np.ndarray, wb, sky_b: float, sigma_b: float,
                sigma_a: float) -> float | None:
    """Flux ratio a/b (both sky-subtracted) over the sources in the overlap, detected in both
    images (a cosmic ray or a satellite trail is in one exposure only: counted, it would pull
    the ratio); None when the overlap holds no measurable source."""
    from scipy.ndimage import binary_dilation, map_coordinates

    rows, cols = b.shape
    # Coarse first: the box of b's pixels whose sky position falls on a.
    step = max(1, min(rows, cols) // 32)
    yy, xx = np.mgrid[0:rows:step, 0:cols:step]
    xa, ya = wa.world_to_pixel_values(*wb.pixel_to_world_values(xx.ravel(), yy.ravel()))
    inside = (xa >= -step) & (xa <= a.shape[1] - 1 + step) & (ya >= -step) \
        & (ya <= a.shape[0] - 1 + step)
    if not inside.any():
        return None
    r0 = max(0, int(yy.ravel()[inside].min()) - step)
    r1 = min(rows, int(yy.ravel()[inside].max()) + step + 1)
    c0 = max(0, int(xx.ravel()[inside].min()) - step)
    c1 = min(cols, int(xx.ravel()[inside].max()) + step + 1)
    yy, xx = np.mgrid[r0:r1, c0:c1]
    xa, ya = wa.world_to_pixel_values(*wb.pixel_to_world_values(xx.ravel(), yy.ravel()))
    xa, ya = xa.reshape(yy.shape), ya.reshape(yy.shape)
    on_a = (xa >= 0) & (xa <= a.shape[1] - 1) & (ya >= 0) & (ya <= a.shape[0] - 1)
    a_on_b = map_coordinates(a, [ya, xa], order=1, mode="constant", cval=np.nan,
                             prefilter=False)
    b_part = b[r0:r1, c0:c1] - sky_b
    ok = on_a & np.isfinite(a_on_b) & np.isfinite(b_part)
    with np.errstate(invalid="ignore"):
        seen = ok & (b_part > DETECT_SIGMA * sigma_b) & (a_on_b > DETECT_SIGMA * sigma_a)
    sources = binary_dilation(seen, iterations=GROW_PX) & ok
    if sources.sum() < MIN_SOURCE_PX:
        return None
    flux_b = float(b_part[sources].sum())
    if not flux_b > 0:
        return None
    return float(a_on_b[sources].sum()) / flux_b


def ccd_consistency(frames: list[Frame], wcs_list: list, ccds: list[str],
                    threshold: float = CONSISTENCY_THRESHOLD) -> dict:
    """The CCD-to-CCD consistency of calibrated CCD images (module docstring).

    ``frames`` with their celestial WCS ``wcs_list`` and CCD names ``ccds``. Returns
    ``{"threshold": t, "pairs": n, "ccds": {ccd: {"median_ratio", "spread", "pairs"}},
    "flagged": [ccd...]}``; ``ccds`` lacks a CCD that overlaps no other CCD with a source.
    Reads every image once (all held while measuring: meant for a stack's CCD images)."""
    data = []
    for f in frames:
        pixels = _pixels(f)
        sky, sigma = _sky(pixels)
        data.append((pixels - np.float32(sky), sigma))
    logs: dict[str, list[float]] = defaultdict(list)
    n_pairs = 0
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            if ccds[i] == ccds[j] or not (data[i][1] > 0 and data[j][1] > 0):
                continue
            # Sources detected in each image in turn; the pair's ratio is their mean (log).
            r_ij = _pair_ratio(data[i][0], wcs_list[i], data[j][0], wcs_list[j], 0.0,
                               data[j][1], data[i][1])
            r_ji = _pair_ratio(data[j][0], wcs_list[j], data[i][0], wcs_list[i], 0.0,
                               data[i][1], data[j][1])
            found = [math.log(r) for r in (r_ij,) if r is not None and r > 0] \
                + [-math.log(r) for r in (r_ji,) if r is not None and r > 0]
            if not found:
                continue
            log_ratio = float(np.mean(found))  # log(flux in i / flux in j)
            logs[ccds[i]].append(log_ratio)
            logs[ccds[j]].append(-log_ratio)
            n_pairs += 1
    per_ccd = {}
    for ccd in sorted(logs):
        ratios = np.exp(np.asarray(logs[ccd]))
        med = float(np.median(ratios))
        per_ccd[ccd] = {"median_ratio": round(med, 5),
                        "spread": round(1.4826 * float(np.median(np.abs(ratios - med))), 5),
                        "pairs": len(ratios)}
    # Flagged: off by more than the threshold *and* by more than 3 standard errors of its
    # median (1.2533 x spread / sqrt(pairs)), so that a CCD measured on a few noisy pairs is
    # not called deviant by chance.
    flagged = [c for c, v in per_ccd.items()
               if abs(v["median_ratio"] - 1) > max(threshold, 3 * 1.2533 * v["spread"]
                                                    / math.sqrt(v["pairs"]))]
    return {"threshold": threshold, "pairs": n_pairs, "ccds": per_ccd, "flagged": flagged}


def consistency_warnings(check: dict) -> list[str]:
    """One line per flagged CCD of a :func:`ccd_consistency` result."""
    return [f"CCD {c} deviates from the other CCDs by "
            f"{100 * (check['ccds'][c]['median_ratio'] - 1):+.1f} % in the overlaps (median flux "
            f"ratio {check['ccds'][c]['median_ratio']:.4f} over {check['ccds'][c]['pairs']} "
            f"pairs; threshold {100 * check['threshold']:g} %)" for c in check["flagged"]]
