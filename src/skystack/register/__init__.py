"""Registration by stars and frame selection.

For frames without a WCS (or one too rough to stack on): measure each frame's stars, match them
to a reference frame's by invariant triangles, fit a transform per frame, and express it as a
celestial WCS so that :func:`skystack.stacking.stack_frames` resamples the frames unchanged (on
a synthetic, internal sky position when the reference has no WCS: the product then gets a
pixel-only WCS, :func:`~.wcs.pixel_wcs`).

Conventions: 0-based pixel positions with pixel centres at integers, ``(x, y) = (column, row)``;
images are NumPy arrays ``[row, column]``; shapes are ``(rows, cols)``. Transforms map **frame
pixels → reference pixels**. FWHM and residuals in pixels.

Public API
----------
``measure_stars(image, *, thresh=5.0, minarea=5, max_objects=2000, bin_above=6_000_000)``
    → :class:`StarList` (x, y, flux, peak, fwhm, ellipticity, theta, flags; ``n_stars``,
    ``median_fwhm``, ``median_ellipticity``, ``background``, ``background_rms``).
``measure_frame(frame, **options)`` / ``measure_frames(frames, *, threads=None, progress=None)``
    → :class:`FrameMeasurement` per frame (``label``, ``stars``, ``n_stars``, ``fwhm``,
    ``ellipticity``, ``background``, ``background_rms``); ``read_frame(frame)`` → float32 pixels.
``match_stars(xf, yf, xr, yr, shape, *, model="similarity", tol=3.0, scale_range=(0.5, 2),
max_stars=300)``
    → :class:`Registration` (``status`` ok/failed, ``reason``, ``model``, ``transform``,
    ``n_matched``, ``rms``, ``max_residual``). Models: :data:`MODELS`.
``register_frames(frames, reference=None, *, model="similarity", measurements=None,
reference_measurement=None, max_stars=300, tol=3.0, threads=None, progress=None)``
    → :class:`RegistrationResult` (per-frame ``measurements``, ``registrations``, ``wcs``; the
    ``reference_*`` chosen and why). ``reference``: None (automatic: :func:`choose_reference`),
    an index, or a Frame.
``select_frames(measurements, *, max_fwhm=None, max_ellipticity=None, min_stars=None,
best_fraction=None, registrations=None)`` → list of :class:`Selection` (``keep``, ``reason``).
``registered_wcs(registration, reference_wcs, shape=None)`` → astropy WCS of a registered frame
    (exact: ``reference_wcs.world_to_pixel(wcs.pixel_to_world(x, y)) == T(x, y)``, SIP for
    polynomial models); ``reference_wcs(frame)`` / ``synthetic_wcs(shape, header)`` for the
    reference grid (synthetic TAN, north up, scale from the header or 1"/px, when it has none);
    ``pixel_wcs(grid_wcs, ref_wcs)`` the pixel-only WCS a product gets in that case.
``register_table(result, selection=None)`` (astropy Table) and
``format_register_table(result, selection=None)`` (text).
``plan_stack(frames, *, align="wcs", ...)`` (in :mod:`.plan`): ``--align`` for stacking; its
``align_frames``, ``choose_frames`` and ``alignment_cards`` are the alignment decision that
``skystack night`` shares.
"""

from .align import (
    RegistrationResult,
    Selection,
    choose_reference,
    format_register_table,
    measure_frames,
    register_frames,
    register_table,
    select_frames,
)
from .match import MODELS, Registration, Transform, fit_transform, match_stars
from .stars import FrameMeasurement, StarList, measure_frame, measure_stars, read_frame
from .wcs import pixel_wcs, reference_wcs, registered_wcs, synthetic_wcs

__all__ = ["MODELS", "FrameMeasurement", "Registration", "RegistrationResult", "Selection",
           "StarList", "Transform", "choose_reference", "fit_transform", "format_register_table",
           "match_stars", "measure_frame", "measure_frames", "measure_stars", "pixel_wcs",
           "read_frame", "reference_wcs", "register_frames", "register_table", "registered_wcs",
           "select_frames", "synthetic_wcs"]
