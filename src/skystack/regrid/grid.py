"""Output grids: the celestial WCS and shape that the frames of a stack are reprojected onto.

* :func:`optimal_grid` builds a gnomonic (TAN) grid that covers every frame (``crop="union"``) or
  only the sky that all frames cover (``crop="intersection"``), like reproject's
  ``find_optimal_celestial_wcs``.
* :func:`grid_from_header` and :func:`grid_from_reference` take the grid of a FITS header or file.
* :func:`overlaps_grid` tells cheaply (from the footprint) whether a frame reaches a grid at all.

Grids are ``(WCS, (rows, cols))`` with the shape in NumPy order, ``(NAXIS2, NAXIS1)``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import (
    celestial_frame_to_wcs,
    proj_plane_pixel_scales,
    wcs_to_celestial_frame,
)

from ..errors import SkystackError
from .header_wcs import parse_header_wcs
from .pixmap import check_celestial

__all__ = ["optimal_grid", "grid_from_header", "grid_from_reference", "overlaps_grid", "CROPS",
           "GRID_AREA_FACTOR", "MAX_GRID_PIXELS", "edge_points"]

CROPS = ("union", "intersection")

# Tolerance (output pixels) when rounding a footprint's extent up to whole pixels: an extent of
# 300.003 px gives 300 columns, not 301 (the footprint then overhangs each side by 0.0015 px, a
# tiny fraction of the outer half pixel that bilinear sampling snaps to the border pixel anyway).
# Such excesses come from the small differences between the frames' and the grid's projections.
_EXTENT_TOL = 0.01


def edge_points(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Points along the outer pixel edges of a frame, counter-clockwise in pixel space.

    Every edge is sampled at least every 8 px (at least 32 points per edge), corners included,
    so that a footprint curved by distortion is followed closely.
    """
    ny, nx = shape
    ex = np.linspace(-0.5, nx - 0.5, max(32, math.ceil(nx / 8) + 1))
    ey = np.linspace(-0.5, ny - 0.5, max(32, math.ceil(ny / 8) + 1))
    x = np.concatenate([ex[:-1], np.full(ey.size - 1, nx - 0.5), ex[::-1][:-1],
                        np.full(ey.size - 1, -0.5)])
    y = np.concatenate([np.full(ex.size - 1, -0.5), ey[:-1], np.full(ex.size - 1, ny - 0.5),
                        ey[::-1][:-1]])
    return x, y


def _frame_scale(wcs: WCS) -> float:
    """Pixel scale of a frame in degrees: square root of the pixel area at the reference pixel."""
    scales = proj_plane_pixel_scales(wcs.celestial)
    return float(math.sqrt(abs(scales[0] * scales[1])))


def _to_frame(wcs: WCS, x: np.ndarray, y: np.ndarray, frame) -> SkyCoord:
    coords = wcs.pixel_to_world(x, y)
    return coords.transform_to(frame)


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of 2-D points, counter-clockwise (Andrew's monotone chain)."""
    pts = np.unique(points, axis=0)
    if len(pts) < 3:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def _clip(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland–Hodgman: the part of convex polygon ``subject`` inside convex CCW ``clip``."""
    out = subject
    for i in range(len(clip)):
        if len(out) == 0:
            break
        a, b = clip[i], clip[(i + 1) % len(clip)]
        edge = b - a
        side = edge[0] * (out[:, 1] - a[1]) - edge[1] * (out[:, 0] - a[0])  # >= 0: inside
        new = []
        for j in range(len(out)):
            p, q = out[j], out[(j + 1) % len(out)]
            sp, sq = side[j], side[(j + 1) % len(out)]
            if sp >= 0:
                new.append(p)
            if (sp >= 0) != (sq >= 0):
                new.append(p + (q - p) * (sp / (sp - sq)))
        out = np.array(new).reshape(-1, 2)
    return out


def _polygon_area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def optimal_grid(headers_or_wcs_and_shapes: list[tuple[WCS, tuple[int, int]]], *,
                 reference: WCS | None = None, crop: str = "union",
                 labels: Sequence[str] | None = None,
                 tangent: tuple[float, float] | None = None) -> tuple[WCS, tuple[int, int]]:
    """A celestial TAN grid for a stack, like reproject's ``find_optimal_celestial_wcs``.

    Parameters
    ----------
    headers_or_wcs_and_shapes : list of (WCS or Header, (rows, cols))
        Each frame's celestial WCS (or a FITS header to build it from) and its image shape in
        NumPy order. SIP and other distortions are honoured.
    reference : astropy WCS, optional
        Take the grid's orientation (rotation and handedness of its CD/PC matrix) and celestial
        frame from this WCS. By default the grid is north up, east left (``CDELT1 < 0``) in the
        first frame's celestial frame.
    crop : {"union", "intersection"}
        ``"union"``: the grid covers every pixel of every frame. ``"intersection"``: it is the
        bounding box of the sky covered by all frames.
    labels : list of str, optional
        Names of the frames in error messages (default ``"frame <index>"``).
    tangent : (lon, lat) in degrees, optional
        The grid's tangent point (CRVAL) in the grid's celestial frame; by default the mean
        direction of the frames' centres.

    Returns
    -------
    wcs : astropy WCS
        Gnomonic (``-TAN``) WCS, tangent point at the mean of the frames' centres, pixel scale the
        median of the frames' scales (square root of each frame's pixel area at its reference
        pixel, in degrees), ``CUNIT = deg``.
    shape : (rows, cols)
        Output shape, NumPy order.

    Notes
    -----
    Each frame's footprint is its outer pixel edge (``-0.5`` to ``n - 0.5``), sampled at least
    every 8 px and projected into the grid with astropy. The union grid is the bounding box of
    all these points, rounded outwards to whole pixels (an excess below 0.01 px is dropped, so a
    footprint may overhang the grid edge by up to 0.005 px), centred. For the intersection,
    each footprint is replaced by its convex hull (frames are convex up to distortion; a hull
    can only be larger) and the hulls are intersected exactly (Sutherland–Hodgman); the grid is
    the bounding box of that polygon. This is conservative: the grid contains all of the sky
    common to all frames, and (for rotated frames, or edges bowed inwards by distortion)
    possibly a little more.

    A union grid more than :data:`GRID_AREA_FACTOR` times the frames' total area (the sum of
    their footprints' areas on the grid), or of more than :data:`MAX_GRID_PIXELS` pixels, is
    refused with an error naming the frame farthest from the median position of the others:
    one frame with a wrong CRVAL would otherwise stretch the grid across the sky (and the
    stack fill the memory and the disk). So is a set of frames no TAN grid can hold.
    """
    if crop not in CROPS:
        raise SkystackError(f"unknown crop {crop!r} (choose from {', '.join(CROPS)})")
    frames = list(headers_or_wcs_and_shapes)
    if not frames:
        raise SkystackError("optimal_grid needs at least one frame")
    if labels is None or len(labels) != len(frames):
        labels = [f"frame {i}" for i in range(len(frames))]
    wcss: list[WCS] = []
    shapes: list[tuple[int, int]] = []
    for i, item in enumerate(frames):
        try:
            wcs, shape = item
        except (TypeError, ValueError):
            raise SkystackError(f"{labels[i]}: expected a (WCS, (rows, cols)) pair") from None
        if isinstance(wcs, fits.Header):
            wcs = _wcs_from_header(wcs, labels[i])
        check_celestial(wcs, labels[i])
        try:
            ny, nx = (int(v) for v in shape)
        except (TypeError, ValueError):
            raise SkystackError(f"{labels[i]}: shape must be (rows, cols), got {shape!r}") \
                from None
        if ny < 1 or nx < 1:
            raise SkystackError(f"{labels[i]}: empty shape {shape!r}")
        wcss.append(wcs)
        shapes.append((ny, nx))
    if reference is not None:
        check_celestial(reference, "reference WCS")

    try:
        frame = wcs_to_celestial_frame(reference if reference is not None else wcss[0])
    except ValueError:
        raise SkystackError("cannot tell the celestial frame (RADESYS/CTYPE) of the "
                            + ("reference WCS" if reference is not None else "frame 0")) from None

    # Tangent point: mean direction of the frames' centres.
    vectors = []
    for w, (ny, nx) in zip(wcss, shapes):
        centre = _to_frame(w, np.array([(nx - 1) / 2]), np.array([(ny - 1) / 2]), frame)
        vectors.append(centre.cartesian.xyz.value[:, 0])
    vectors = np.array(vectors)
    if not np.all(np.isfinite(vectors)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(vectors), axis=1))[0])
        raise SkystackError(f"{labels[bad]}: WCS gives no sky position for the frame centre")
    mean = np.mean(vectors, axis=0)
    norm = float(np.linalg.norm(mean))
    if not norm > 1e-6:
        raise _spread_error("frame centres spread over the whole sky: no single TAN grid fits "
                            "them", vectors, labels)
    mean /= norm
    tangent_lon = math.degrees(math.atan2(mean[1], mean[0])) % 360.0
    tangent_lat = math.degrees(math.asin(max(-1.0, min(1.0, mean[2]))))
    if tangent is not None:
        tangent_lon, tangent_lat = float(tangent[0]) % 360.0, float(tangent[1])

    scale = float(np.median([_frame_scale(w) for w in wcss]))
    out = celestial_frame_to_wcs(frame, projection="TAN")
    out.wcs.cunit = ["deg", "deg"]
    out.wcs.crval = [tangent_lon, tangent_lat]
    if reference is None:
        out.wcs.cdelt = [-scale, scale]
    else:
        matrix = np.array(reference.celestial.pixel_scale_matrix, dtype=np.float64)
        if reference.celestial.wcs.lng == 1:  # latitude first: swap to (lon, lat) world rows
            matrix = matrix[::-1]
        det = abs(float(np.linalg.det(matrix)))
        if not det > 0:
            raise SkystackError("reference WCS: singular pixel scale matrix")
        out.wcs.cdelt = [1.0, 1.0]
        out.wcs.pc = matrix / math.sqrt(det) * scale
    out.wcs.crpix = [1.0, 1.0]
    out.wcs.set()

    polygons = []
    for i, (w, s) in enumerate(zip(wcss, shapes)):
        ex, ey = edge_points(s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            px, py = out.world_to_pixel(_to_frame(w, ex, ey, frame))
        px, py = np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)
        if not (np.all(np.isfinite(px)) and np.all(np.isfinite(py))):
            raise _spread_error(
                f"{labels[i]}: footprint cannot be projected onto one TAN grid with the "
                "others (frames too far apart, or WCS invalid at the image edges)",
                vectors, labels)
        polygons.append(np.column_stack([px, py]))

    if crop == "union":
        pts = np.concatenate(polygons)
        grid = _place(out, pts)
        _check_union_size(grid[1], polygons, vectors, labels)
        return grid
    else:
        region = _hull(polygons[0])
        for poly in polygons[1:]:
            region = _clip(region, _hull(poly))
            if _polygon_area(region) <= 0.0:
                break
        if _polygon_area(region) < 1.0:  # less than one output pixel in common
            raise SkystackError(
                "the frames have no sky in common: crop='intersection' would be empty"
                + (f" ({_outlier_text(vectors, labels)})" if len(labels) > 1 else ""))
        pts = region
    return _place(out, pts)


# A union grid larger than this many times the frames' total area (more than 90 % empty), or
# than MAX_GRID_PIXELS, is refused (see optimal_grid): a wrong CRVAL, not a mosaic.
GRID_AREA_FACTOR = 10.0
MAX_GRID_PIXELS = 2**32


def _separation_deg(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.atan2(float(np.linalg.norm(np.cross(a, b))), float(np.dot(a, b))))


def _outlier(vectors: np.ndarray) -> tuple[int, float]:
    """The frame farthest from the median position of the others (unit vectors of the
    centres; component-wise median, normalised) and that distance in degrees."""
    best, best_sep = 0, -1.0
    for k in range(len(vectors)):
        others = np.delete(vectors, k, axis=0)
        median = np.median(others, axis=0)
        norm = float(np.linalg.norm(median))
        median = median / norm if norm > 0 else others[0]
        sep = _separation_deg(vectors[k], median)
        if sep > best_sep:
            best, best_sep = k, sep
    return best, best_sep


def _centre_vector(wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
    """Unit vector (ICRS-like Cartesian, of the WCS's own frame) of a frame's centre pixel."""
    lon, lat = wcs.celestial.pixel_to_world_values((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    lon, lat = math.radians(float(lon)), math.radians(float(lat))
    return np.array([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon),
                     math.sin(lat)])


def agreeing_frames(headers_and_shapes: Sequence[tuple[fits.Header, tuple[int, int]]]
                    ) -> list[bool]:
    """For each frame (raw header, shape rows x cols), whether its pointing agrees with the
    majority: its centre lies within one frame diagonal of the median of all readable centres
    (unit vectors, component-wise median, normalised). A frame whose WCS cannot be read, or is
    not celestial, does not agree; when fewer than two centres can be read, every frame with a
    readable one agrees. Used to keep a light with a wrong CRVAL from becoming the grid that the
    others are resampled onto."""
    vectors: list[np.ndarray | None] = []
    diagonals: list[float] = []
    for header, shape in headers_and_shapes:
        try:
            wcs = check_celestial(parse_header_wcs(header, "frame"), "frame")
            with np.errstate(all="ignore"):
                v = _centre_vector(wcs, shape)
            if not np.all(np.isfinite(v)):
                raise SkystackError("no finite centre")
            vectors.append(v)
            diagonals.append(math.degrees(_frame_scale(wcs)) * math.hypot(*shape))
        except (SkystackError, ValueError):
            vectors.append(None)
    readable = np.array([v for v in vectors if v is not None])
    if len(readable) < 2:
        return [v is not None for v in vectors]
    median = np.median(readable, axis=0)
    norm = float(np.linalg.norm(median))
    median = median / norm if norm > 0 else readable[0]
    tolerance = float(np.median(diagonals))
    return [v is not None and _separation_deg(v, median) <= tolerance for v in vectors]


def _outlier_text(vectors: np.ndarray, labels: Sequence[str]) -> str:
    if len(labels) == 2:
        return f"{labels[0]} and {labels[1]} are {_separation_deg(*vectors):.3g} deg apart"
    k, sep = _outlier(vectors)
    return f"{labels[k]} is {sep:.3g} deg from the median position of the others"


def _spread_error(problem: str, vectors: np.ndarray, labels: Sequence[str]) -> SkystackError:
    """A one-line error for frames that cannot share a grid, naming the outlying frame."""
    where = f"; {_outlier_text(vectors, labels)}" if len(labels) > 1 else ""
    return SkystackError(f"{problem}{where} (a wrong WCS? leave that frame out, or give "
                         "--crop intersection or --grid-header)")


def _check_union_size(shape: tuple[int, int], polygons: list[np.ndarray],
                      vectors: np.ndarray, labels: Sequence[str]) -> None:
    """Refuse a union grid far larger than the frames (see :func:`optimal_grid`)."""
    pixels = float(shape[0]) * float(shape[1])
    total = sum(_polygon_area(_hull(p)) for p in polygons)
    if pixels > GRID_AREA_FACTOR * total or pixels > MAX_GRID_PIXELS:
        raise _spread_error(
            f"the union grid would be {shape[1]} x {shape[0]} px, {pixels / max(total, 1.0):.3g}"
            f" times the frames' total area", vectors, labels)


def _place(wcs: WCS, pts: np.ndarray) -> tuple[WCS, tuple[int, int]]:
    """Shift ``wcs`` (0-based positions ``pts`` with CRPIX 1,1) so that pts fit in the grid."""
    xmin, ymin = pts.min(axis=0)
    xmax, ymax = pts.max(axis=0)
    cols = max(1, math.ceil(xmax - xmin - _EXTENT_TOL))
    rows = max(1, math.ceil(ymax - ymin - _EXTENT_TOL))
    # Centre the extent in the whole-pixel grid: 0-based position p maps to p - lo - 0.5 + pad.
    pad_x = (cols - (xmax - xmin)) / 2
    pad_y = (rows - (ymax - ymin)) / 2
    wcs = wcs.deepcopy()
    wcs.wcs.crpix = [1.0 + (-xmin - 0.5 + pad_x), 1.0 + (-ymin - 0.5 + pad_y)]
    wcs.wcs.set()
    wcs.pixel_shape = (cols, rows)
    return wcs, (rows, cols)


def overlaps_grid(wcs: WCS, shape: tuple[int, int], grid_wcs: WCS,
                  grid_shape: tuple[int, int]) -> bool:
    """Whether a frame (celestial ``wcs``, ``shape`` (rows, cols)) can give a value to some
    pixel of a grid (``grid_wcs``, ``grid_shape``).

    Cheap, from the frame's footprint: its outer pixel edge (sampled as in
    :func:`optimal_grid`) projected onto the grid, where it lands at finite positions; the
    convex hull of those must overlap the rectangle of the grid's pixel centres with a positive
    area. A frame the grid's projection cannot see at all (e.g. on the far side of the sky from
    a TAN grid's tangent point) does not overlap."""
    from .pixmap import pix2pix  # the module's lock: WCS objects are not thread-safe

    ex, ey = edge_points(tuple(int(v) for v in shape))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            px, py = pix2pix(wcs, grid_wcs, ex, ey)
        except Exception:  # astropy raises for some invalid positions instead of giving NaN
            return False
    finite = np.isfinite(px) & np.isfinite(py)
    if finite.sum() < 3:
        return False
    rows, cols = grid_shape
    # A point of the footprint's outline strictly inside the grid's rectangle: the footprint
    # has area on both sides of its outline there, so the overlap has a positive area (the
    # usual case, decided without the hull).
    px, py = px[finite], py[finite]
    if np.any((px > 0) & (px < cols - 1) & (py > 0) & (py < rows - 1)):
        return True
    # Otherwise the outline is all outside: the footprint misses the grid or contains it.
    hull = _hull(np.column_stack([px, py]))
    eps = 1e-6  # a grid of one row or column still has an area
    box = np.array([[-eps, -eps], [cols - 1 + eps, -eps], [cols - 1 + eps, rows - 1 + eps],
                    [-eps, rows - 1 + eps]])
    return len(hull) >= 3 and _polygon_area(_clip(hull, box)) > 0.0


def _wcs_from_header(header: fits.Header, source: str) -> WCS:
    wcs = parse_header_wcs(header, source)
    if not wcs.has_celestial:
        raise SkystackError(f"{source}: WCS is not celestial (CTYPE = {list(wcs.wcs.ctype)})")
    return wcs


def grid_from_header(header: fits.Header, *, source: str = "reference header",
                     ) -> tuple[WCS, tuple[int, int]]:
    """The output grid described by a FITS header: its celestial WCS and ``(NAXIS2, NAXIS1)``.

    Parameters
    ----------
    header : astropy Header
        Must hold ``NAXIS1``, ``NAXIS2`` and a celestial WCS on axes 1 and 2 (SIP allowed).
    source : str
        Names the header in error messages (e.g. its file name).

    Returns
    -------
    (WCS, (rows, cols))
        2-D celestial WCS and the shape in NumPy order.
    """
    if not isinstance(header, fits.Header):
        raise SkystackError(f"{source}: expected a FITS header, got {type(header).__name__}")
    missing = [k for k in ("NAXIS1", "NAXIS2") if k not in header]
    if missing:
        raise SkystackError(f"{source}: {' and '.join(missing)} missing: cannot size the grid")
    try:
        shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    except (TypeError, ValueError):
        raise SkystackError(f"{source}: NAXIS1/NAXIS2 are not integers") from None
    if shape[0] < 1 or shape[1] < 1:
        raise SkystackError(f"{source}: empty image (NAXIS1 = {shape[1]}, NAXIS2 = {shape[0]})")
    wcs = _wcs_from_header(header, source)
    if sorted((wcs.wcs.lng, wcs.wcs.lat)) != [0, 1]:
        raise SkystackError(f"{source}: celestial axes must be axes 1 and 2")
    if wcs.naxis > 2:
        wcs = wcs.celestial
    check_celestial(wcs, source)
    wcs.pixel_shape = (shape[1], shape[0])
    return wcs, shape


def grid_from_reference(path_or_header: str | os.PathLike | fits.Header,
                        ) -> tuple[WCS, tuple[int, int]]:
    """The output grid of a reference image: a FITS file (first HDU with a celestial image WCS)
    or a header. See :func:`grid_from_header`."""
    if isinstance(path_or_header, fits.Header):
        return grid_from_header(path_or_header)
    if not isinstance(path_or_header, (str, os.PathLike)):
        raise SkystackError(
            f"reference must be a FITS path or header, got {type(path_or_header).__name__}")
    path = os.fspath(path_or_header)
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
            headers = [hdu.header.copy() for hdu in hdul]
    except FileNotFoundError:
        raise SkystackError(f"{path}: no such file") from None
    except OSError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SkystackError(f"{path}: cannot read FITS file ({msg})") from None
    first_error: SkystackError | None = None
    for header in headers:
        if header.get("NAXIS", 0) >= 2 and "NAXIS1" in header and "NAXIS2" in header:
            try:
                return grid_from_header(header, source=path)
            except SkystackError as exc:
                first_error = first_error or exc
    if first_error is not None:
        raise first_error
    raise SkystackError(f"{path}: no 2-D image HDU to take the grid from")
