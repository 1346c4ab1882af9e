"""Bilinear WCS reprojection that matches ``reproject.reproject_interp`` (CPU core).

* :mod:`.grid` — the output grid: :func:`optimal_grid`, :func:`grid_from_header`,
  :func:`grid_from_reference`.
* :mod:`.pixmap` — :func:`pixel_map`: float64 input coordinates of every output pixel (astropy
  on a coarse node grid, SIP included, interpolated; reproject's 1 px round-trip check).
* :mod:`.interp` — Numba kernels :func:`bilinear` / :func:`nearest` with reproject's exact edge
  and NaN rules, the :func:`resample` wrapper, :func:`footprint` and :func:`pixel_area_ratio`.

Reprojecting one frame::

    x, y = pixel_map(wcs_in, wcs_out, shape_out)
    values = resample(image, x, y)          # float32, NaN outside the frame
    covered = footprint(values)
"""

from .grid import grid_from_header, grid_from_reference, optimal_grid
from .interp import bilinear, footprint, nearest, pixel_area_ratio, resample
from .pixmap import choose_step, map_error, map_positions, pixel_map

__all__ = [
    "optimal_grid",
    "grid_from_header",
    "grid_from_reference",
    "pixel_map",
    "map_positions",
    "map_error",
    "choose_step",
    "bilinear",
    "nearest",
    "resample",
    "footprint",
    "pixel_area_ratio",
]
