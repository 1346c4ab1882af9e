"""Registrations as celestial WCS, so that stacking resamples star-aligned frames unchanged.

The reference frame's pixel grid carries a *linear* celestial WCS ``W_ref``: world =
``proj(CD_ref · (r - crpix_ref))`` for a reference pixel ``r``, ``proj`` being its projection
(TAN, SIN, ...). A frame registered by a transform ``T`` (frame pixel → reference pixel) gets the
WCS ``W_f = W_ref ∘ T``, so that

    ``ref_wcs.world_to_pixel(frame_wcs.pixel_to_world(x, y)) == T(x, y)``

exactly (to rounding), and the stacking code's pixel maps reproduce ``T``:

* affine ``T(c + u) = crpix_ref + M u``: ``CRPIX_f = c + 1`` (FITS is 1-based), ``CD_f = CD_ref M``;
* polynomial ``T``: the same about the point ``c`` that ``T`` maps to ``crpix_ref``, with the
  non-linear rest ``M⁻¹ (T(c + u) - T(c)) - u`` as SIP ``A``/``B`` polynomials of the same
  degree (forward only; astropy inverts them iteratively).

The reference's own distortion (SIP, lookup tables) and ``TPV`` terms are dropped: registered
frames are placed exactly relative to the reference's *pixel grid*, whose sky positions are then
those of its linear WCS (off by the reference's distortion, typically a few pixels in corners).
A reference without a usable celestial WCS gets a synthetic one (:func:`synthetic_wcs`): an
internal device for the resampling machinery, whose sky position is made up. A product stacked on
it gets instead the pixel-only WCS of :func:`pixel_wcs` (world = the reference frame's pixels).
"""

from __future__ import annotations

import math

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, Sip

from .match import Registration, Transform

__all__ = ["registered_wcs", "reference_wcs", "synthetic_wcs", "pixel_scale_arcsec", "pixel_wcs"]


def pixel_scale_arcsec(header: fits.Header) -> tuple[float, str]:
    """Pixel scale (arcsec/px) from a header and where it came from.

    ``PIXSCALE``/``SECPIX``/``SCALE``, else ``XPIXSZ`` (µm) and ``FOCALLEN`` (mm) as
    206.265 × size / focal length, else 1"/px."""
    for key in ("PIXSCALE", "SECPIX", "SCALE"):
        value = header.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value), key
    size, focal = header.get("XPIXSZ"), header.get("FOCALLEN")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
           for v in (size, focal)):
        return 206.264806 * float(size) / float(focal), "XPIXSZ/FOCALLEN"
    return 1.0, "default 1\"/px"


def _header_radec(header: fits.Header) -> tuple[float, float]:
    """Tangent point for a synthetic WCS: numeric RA/DEC (deg) keywords, else (0, 0)."""
    ra, dec = header.get("RA"), header.get("DEC")
    if isinstance(ra, (int, float)) and isinstance(dec, (int, float)) and -90 <= dec <= 90:
        return float(ra) % 360.0, float(dec)
    return 0.0, 0.0


def synthetic_wcs(shape: tuple[int, int], header: fits.Header | None = None) -> WCS:
    """A north-up, east-left TAN WCS for a frame of ``shape`` (rows, cols) with no celestial WCS.

    Tangent point at the frame centre, at the header's numeric ``RA``/``DEC`` (deg) or (0, 0);
    pixel scale from :func:`pixel_scale_arcsec`. Only relative positions matter for a stack.
    """
    header = header if header is not None else fits.Header()
    scale, _ = pixel_scale_arcsec(header)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = list(_header_radec(header))
    w.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    w.wcs.cd = [[-scale / 3600.0, 0.0], [0.0, scale / 3600.0]]
    w.wcs.radesys = "ICRS"
    w.pixel_shape = (shape[1], shape[0])
    return w


def pixel_wcs(grid_wcs: WCS, ref_wcs: WCS) -> WCS:
    """A linear, non-celestial WCS for a grid of frames registered on a reference without sky
    coordinates: world = the reference frame's pixel position (FITS, 1-based), CTYPE 'PIXEL'.

    ``ref_wcs`` is the reference's :func:`synthetic_wcs` and ``grid_wcs`` the (TAN) grid the
    frames are resampled onto, with the same projection and tangent point (the reference's
    own grid, or :func:`~skystack.regrid.grid.optimal_grid` with ``tangent`` at its CRVAL):
    both project the sky onto the same plane, so reference pixel = ``crpix_ref + CD_ref⁻¹
    CD_grid (p - crpix_grid)`` exactly. That linear map is the returned WCS; the synthetic sky
    position itself, made up, is not in it."""
    if (list(grid_wcs.wcs.ctype) != list(ref_wcs.wcs.ctype)
            or not np.allclose(grid_wcs.wcs.crval, ref_wcs.wcs.crval, rtol=0, atol=1e-12)):
        raise ValueError("pixel_wcs: the grid and the reference must share their projection "
                         "and tangent point")
    matrix = np.linalg.solve(ref_wcs.pixel_scale_matrix, grid_wcs.pixel_scale_matrix)
    out = WCS(naxis=2)
    out.wcs.ctype = ["PIXEL", "PIXEL"]
    out.wcs.cunit = ["pixel", "pixel"]
    out.wcs.crpix = list(grid_wcs.wcs.crpix)
    out.wcs.crval = list(ref_wcs.wcs.crpix)
    out.wcs.cd = matrix
    out.wcs.name = "reference frame pixels"
    out.wcs.set()
    if grid_wcs.pixel_shape is not None:
        out.pixel_shape = grid_wcs.pixel_shape
    return out


def _linear(wcs: WCS) -> WCS:
    """The celestial WCS without distortions, its linear part as a CD matrix."""
    w = wcs.celestial.deepcopy()
    cd = w.pixel_scale_matrix.copy()
    w.sip = None
    w.cpdis1 = w.cpdis2 = None
    w.det2im1 = w.det2im2 = None
    ctype = [c.replace("-SIP", "").replace("-TPV", "-TAN") for c in w.wcs.ctype]
    out = WCS(naxis=2)
    out.wcs.ctype = ctype
    out.wcs.cunit = list(w.wcs.cunit)
    out.wcs.crval = list(w.wcs.crval)
    out.wcs.crpix = list(w.wcs.crpix)
    out.wcs.cd = cd
    for attr in ("radesys", "equinox", "dateobs", "mjdobs", "lonpole", "latpole"):
        value = getattr(w.wcs, attr)
        if value not in ("", None) and not (isinstance(value, float) and math.isnan(value)):
            setattr(out.wcs, attr, value)
    out.wcs.set_pv([p for p in w.wcs.get_pv() if "TPV" not in "".join(ctype)])
    out.wcs.set()
    return out


def reference_wcs(frame) -> tuple[WCS, str]:
    """The linear celestial WCS of a reference frame's pixel grid and where it came from.

    The frame's header WCS without distortion when it has a usable celestial one (source
    ``"header"``: the only case where the stack has sky coordinates), else
    :func:`synthetic_wcs` (the message says which pixel scale was used, and why the header's
    WCS was not usable when it has one)."""
    from ..errors import SkystackError
    from ..regrid.header_wcs import parse_header_wcs
    from ..regrid.pixmap import check_celestial

    why = ""
    try:
        wcs = parse_header_wcs(frame.header, frame.label)
        celestial = wcs.has_celestial and wcs.celestial.naxis == 2
        if celestial:
            check_celestial(wcs.celestial, frame.label)
    except SkystackError as exc:
        celestial = False
        why = f"; header WCS unusable: {str(exc).removeprefix(frame.label + ': ')}"
    if celestial:
        out = _linear(wcs)
        source = "header"
    else:
        out = synthetic_wcs(frame.shape, frame.header)
        scale, where = pixel_scale_arcsec(frame.header)
        source = f"synthetic TAN, {scale:.4g}\"/px ({where}){why}"
    out.pixel_shape = (frame.shape[1], frame.shape[0])
    return out, source


def _solve_origin(transform: Transform, target: np.ndarray) -> np.ndarray:
    """The frame pixel ``c`` with ``T(c) = target`` (Newton from the linear solution)."""
    c = np.array(transform.origin, float)
    for _ in range(50):
        value = np.array([float(v) for v in transform(c[0], c[1])])
        step = np.linalg.solve(transform.jacobian(c[0], c[1]), target - value)
        c = c + step
        if np.abs(step).max() < 1e-12 * max(1.0, np.abs(c).max()):
            break
    return c


def registered_wcs(reg: Registration | Transform, ref_wcs: WCS,
                   shape: tuple[int, int] | None = None) -> WCS:
    """The celestial WCS of a registered frame: ``W_ref ∘ T`` (see module docstring).

    Parameters
    ----------
    reg
        A successful :class:`Registration` (or its :class:`Transform`): frame px → reference px.
    ref_wcs
        The reference grid's linear WCS (:func:`reference_wcs`); distortions are ignored.
    shape
        The frame's (rows, cols), stored as the WCS's pixel shape.
    """
    transform = reg.transform if isinstance(reg, Registration) else reg
    if transform is None:
        raise ValueError(f"registration failed ({reg.reason}): no WCS")
    ref = _linear(ref_wcs) if (ref_wcs.sip is not None or ref_wcs.cpdis1 is not None
                               or ref_wcs.cpdis2 is not None) else ref_wcs
    cd_ref = ref.pixel_scale_matrix
    target = np.array(ref.wcs.crpix, float) - 1.0  # 0-based reference pixel of CRVAL
    c = _solve_origin(transform, target)
    jac = transform.jacobian(c[0], c[1])
    out = WCS(naxis=2)
    out.wcs.ctype = list(ref.wcs.ctype)
    out.wcs.cunit = list(ref.wcs.cunit)
    out.wcs.crval = list(ref.wcs.crval)
    out.wcs.crpix = list(c + 1.0)
    out.wcs.cd = cd_ref @ jac
    for attr in ("radesys", "equinox", "dateobs", "mjdobs", "lonpole", "latpole"):
        value = getattr(ref.wcs, attr)
        if value not in ("", None) and not (isinstance(value, float) and math.isnan(value)):
            setattr(out.wcs, attr, value)
    out.wcs.set_pv(ref.wcs.get_pv())
    if transform.degree > 1:
        out.sip = _sip(transform, c, jac)
        out.wcs.ctype = [f"{t[:8]}-SIP" if len(t) == 8 else t + "-SIP"
                         for t in out.wcs.ctype]
    out.wcs.set()
    if shape is not None:
        out.pixel_shape = (shape[1], shape[0])
    return out


def _sip(transform: Transform, c: np.ndarray, jac: np.ndarray) -> Sip:
    """SIP A/B with ``u + A(u, v) = M⁻¹ (T(c + u) - T(c))`` (terms of degree 2..n), exactly.

    The polynomial is re-expanded about ``c`` by an exact least-squares solve on sample points
    (the representation is exact, so the solve only rounds), in units of ``norm`` for
    conditioning."""
    deg = transform.degree
    norm = transform.norm
    g = np.linspace(-1.0, 1.0, 2 * deg + 3)
    uu, vv = (a.ravel() for a in np.meshgrid(g, g))
    u, v = uu * norm, vv * norm
    xr, yr = transform(c[0] + u, c[1] + v)
    x0, y0 = (float(a) for a in transform(c[0], c[1]))
    minv = np.linalg.inv(jac)
    pu = minv[0, 0] * (xr - x0) + minv[0, 1] * (yr - y0) - u
    pv = minv[1, 0] * (xr - x0) + minv[1, 1] * (yr - y0) - v
    terms = [(p, q) for p in range(deg + 1) for q in range(deg + 1 - p) if 2 <= p + q]
    design = np.stack([uu**p * vv**q for p, q in terms], 1)
    ca = np.linalg.lstsq(design, pu, rcond=None)[0]
    cb = np.linalg.lstsq(design, pv, rcond=None)[0]
    a = np.zeros((deg + 1, deg + 1))
    b = np.zeros((deg + 1, deg + 1))
    for k, (p, q) in enumerate(terms):
        a[p, q] = ca[k] / norm ** (p + q)
        b[p, q] = cb[k] / norm ** (p + q)
    return Sip(a, b, None, None, c + 1.0)
