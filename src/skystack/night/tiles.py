"""``skystack night --tiles``: the night's lights co-added on a fixed tiling of the sky.

Survey nights are co-added on sky tiles rather than on one frame's grid
(:mod:`skystack.regrid.skytiles`): after the masters, every calibrated light — every CCD image
of a mosaic — that touches a tile is resampled into it and combined per filter
(:func:`skystack.coadd_tiles.stack_on_tiles`), whatever its OBJECT, so overlapping fields and
pointings land on the same tiles. Products: ``stacks/<TILE>_<FILTER>.fits`` (COUNT, EXPMAP,
IMCMBnnn naming each contributing ``file[CCD]``) and ``stacks/tiles.json`` (each frame's tiles,
each tile's frames); each light's summary row names its tiles.

Lights without a celestial WCS cannot be placed on the sky and are skipped with that reason
(star alignment needs a reference frame, which a fixed tiling does not have). Tile products are
not fingerprinted: an existing one is refused before any work unless ``--overwrite``.
"""

from __future__ import annotations

import os
import time

from ..errors import SkystackError
from ..io.labels import fits_label
from .summary import Product

__all__ = ["build_tiles"]


def build_tiles(night, stack_jobs, tiles, log) -> list[Product]:
    """Co-add the lights of ``stack_jobs`` (the night's per-object stacks, not built) on
    ``tiles`` (a :class:`~skystack.regrid.skytiles.SkyTiling` or a list of tiles) into
    ``OUT/stacks``; records each light's fate in ``night.records``. Returns the products."""
    from ..coadd_tiles import stack_on_tiles
    from ..core.grid import frame_wcs

    frames, wcs_list, names = [], [], []
    for job in stack_jobs:
        for raw in job.frames:
            record = night.records[raw.name]
            try:
                frame = night.light(raw)
                wcs = frame_wcs(frame)
            except SkystackError as exc:
                record.reason = f"{exc} (a sky tile needs the light's celestial WCS)"
                continue
            frames.append(frame)
            wcs_list.append(wcs)
            names.append(raw.name)
    if not frames:
        return []
    t0 = time.perf_counter()
    written = stack_on_tiles(frames, wcs_list, tiles, os.path.join(night.out, "stacks"),
                             overwrite=night.overwrite, **night.stack_options, **night.common())
    seconds = (time.perf_counter() - t0) / max(1, len(written))
    # Products name their frames by IMCMB label (fits_label of the frame's label, 68 chars).
    label_of = {fits_label(f.label)[:68]: name for f, name in zip(frames, names)}
    tiles_of: dict[str, list[str]] = {}
    products = []
    for tp in written:
        inputs = [label_of.get(label, label) for label in tp.frames]
        for name in inputs:
            tiles_of.setdefault(name, []).append(tp.tile.name)
        product = Product("stack", tp.path, inputs, status="built", seconds=seconds,
                          key={"tile": tp.tile.name, "filter": tp.filter})
        products.append(product)
        log(f"stack   built   {os.path.relpath(tp.path, night.out):<34}{len(inputs):4d} frames")
    for name in names:
        record = night.records[name]
        if name in tiles_of:
            record.used = True
            record.group = ", ".join(sorted(set(tiles_of[name])))
        else:
            record.reason = "touches no tile"
    return products
