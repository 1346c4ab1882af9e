"""Combine multi-extension (mosaic) exposures CCD by CCD: ``skystack combine --hdu all``.

:func:`skystack.api.combine_mef_to_file` (the public entry; :func:`combine_ccds` here does
the work) matches the CCDs of every input (:func:`skystack.io.mef.match_ccds`:
by EXTNAME, else by position), combines each CCD across the inputs with the usual engine — the
tile loop under the memory budget, one CCD after the other, so memory is that of one CCD's
combine whatever the number of CCDs — and writes one multi-extension product
(:mod:`skystack.io.mef_writer`: an empty primary with the provenance common to all CCDs, one
image per CCD with the inputs' EXTNAME and CCD keywords, then each CCD's ``<CCD>_UNCERT``,
``<CCD>_MASK``, ``<CCD>_COUNT``), atomically and under the output's lock.

All CCDs' frames share one bounded pool of open files (:class:`skystack.io.reader.HandlePool`),
so many CCDs × many files never open more descriptors than the process may hold.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from astropy.io import fits

from .backends import bind_backend
from .config import CombineOptions
from .errors import SkystackError
from .io.inputs import expand_paths, extension_frames
from .io.mef import agreed_cards, is_wcs_key, match_ccds
from .io.mef_writer import MefTileWriter
from .io.reader import HandlePool
from .io.sigma import resolve_uncertainty
from .io.units import common_unit
from .io.writer import check_output_path, committed
from .pipeline import combine_frames

__all__ = ["combine_ccds"]

HeaderFor = Callable[[list, CombineOptions, str], fits.Header]

# Keywords that describe one CCD (or are per-CCD results): kept in its extension, never
# raised to the primary even when every CCD happens to agree.
_CCD_ONLY = {"GAIN", "RDNOISE", "UNCMETH", "CCDNAME", "DETPOS", "CCDNUM", "DETSEC", "DATASEC",
             "BIASSEC", "TRIMSEC", "CCDSEC", "AMPSEC", "SATURATE", "BUNIT"}


def combine_ccds(inputs, output: str | os.PathLike, opts: CombineOptions, *,
                 header_for: HeaderFor, refuse_output: Callable[[list, str], None],
                 hdus: Sequence[int | str] | None = None, backend: str = "auto",
                 overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                 threads: int | None = None, max_tile_rows: int | None = None,
                 extra_header: fits.Header | None = None,
                 handle_limit: int | None = None) -> str:
    """The work of :func:`skystack.api.combine_mef_to_file` (parameters there), on validated
    ``opts``: ``header_for(frames, opts, describe)`` builds each CCD's provenance header
    (:func:`skystack.api.combine_header`), ``refuse_output(frames, output)`` refuses an
    output that is an input. Returns the output path."""
    check_output_path(output, overwrite)
    try:
        paths = expand_paths([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
    except TypeError:
        raise SkystackError("--hdu all: inputs must be file paths, patterns or @lists") from None
    if not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise SkystackError("--hdu all: inputs must be file paths, patterns or @lists")
    primaries, ccds = match_ccds([os.fspath(p) for p in paths],
                                 None if hdus is None else list(hdus))
    pool = HandlePool(handle_limit)
    try:
        # Each file's headers are read once for all its CCDs (not once per CCD).
        per_file = [extension_frames(os.fspath(path), [c.hdus[j].index for c in ccds], pool)
                    for j, path in enumerate(paths)]
        stacks = []
        for k in range(len(ccds)):
            frames = [file_frames[k] for file_frames in per_file]
            common_unit(frames)  # mixed units refused before any work
            stacks.append((frames, resolve_uncertainty(frames, opts)))
        refuse_output(stacks[0][0], output)
        _run(ccds, stacks, primaries, output, header_for=header_for, backend=backend,
             overwrite=overwrite, progress=progress, threads=threads,
             max_tile_rows=max_tile_rows, extra_header=extra_header)
    finally:
        pool.close()
    return os.fspath(output)


def _run(ccds, stacks, primaries, output, *, header_for, backend, overwrite, progress, threads,
         max_tile_rows, extra_header) -> None:
    engine = bind_backend(backend, threads)
    try:
        describe = engine.describe()
        headers = []
        for ccd, (frames, opts) in zip(ccds, stacks):
            header = header_for(frames, opts, describe)
            has_wcs = "CTYPE1" in header
            own = agreed_cards([h.header for h in ccd.hdus], exclude=lambda k, h=header, w=has_wcs:
                               k in h or (w and is_wcs_key(k)))
            header.extend(own)
            headers.append(header)
        primary = _primary_header(headers, primaries, extra_header)
        writer = MefTileWriter(output, primary,
                               [(c.name, c.shape, h) for c, h in zip(ccds, headers)],
                               max_count=max(len(f) for f, _ in stacks), overwrite=overwrite)
        with committed(writer):
            for k, (frames, opts) in enumerate(stacks):
                combine_frames(frames, opts, engine, [writer.sink(k)],
                               progress=_overall(progress, k, len(stacks)),
                               max_tile_rows=max_tile_rows)
    finally:
        engine.close()


def _primary_header(headers: list[fits.Header], primaries: list[fits.Header],
                    extra_header: fits.Header | None) -> fits.Header:
    """Provenance cards common to every CCD's header, then the inputs' primary cards on which
    they all agree, then ``extra_header``; never a WCS or a per-CCD keyword."""
    def skip(key: str) -> bool:
        return key in _CCD_ONLY or is_wcs_key(key)

    primary = agreed_cards(headers, exclude=skip)
    for key in ("DATE-OBS", "MJD-OBS", "DATE-END", "MJD-END", "DATE-AVG", "MJD-AVG"):
        if all(h.get(key) == headers[0].get(key) for h in headers) and key in headers[0]:
            primary[key] = (headers[0][key], headers[0].comments[key])
    primary.extend(agreed_cards(primaries, exclude=lambda k: k in primary or skip(k)))
    for card in headers[0].cards:
        if card.keyword == "HISTORY":
            primary.append(card, end=True)
    if extra_header is not None:
        primary.extend(extra_header, update=True)
    return primary


def _overall(progress, k: int, n: int):
    """Progress of CCD ``k`` of ``n`` as a share of the whole (in thousandths)."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(k * 1000 + done * 1000 // max(total, 1), n * 1000)

    return report
