"""The output pixel grid of a stack, and the frames' WCS on it."""

from __future__ import annotations

from dataclasses import dataclass

from astropy.wcs import WCS

from ..regrid.header_wcs import parse_header_wcs, wcs_cards
from ..regrid.pixmap import check_celestial
from .frame import Frame

__all__ = ["Grid", "frame_wcs", "frames_off_grid"]

# Cards of a celestial WCS header that mean nothing for the pixel-only WCS of a product.
_CELESTIAL_ONLY = ("LATPOLE", "LONPOLE", "RADESYS", "EQUINOX", "MJDREF", "DATEREF")


@dataclass(frozen=True)
class Grid:
    """The output pixel grid: its celestial WCS (what the frames are resampled onto) and shape
    (rows, cols).

    ``product_wcs``, when given, is the WCS the product gets instead of ``wcs``: the
    pixel-only WCS of frames aligned by their stars on a reference without sky coordinates
    (:func:`skystack.register.wcs.pixel_wcs`), whose ``wcs`` is synthetic and must not reach
    the output."""

    wcs: WCS
    shape: tuple[int, int]
    product_wcs: WCS | None = None

    @property
    def output_wcs(self) -> WCS:
        """The WCS of the product (``product_wcs`` or ``wcs``)."""
        return self.product_wcs if self.product_wcs is not None else self.wcs

    def header(self):
        """The product's WCS cards (:attr:`output_wcs`; SIP included), without the time
        keywords a WCS may carry (:func:`skystack.regrid.header_wcs.wcs_cards`: a product's
        times are its combined frames')."""
        header = wcs_cards(self.output_wcs)
        if self.product_wcs is not None:
            for key in _CELESTIAL_ONLY:
                header.remove(key, ignore_missing=True)
        return header


def frame_wcs(frame: Frame) -> WCS:
    """The celestial WCS of a frame's header (SIP included); one-line error naming the frame
    when there is none or it is unusable (a WCS keyword that is not a number, a singular
    pixel scale matrix: :func:`~skystack.regrid.header_wcs.parse_header_wcs`,
    :func:`~skystack.regrid.pixmap.check_celestial`)."""
    return check_celestial(parse_header_wcs(frame.header, frame.label), frame.label)


def frames_off_grid(wcs_list: list[WCS], shapes: list[tuple[int, int]], grid: Grid) -> list[int]:
    """Indices of the frames whose footprint does not overlap ``grid`` at all
    (:func:`skystack.regrid.grid.overlaps_grid`): they could give no pixel to a stack on it,
    and must be neither resampled nor counted in its provenance (NCOMBINE, IMCMB, EXPTIME)."""
    from ..regrid.grid import overlaps_grid

    return [k for k, (w, s) in enumerate(zip(wcs_list, shapes))
            if not overlaps_grid(w, s, grid.wcs, grid.shape)]
