"""One input image as the loops see it: a label, a shape, a header and a pixel source."""

from __future__ import annotations

from dataclasses import dataclass

from astropy.io import fits

__all__ = ["Frame"]


@dataclass(frozen=True)
class Frame:
    """One input image: where its pixels come from and its header.

    ``shape`` is ``(rows, cols)`` = ``(NAXIS2, NAXIS1)``; ``label`` names it in messages and in
    provenance (the file name, or ``array[3]``). ``source`` is its
    :class:`~skystack.io.contracts.PixelSource`. ``uncertainty``: a source of the frame's own
    standard deviations when it came with them in memory (a CCDData's; see
    :mod:`skystack.io.sigma`).
    """

    label: str
    shape: tuple[int, int]
    header: fits.Header
    source: object
    path: str | None = None
    hdu_index: int | None = None
    uncertainty: object | None = None
