"""The multi-extension (MEF) product of ``combine --hdu all``: one combined image per CCD.

Layout (one file, written tile by tile like :class:`skystack.io.writer.FitsTileWriter`, under a
temporary name and the output's lock, renamed into place by :meth:`MefTileWriter.commit`):

=========  ======================  =========================================================
HDU        EXTNAME                 content
=========  ======================  =========================================================
0          (primary, no data)      provenance common to every CCD (NCOMBINE, IMCMBnnn,
                                   COMBMETH, ...), ``NEXTEND``, ``SKYSMEF = T``
1 ... N    ``<CCD>`` (the inputs')  combined image of each CCD, float32, in the inputs'
                                   order; its own provenance (GAIN/RDNOISE, UNCMETH, WCS) and
                                   the inputs' CCD keywords where every input agrees
N+1 ...    ``<CCD>_UNCERT``,        per CCD, in the same order: standard error, mask
           ``<CCD>_MASK``,          (1 = no valid input value) and frames used per pixel
           ``<CCD>_COUNT``
=========  ======================  =========================================================

Why this convention: the CCD images keep the inputs' EXTNAMEs *and* positions (``--hdu N4``
or ``--hdu 3`` picks the same CCD in a raw exposure and in its master, which is how
calibration code — the DECam Community Pipeline, ccdproc users looping over extensions —
pairs a raw CCD with its master CCD), and the per-CCD planes carry the CCD's name, so that
``CCDData.read(path, hdu="N4", hdu_uncertainty="N4_UNCERT", hdu_mask="N4_MASK")`` reads one
CCD's master with its uncertainty and mask. The DECam Community Pipeline puts weights and masks
in separate files with the same EXTNAMEs; one file keeps a master atomic (written and replaced
as one) and suffixes keep the EXTNAMEs unique, which FITS readers need to select by name.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

import numpy as np
from astropy.io import fits

from .writer import (
    FitsTileWriter,
    check_output_path,
    image_header,
    is_owned,
    plane_chunks,
    plane_parts,
    pwrite_all,
)

__all__ = ["MefTileWriter", "PLANE_SUFFIXES"]

# Per-CCD planes after the images: EXTNAME = <CCD> + suffix.
PLANE_SUFFIXES = ("_UNCERT", "_MASK", "_COUNT")


def _empty_primary(header: fits.Header, n_ext: int) -> fits.Header:
    h = fits.Header([("SIMPLE", True, "conforms to FITS standard"),
                     ("BITPIX", 8, "no data in the primary HDU"), ("NAXIS", 0),
                     ("EXTEND", True),
                     ("NEXTEND", 4 * n_ext, "CCD images, then their UNCERT, MASK, COUNT"),
                     ("SKYSMEF", True, "skystack MEF product: one image HDU per CCD")])
    for card in header.cards:
        if card.keyword not in h or card.keyword in ("COMMENT", "HISTORY"):
            h.append(card, end=True)
    return h


class MefTileWriter(FitsTileWriter):
    """Writes a multi-extension product (module docstring): :meth:`sink` ``(k)`` is the
    :class:`~skystack.io.contracts.TileSink` of CCD ``k``."""

    def __init__(self, path: str | os.PathLike, primary: fits.Header,
                 ccds: list[tuple[str, tuple[int, int], fits.Header]], *, max_count: int,
                 overwrite: bool = False) -> None:
        """``ccds`` holds ``(EXTNAME, (rows, cols), header)`` per CCD, in output order;
        ``primary`` the cards of the data-less primary HDU."""
        self.path = check_output_path(path, overwrite)
        self.overwrite = overwrite
        self._fd = None
        self._lock = ExitStack()
        self._direct = is_owned(self.path)
        self.shape = ccds[0][1]
        self.extra_names = []
        self.names = [name for name, _, _ in ccds]
        images = [(image_header(False, -32, shape, name, header), np.dtype(">f4"), shape)
                  for name, shape, header in ccds]
        planes = [part for name, shape, header in ccds
                  for part in plane_parts(shape, header, max_count, prefix=f"{name}_")]
        self._parts = [(_empty_primary(primary, len(ccds)), np.dtype("u1"), None),
                       *images, *planes]
        self._allocate(None)

    def sink(self, k: int) -> _CcdSink:
        """The tile sink of CCD ``k`` (its image and its three planes)."""
        layout = self.plane_layout()
        n = len(self.names)
        parts = [layout[1 + k]] + layout[1 + n + 3 * k: 1 + n + 3 * k + 3]
        return _CcdSink(self, parts, self._parts[1 + k][2])

    def write_tile(self, *args, **kwargs) -> None:  # one CCD at a time: through sink(k)
        raise TypeError("MefTileWriter: write tiles through sink(k)")


class _CcdSink:
    """Writes one CCD's tiles into its four HDUs of a :class:`MefTileWriter`."""

    def __init__(self, writer: MefTileWriter, layout, shape: tuple[int, int]) -> None:
        self.writer = writer
        self.layout = layout
        self.shape = shape

    def write_tile(self, tile, image, uncertainty, count, *, mask=None, extras=None) -> None:
        mask = (count == 0) if mask is None else mask
        planes = [image, uncertainty, mask.astype(np.uint8), count]
        for view, offset in plane_chunks(tile, self.shape[1], self.layout, planes):
            pwrite_all(self.writer._fd, view, offset)

