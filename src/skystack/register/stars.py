"""Star detection and measurement on one frame: positions, flux, FWHM, ellipticity, background.

Conventions: positions are 0-based pixel coordinates with pixel centres at integers, given as
``(x, y) = (column, row)``; images are NumPy arrays indexed ``[row, column]``. FWHM in pixels.

Method
------
1. **Detection** with ``sep`` (SExtractor's core): a background map and its rms on 64×64 px
   meshes, then extraction of objects at ``thresh`` × rms (matched 3×3 filter, deblending).
   Frames of more than ``bin_above`` pixels are detected on a 2×2 mean-binned copy: four times
   fewer pixels for ``sep`` to scan, while positions and shapes are measured again at full
   resolution in step 2, so nothing is lost but the faintest detections.
2. **Measurement** at full resolution on the background-subtracted pixels around each detection
   (a Numba kernel):

   * *windowed centroid* (SExtractor's ``XWIN``): Gaussian-weighted first moments iterated to
     convergence, first with a per-object window, then with the frame's median PSF width — an
     unbiased centre for any symmetric PSF, insensitive to neighbours and to noise in the wings;
   * *core fit*: a 2-D Gaussian fitted to the pixels above half the peak (above 35 % or 20 % when
     too few pixels are that bright) by weighted linear least squares on ``ln I``. Restricted to
     the core, this measures the FWHM of Gaussian and Moffat profiles alike within ~1 % at
     FWHM ≥ 3 px (~5 % at 2 px); the pixel response (a 1-px box, variance 1/12 px² per axis) is
     subtracted, so the FWHM is that of the PSF before pixel sampling. FWHM is the geometric
     mean of the major and minor axes' FWHM, ellipticity ``1 - b/a``.

3. **Rejection of hot pixels and cosmic rays**: objects whose core cannot be fitted (a single
   pixel or a 2×2 blob has too few bright pixels), much sharper than the frame's stars (minor-axis
   FWHM below half the median, or below 0.6 px) or much more elongated (cosmic-ray tracks) are
   dropped, as are objects whose fitted half-maximum ellipse is not filled with bright pixels
   (cosmic-ray tracks). Saturated stars (a plateau: ≥ 3 pixels at the stamp's exact maximum)
   and stars whose stamp is cut by the frame edge are kept for matching but not used for the
   frame's FWHM.

Background and its noise are sep's global values (median of the mesh map and of the rms map),
in the image's units; for binned detection the rms is scaled back to one full-resolution pixel.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np
import sep
from numba import njit

from ..io.reader import Tile

__all__ = ["StarList", "FrameMeasurement", "measure_stars", "measure_frame", "read_frame",
           "SATURATED", "EDGE"]

# Bits of StarList.flags.
SATURATED = 1
EDGE = 2

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_SEP_LOCK = threading.Lock()  # sep's pixel-stack size is global state


@dataclass(frozen=True)
class StarList:
    """Stars of one frame, brightest first (arrays of equal length).

    ``x``, ``y``: 0-based column/row of the windowed centroid; ``flux``: isophotal flux above the
    background (image units × pixels); ``peak``: highest background-subtracted pixel;
    ``fwhm`` (px, NaN when the core could not be fitted), ``ellipticity`` (``1 - b/a``),
    ``theta`` (major axis, radians from +x towards +y); ``flags``: :data:`SATURATED`,
    :data:`EDGE` bits. ``background`` / ``background_rms``: the frame's sky level and its noise
    per pixel (image units); ``shape``: (rows, cols).
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    peak: np.ndarray
    fwhm: np.ndarray
    ellipticity: np.ndarray
    theta: np.ndarray
    flags: np.ndarray
    shape: tuple[int, int]
    background: float
    background_rms: float
    median_fwhm: float = math.nan
    median_ellipticity: float = math.nan
    n_quality: int = 0  # stars that gave median_fwhm / median_ellipticity

    @property
    def n_stars(self) -> int:
        return int(self.x.size)

    def for_matching(self, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of the ``n`` brightest stars whose stamp is inside the frame."""
        keep = np.flatnonzero((self.flags & EDGE) == 0)[:n]
        return self.x[keep], self.y[keep]

    @classmethod
    def empty(cls, shape: tuple[int, int], background: float = math.nan,
              background_rms: float = math.nan) -> StarList:
        z = np.zeros(0)
        return cls(z, z, z, z, z, z, z, np.zeros(0, np.uint8), tuple(shape), background,
                   background_rms)


@dataclass(frozen=True)
class FrameMeasurement:
    """The stars of one frame and its summary (see :class:`StarList`); ``label`` names the frame,
    ``seconds`` is the time spent reading and measuring it."""

    label: str
    stars: StarList
    seconds: float = 0.0
    header: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_stars(self) -> int:
        return self.stars.n_stars

    @property
    def fwhm(self) -> float:
        """Median FWHM (px) of the frame's well-measured stars; NaN without stars."""
        return self.stars.median_fwhm

    @property
    def ellipticity(self) -> float:
        return self.stars.median_ellipticity

    @property
    def background(self) -> float:
        return self.stars.background

    @property
    def background_rms(self) -> float:
        return self.stars.background_rms


def read_frame(frame) -> np.ndarray:
    """All pixels of a :class:`~skystack.io.inputs.Frame` as float32 (NaN = no data).

    Works with any source (raw, compressed, in-memory or calibrated on the fly)."""
    rows, cols = frame.shape
    out = np.empty((rows, cols), np.float32)
    frame.source.read(Tile(0, rows, 0, cols), out)
    return out


@njit(nogil=True, cache=True)
def _bin2(img, out):  # pragma: no cover - compiled
    """2×2 mean; an output pixel with any NaN input is NaN."""
    rows, cols = out.shape
    for r in range(rows):
        for c in range(cols):
            out[r, c] = 0.25 * (img[2 * r, 2 * c] + img[2 * r, 2 * c + 1]
                                + img[2 * r + 1, 2 * c] + img[2 * r + 1, 2 * c + 1])


@njit(nogil=True, cache=True, inline="always")
def _value(img, r, c, bkg):  # pragma: no cover - compiled
    """Background-subtracted pixel, NaN when missing or a *spike*: more than 3 times as bright
    as each of its 4 neighbours (a hot pixel or a cosmic-ray hit; no PSF wider than ~1.7 px FWHM
    is that sharp)."""
    ny, nx = img.shape
    v = img[r, c] - bkg
    if not math.isfinite(v):
        return math.nan
    if v <= 0.0:
        return v
    top = -math.inf
    if r > 0:
        top = max(top, img[r - 1, c] - bkg)
    if r + 1 < ny:
        top = max(top, img[r + 1, c] - bkg)
    if c > 0:
        top = max(top, img[r, c - 1] - bkg)
    if c + 1 < nx:
        top = max(top, img[r, c + 1] - bkg)
    if v > 3.0 * top:
        return math.nan
    return v


@njit(nogil=True, cache=True)
def _centroid(img, x, y, bkg, sw, radius, tol, iters):  # pragma: no cover - compiled
    """Windowed centroid (Gaussian window of sigma ``sw`` px) from (x, y), at most ``iters``
    steps, until a step is below ``tol`` px; returns (x, y, ok)."""
    ny, nx = img.shape
    inv = 1.0 / (2.0 * sw * sw)
    for _ in range(iters):
        ix = int(math.floor(x + 0.5))
        iy = int(math.floor(y + 0.5))
        s = 0.0
        sx = 0.0
        sy = 0.0
        for r in range(max(0, iy - radius), min(ny, iy + radius + 1)):
            dy = r - y
            for c in range(max(0, ix - radius), min(nx, ix + radius + 1)):
                v = _value(img, r, c, bkg)
                if not math.isfinite(v):
                    continue
                dx = c - x
                w = math.exp(-(dx * dx + dy * dy) * inv) * v
                s += w
                sx += w * dx
                sy += w * dy
        if s <= 0.0:
            return x, y, False
        # The factor 2 makes one step exact for a Gaussian star as wide as the window.
        stepx = min(1.0, max(-1.0, 2.0 * sx / s))
        stepy = min(1.0, max(-1.0, 2.0 * sy / s))
        x += stepx
        y += stepy
        if abs(stepx) < tol and abs(stepy) < tol:
            break
    return x, y, True


@njit(nogil=True, cache=True)
def _core_fit(img, x, y, bkg, radius, r_fit):  # pragma: no cover - compiled
    """Gaussian fit to the core; returns (peak, var_major, var_minor, theta, saturated, fill,
    ok).

    Variances (px²) are those of the PSF before pixel sampling (1/12 px² removed). ``fill`` is
    the fraction of the pixels inside the fitted half-maximum ellipse that are above 20 % of the
    peak: about 1 for a star, much less for a cosmic-ray track (a line of bright pixels among
    dark ones), which a Gaussian fitted to its bright pixels alone would otherwise pass.
    Only pixels within ``r_fit`` px of (x, y) and not brighter than 1.2 × the peak enter the fit,
    so that hot pixels and neighbours in the stamp do not."""
    ny, nx = img.shape
    ix = int(math.floor(x + 0.5))
    iy = int(math.floor(y + 0.5))
    r0 = max(0, iy - radius)
    r1 = min(ny, iy + radius + 1)
    c0 = max(0, ix - radius)
    c1 = min(nx, ix + radius + 1)
    peak = -np.inf
    raw_max = -np.inf
    for r in range(r0, r1):
        for c in range(c0, c1):
            v = _value(img, r, c, bkg)
            if not math.isfinite(v):
                continue
            raw_max = max(raw_max, img[r, c])
            if (r - y) ** 2 + (c - x) ** 2 <= 2.25:
                peak = max(peak, v)
    n_max = 0
    for r in range(r0, r1):
        for c in range(c0, c1):
            if img[r, c] == raw_max:
                n_max += 1
    saturated = n_max >= 3
    if not peak > 0.0:
        return peak, 0.0, 0.0, 0.0, saturated, 0.0, False
    level = 0.0
    top = 1.2 * peak
    rf2 = r_fit * r_fit
    for frac in (0.5, 0.35, 0.2):
        count = 0
        for r in range(r0, r1):
            for c in range(c0, c1):
                v = _value(img, r, c, bkg)
                if frac * peak < v <= top and (r - y) ** 2 + (c - x) ** 2 <= rf2:
                    count += 1
        level = frac * peak
        if count >= 12:
            break
    ata = np.zeros((6, 6))
    atb = np.zeros(6)
    phi = np.empty(6)
    count = 0
    for r in range(r0, r1):
        dy = r - y
        for c in range(c0, c1):
            v = _value(img, r, c, bkg)
            dx = c - x
            if not (level < v <= top and dx * dx + dy * dy <= rf2):
                continue
            phi[0] = 1.0
            phi[1] = dx
            phi[2] = dy
            phi[3] = dx * dx
            phi[4] = dx * dy
            phi[5] = dy * dy
            # Weight v: the noise of ln(v) is sigma / v, and the bright core dominates.
            lv = math.log(v)
            for i in range(6):
                atb[i] += v * v * phi[i] * lv
                for j in range(6):
                    ata[i, j] += v * v * phi[i] * phi[j]
            count += 1
    if count < 7:
        return peak, 0.0, 0.0, 0.0, saturated, 0.0, False
    scale = np.empty(6)
    for i in range(6):
        scale[i] = 1.0 / math.sqrt(ata[i, i]) if ata[i, i] > 0 else 1.0
    for i in range(6):
        for j in range(6):
            ata[i, j] *= scale[i] * scale[j]
        atb[i] *= scale[i]
    if abs(np.linalg.det(ata)) < 1e-12:
        return peak, 0.0, 0.0, 0.0, saturated, 0.0, False
    coef = np.linalg.solve(ata, atb) * scale
    # ln I = ... + c3 dx² + c4 dx dy + c5 dy²  =  -1/2 d^T C^-1 d  → C^-1 = -2 [[c3, c4/2], ...]
    p = -2.0 * coef[3]
    q = -coef[4]
    s = -2.0 * coef[5]
    det = p * s - q * q
    if not (p > 0.0 and s > 0.0 and det > 0.0):
        return peak, 0.0, 0.0, 0.0, saturated, 0.0, False
    cxx = s / det
    cyy = p / det
    cxy = -q / det
    half = 0.5 * (cxx + cyy)
    disc = math.sqrt(0.25 * (cxx - cyy) ** 2 + cxy * cxy)
    vmaj = half + disc - 1.0 / 12.0
    vmin = half - disc - 1.0 / 12.0
    theta = 0.5 * math.atan2(2.0 * cxy, cxx - cyy)
    # Vertex of the fitted quadratic, then the pixels where it is within ln 2 of its maximum.
    hxx, hxy, hyy = 2.0 * coef[3], coef[4], 2.0 * coef[5]
    hdet = hxx * hyy - hxy * hxy
    vx = -(hyy * coef[1] - hxy * coef[2]) / hdet
    vy = -(-hxy * coef[1] + hxx * coef[2]) / hdet
    n_in = 0
    n_lit = 0
    for r in range(r0, r1):
        ey = r - y - vy
        for c in range(c0, c1):
            ex = c - x - vx
            if 0.5 * (hxx * ex * ex + 2.0 * hxy * ex * ey + hyy * ey * ey) >= -math.log(2.0):
                n_in += 1
                if _value(img, r, c, bkg) > 0.2 * peak:
                    n_lit += 1
    fill = n_lit / n_in if n_in > 0 else 0.0
    return peak, vmaj, vmin, theta, saturated, fill, True


@njit(nogil=True, cache=True)
def _measure(img, xs, ys, bkgs, sws, common_sw, floor, out):  # pragma: no cover - compiled
    """Per object: centroid (x, y), peak, var_major, var_minor, theta, saturated, edge, ok,
    fill. Objects whose brightest non-spike pixel near (xs, ys) is below ``floor`` are dropped
    at once (``ok`` = 0): hot pixels, which are most detections on some cameras, cost little."""
    ny, nx = img.shape
    for k in range(xs.size):
        sw = sws[k] if common_sw <= 0.0 else common_sw
        ix0 = int(math.floor(xs[k] + 0.5))
        iy0 = int(math.floor(ys[k] + 0.5))
        best = -math.inf
        for r in range(max(0, iy0 - 2), min(ny, iy0 + 3)):
            for c in range(max(0, ix0 - 2), min(nx, ix0 + 3)):
                v = _value(img, r, c, bkgs[k])
                if v > best:
                    best = v
        if not best >= floor:
            out[k, 8] = 0.0
            continue
        radius = min(30, max(5, int(math.ceil(3.5 * sw)) + 2))
        # The window's weight is 1 % at 3 sigma: pixels beyond do not move the centre.
        c_radius = min(radius, int(math.ceil(3.0 * sw)) + 1)
        # First pass (per-object windows): a rough centre suffices; the second pass converges.
        if common_sw <= 0.0:
            x, y, ok = _centroid(img, xs[k], ys[k], bkgs[k], sw, c_radius, 1e-2, 8)
        else:
            x, y, ok = _centroid(img, xs[k], ys[k], bkgs[k], sw, c_radius, 1e-4, 30)
        if not ok or not (0.0 <= x <= nx - 1 and 0.0 <= y <= ny - 1):
            out[k, 8] = 0.0
            continue
        peak, vmaj, vmin, theta, sat, fill, fit_ok = _core_fit(img, x, y, bkgs[k], radius,
                                                               max(2.5, 3.0 * sw))
        ix = int(math.floor(x + 0.5))
        iy = int(math.floor(y + 0.5))
        edge = ix - radius < 0 or iy - radius < 0 or ix + radius >= nx or iy + radius >= ny
        out[k, 0] = x
        out[k, 1] = y
        out[k, 2] = peak
        out[k, 3] = vmaj
        out[k, 4] = vmin
        out[k, 5] = theta
        out[k, 6] = 1.0 if sat else 0.0
        out[k, 7] = 1.0 if edge else 0.0
        out[k, 8] = 1.0 if fit_ok else 0.0
        out[k, 9] = fill


# Detections without sep's filter above which the filtered (slower, deeper) pass is skipped.
FAST_DETECTION_ENOUGH = 200


def _detect(det: np.ndarray, mask: np.ndarray | None, thresh: float, minarea: int,
            mesh: int):
    """sep background + extraction on ``det`` (modified: the background is subtracted).

    Returns (objects or None, background map, global background, global rms)."""
    bkg = sep.Background(det, mask=mask, bw=mesh, bh=mesh, fw=3, fh=3)
    back, rms = float(bkg.globalback), float(bkg.globalrms)
    before = det.copy()  # background at any pixel = before - det (cheaper than bkg.back())
    if not (math.isfinite(rms) and rms > 0):
        return None, before, back, rms
    bkg.subfrom(det)
    np.subtract(before, det, out=before)
    if mask is not None:
        det[mask] = 0.0
    with _SEP_LOCK:
        sep.set_extract_pixstack(max(300_000, det.size // 2))
        sep.set_sub_object_limit(4096)
        try:
            # Unfiltered detection first: 3x faster, and plenty on a normal or crowded field
            # (registration needs the brightest stars). Only a sparse field pays for sep's
            # matched filter, which finds fainter stars.
            objects = sep.extract(det, thresh, err=rms, mask=mask, minarea=minarea,
                                  deblend_cont=0.005, filter_kernel=None)
            if len(objects) < FAST_DETECTION_ENOUGH:
                objects = sep.extract(det, thresh, err=rms, mask=mask, minarea=minarea,
                                      deblend_cont=0.005)
        except Exception:  # sep raises plain Exceptions on buffer overflows
            # Most often a frame full of nebulosity or a gradient: retry without deblending.
            objects = sep.extract(det, thresh * 2, err=rms, mask=mask, minarea=minarea,
                                  deblend_cont=1.0)
    return objects, before, back, rms


def measure_stars(image: np.ndarray, *, thresh: float = 5.0, minarea: int = 5,
                  max_objects: int = 2000, bin_above: int = 6_000_000) -> StarList:
    """Detect and measure the stars of one image (see module docstring).

    Parameters
    ----------
    image : 2-D array
        Pixels (any float or integer type); NaN or inf = no data.
    thresh : float
        Detection threshold in units of the background rms (per pixel of the detection image).
    minarea : int
        Minimum connected pixels above threshold at full resolution (a quarter of it, at least 2,
        on a binned detection image).
    max_objects : int
        At most this many of the brightest detections are measured.
    bin_above : int
        Detect on a 2×2-binned copy when the image has more pixels than this.

    Returns
    -------
    StarList
        The accepted stars, brightest first; empty (``n_stars == 0``) for a frame without stars.
    """
    img = np.ascontiguousarray(image, dtype=np.float32)
    if img.dtype.byteorder not in ("=", "|"):
        img = img.astype(np.float32)
    rows, cols = img.shape
    finite = np.isfinite(img)
    has_bad = not bool(finite.all())
    binning = 2 if img.size > bin_above and rows >= 4 and cols >= 4 else 1
    if binning == 2:
        det = np.empty((rows // 2, cols // 2), np.float32)
        _bin2(img, det)
    else:
        det = img.copy()
    mask = None
    if has_bad:
        mask = ~np.isfinite(det)
        if mask.all():
            return StarList.empty((rows, cols))
        det[mask] = 0.0
    mesh = max(8, 64 // binning)
    objects, back_map, back, rms = _detect(det, mask, thresh,
                                           max(2, minarea // binning**2), mesh)
    rms_full = rms * binning  # the mean of b² independent pixels has rms / b
    if objects is None or len(objects) == 0:
        return StarList.empty((rows, cols), back, rms_full)
    order = np.argsort(-objects["flux"], kind="stable")[:max_objects]
    obj = objects[order]
    # A binned pixel i covers full pixels b*i .. b*i+b-1, whose centre is b*i + (b-1)/2.
    x0 = obj["x"] * binning + (binning - 1) / 2.0
    y0 = obj["y"] * binning + (binning - 1) / 2.0
    bi = np.clip(np.rint(obj["y"]).astype(np.intp), 0, back_map.shape[0] - 1)
    bj = np.clip(np.rint(obj["x"]).astype(np.intp), 0, back_map.shape[1] - 1)
    bkgs = back_map[bi, bj].astype(np.float64)
    sig0 = np.sqrt(np.maximum(0.5 * (obj["x2"] + obj["y2"]), 0.25)) * binning
    sig0 = np.clip(sig0, 0.7, 8.0)
    out = np.zeros((obj.size, 10))
    _measure(img, x0, y0, bkgs, sig0, 0.0, 3.0 * rms_full, out)
    ok = out[:, 8] > 0
    fwhm_minor = _FWHM_PER_SIGMA * np.sqrt(np.maximum(out[:, 4], 0.0))
    plausible = ok & (fwhm_minor >= 0.6)
    if plausible.any():
        # Second pass: one window for all, the frame's median PSF sigma.
        common = float(np.median(np.sqrt(np.maximum(out[plausible, 3], 0)
                                         * np.maximum(out[plausible, 4], 0)) ** 0.5))
        common = float(np.clip(common, 0.7, 8.0))
        # Only objects that look like stars so far (hot pixels and noise are dropped).
        again = np.flatnonzero(plausible)
        out2 = np.zeros((again.size, out.shape[1]))
        _measure(img, out[again, 0].copy(), out[again, 1].copy(), bkgs[again], sig0[again],
                 common, 3.0 * rms_full, out2)
        moved = out2[:, 8] > 0
        out[again[moved]] = out2[moved]
        out[again[~moved], 8] = 0.0
        ok = out[:, 8] > 0
        fwhm_minor = _FWHM_PER_SIGMA * np.sqrt(np.maximum(out[:, 4], 0.0))
        plausible = ok & (fwhm_minor >= 0.6)
    vmaj = np.maximum(out[:, 3], 1e-12)
    vmin = np.maximum(out[:, 4], 0.0)
    fwhm = _FWHM_PER_SIGMA * (vmaj * vmin) ** 0.25
    ell = 1.0 - np.sqrt(vmin / vmaj)
    keep = plausible.copy()
    if plausible.any():
        med_minor = float(np.median(fwhm_minor[plausible]))
        med_ell = float(np.median(ell[plausible]))
        keep &= fwhm_minor >= 0.5 * med_minor
        keep &= ell <= max(0.6, med_ell + 0.35)
    keep &= out[:, 9] >= 0.7
    # What is left of a detection once its spikes are ignored must still stand out of the noise.
    keep &= out[:, 2] >= 3.0 * rms_full
    # The same star found twice (deblending of a bright halo): keep the brighter.
    idx = np.flatnonzero(keep)
    if idx.size > 1:
        from scipy.spatial import cKDTree

        pairs = cKDTree(out[idx, :2]).query_pairs(1.0, output_type="ndarray")
        if pairs.size:
            keep[idx[np.max(pairs, axis=1)]] = False
    flags = ((out[:, 6] > 0) * SATURATED + (out[:, 7] > 0) * EDGE).astype(np.uint8)
    sel = np.flatnonzero(keep)
    flux = obj["flux"][sel] * binning**2
    stars = dict(x=out[sel, 0], y=out[sel, 1], flux=flux, peak=out[sel, 2], fwhm=fwhm[sel],
                 ellipticity=ell[sel], theta=out[sel, 5], flags=flags[sel])
    quality = (stars["flags"] == 0) & (stars["peak"] > 10.0 * rms_full)
    if quality.sum() < 3:
        quality = stars["flags"] == 0
    if quality.sum() < 1:
        quality = np.ones(sel.size, bool)
    n_q = int(quality.sum())
    med_fwhm = float(np.median(stars["fwhm"][quality])) if n_q else math.nan
    med_ell = float(np.median(stars["ellipticity"][quality])) if n_q else math.nan
    return StarList(**stars, shape=(rows, cols), background=back, background_rms=rms_full,
                    median_fwhm=med_fwhm, median_ellipticity=med_ell, n_quality=n_q)


def measure_frame(frame, **options) -> FrameMeasurement:
    """Read a :class:`~skystack.io.inputs.Frame` and measure its stars (``options``: those of
    :func:`measure_stars`)."""
    import time

    t0 = time.perf_counter()
    stars = measure_stars(read_frame(frame), **options)
    return FrameMeasurement(frame.label, stars, time.perf_counter() - t0)
