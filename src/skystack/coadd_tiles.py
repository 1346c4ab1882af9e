"""Co-adds on sky tiles: every frame (one CCD image) that touches a tile is resampled into it and
combined, one product per tile and filter.

The tiles are a :class:`~skystack.regrid.skytiles.SkyTiling` (a fixed tessellation of the sky)
or a user's list of :class:`~skystack.regrid.skytiles.SkyTile` (one FITS header each:
:func:`tiles_from_header_files`). :func:`stack_on_tiles` is the one entry point (``skystack
stack --tiles``, and a night's tiling mode): for each tile that some frame touches and each
FILTER, it runs the ordinary stack (:func:`skystack.api_reproject.stack_to_file` on the tile's
grid), so memory is that of one tile's stack whatever the number of tiles, and writes

* ``OUT_DIR/<TILE>_<FILTER>.fits``: image, UNCERT, MASK, COUNT (frames per pixel), EXPMAP
  (seconds per pixel); header ``TILENAME``, ``TILERING``/``TILEIDX`` (tiles of a tiling),
  ``FILTER``, and ``NCOMBINE``/``IMCMBnnn`` listing the frames combined (a CCD of a
  multi-extension file as ``file.fits[EXTNAME]``, see :func:`load_tile_frames`);
* ``OUT_DIR/tiles.json``: the tiling, each frame's tiles and each tile's products with their
  frames (read back from the products' own IMCMB cards, so the two always agree).

Tiles that no frame touches are not written. A FILTER missing from a header groups as
``nofilter``; FILTER values that give the same file name (``V/1`` and ``V_1``) get a short hash
of the raw value after a ``~``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from astropy.io import fits
from astropy.wcs import WCS

from .api_reproject import read_header_file, stack_to_file
from .core.frame import Frame
from .core.grid import Grid, frame_wcs
from .errors import SkystackError
from .io.atomic import atomic_write
from .io.inputs import expand_paths, load_frames
from .io.labels import fits_label, safe_name
from .io.reader import HandlePool
from .regrid.skytiles import SkyTile, SkyTiling, tile_from_header, tiles_touching

__all__ = ["TileProduct", "stack_on_tiles", "stack_files_on_tiles", "load_tile_frames",
           "tiles_from_header_files", "write_tiles_json", "NO_FILTER"]

log = logging.getLogger("skystack")

NO_FILTER = "nofilter"
# Extensions of a multi-extension file that hold no sky image of their own.
_NOT_SKY = {"MASK", "UNCERT", "VARIANCE", "WEIGHT", "COUNT", "EXPMAP", "FOOTPRINT", "BPM"}


@dataclass(frozen=True)
class TileProduct:
    """One written co-add: its ``tile``, raw ``filter`` value (None when the frames have no
    FILTER), ``path`` and the labels of the ``frames`` combined (its IMCMB cards)."""

    tile: SkyTile
    filter: str | None
    path: str
    frames: tuple[str, ...]


def load_tile_frames(inputs, hdu: int | str | None = None) -> list[Frame]:
    """Frames for a tile co-add: paths, globs or ``@lists`` (every image extension of a
    multi-extension file is a frame of its own, labelled ``file.fits[EXTNAME]`` or
    ``file.fits[3]``, unless ``hdu`` picks one), or frames already loaded (used as given).
    Extensions named MASK, UNCERT, WEIGHT and the like are not sky images and are left out."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    frames: list[Frame] = []
    pool = HandlePool()
    paths = [i for i in items if isinstance(i, (str, os.PathLike))]
    others = [i for i in items if not isinstance(i, (str, os.PathLike))]
    if others:
        frames.extend(load_frames(others, hdu=hdu))
    for path in expand_paths(paths):
        extensions = None if hdu is not None else _sky_extensions(path)
        if not extensions:  # one image (or hdu given): the ordinary reader and its checks
            frames.extend(load_frames([path], hdu=hdu, pool=pool))
            continue
        for index, extname in extensions:
            (frame,) = load_frames([path], hdu=index, pool=pool)
            frames.append(replace(frame, label=f"{frame.label}[{extname or index}]"))
    if not frames:
        raise SkystackError("no input files")
    return frames


def _sky_extensions(path: str) -> list[tuple[int, str]] | None:
    """(index, EXTNAME) of each 2-D image HDU of a file with more than one; None otherwise
    (or when the file cannot be read: the ordinary reader then says why)."""
    try:
        with fits.open(path, memmap=False) as hdul:
            found = []
            for i, h in enumerate(hdul):
                naxis = h.header.get("ZNAXIS", h.header.get("NAXIS", 0)) \
                    if isinstance(h, fits.CompImageHDU) else h.header.get("NAXIS", 0)
                if not isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) \
                        or naxis != 2:
                    continue
                name = str(h.header.get("EXTNAME", "")).strip()
                if name.upper() in _NOT_SKY:
                    continue
                found.append((i, name))
    except (OSError, ValueError):
        return None
    return found if len(found) > 1 else None


def tiles_from_header_files(paths: Sequence[str | os.PathLike]) -> list[SkyTile]:
    """A user's tiles, one per header file (FITS, or text of 80-column cards); each named by
    its TILENAME, else EXTNAME, else the file's stem. Two tiles of one name are an error."""
    tiles: list[SkyTile] = []
    seen: dict[str, str] = {}
    for path in expand_paths(paths):
        header = read_header_file(path)
        tile = tile_from_header(header, source=path, default_name=Path(path).stem)
        name = safe_name(tile.name)
        if name in seen:
            raise SkystackError(f"{path}: tile name {tile.name!r} already used by {seen[name]}")
        seen[name] = path
        tiles.append(replace(tile, name=name))
    if not tiles:
        raise SkystackError("no tile header files")
    return tiles


def _filter_names(values: Sequence[str | None]) -> dict[str | None, str]:
    """File-name part of each raw FILTER value; a hash of the raw value after ``~`` where two
    values would give the same name."""
    names = {v: safe_name(v) if v is not None else NO_FILTER for v in values}
    counts: dict[str, int] = {}
    for n in names.values():
        counts[n] = counts.get(n, 0) + 1
    for v, n in names.items():
        if counts[n] > 1:
            names[v] = f"{n}~{hashlib.sha1(str(v).encode()).hexdigest()[:8]}"
    return names


def stack_on_tiles(frames: Sequence[Frame], wcs_list: Sequence[WCS] | None,
                   tiles: SkyTiling | Sequence[SkyTile], out_dir: str | os.PathLike, *,
                   filter_key: str = "FILTER", overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None,
                   on_product: Callable[[TileProduct, int, int], None] | None = None,
                   **stack_options) -> list[TileProduct]:
    """Co-add ``frames`` on the sky ``tiles`` into ``out_dir`` (see the module docstring).

    Parameters
    ----------
    frames
        Loaded frames (:func:`load_tile_frames`, or a night's calibrated frames), any number;
        all of one shape (as :func:`skystack.stack`).
    wcs_list
        One celestial WCS per frame (e.g. from a registration); None: each frame's own
        (:func:`skystack.core.grid.frame_wcs`).
    tiles
        A :class:`SkyTiling` (only the tiles some frame touches are made) or a user's list.
    out_dir
        Created if missing. Products ``<TILE>_<FILTER>.fits`` and ``tiles.json``.
    filter_key
        Header keyword grouping the frames (one product per tile and value).
    overwrite
        Replace existing products (and ``tiles.json``); otherwise an existing product is a
        one-line error before it is computed.
    progress
        Passed to each tile's stack (``progress(done, total)`` over that tile's row blocks).
    on_product
        Called as ``on_product(product, k, n)`` after each product is written (k-th of n).
    stack_options
        Every option of :func:`skystack.api_reproject.stack_to_file` but the grid (``interp``,
        ``conserve_flux``, ``backend``, ``threads``, ``max_tile_rows``, ``cluster``,
        ``method``, ``reject``, ``weights``, ``mem_limit``, ...).

    Returns
    -------
    list of TileProduct
        In tile order (ring, index for a tiling; list order otherwise), then filter order.
    """
    for key in ("grid", "reference", "grid_header", "crop", "wcs_list", "align"):
        if key in stack_options:
            raise SkystackError(f"stack_on_tiles: {key!r} cannot be given (each tile is the grid)")
    frames = list(frames)
    if not frames:
        raise SkystackError("no input frames")
    wcs_list = [frame_wcs(f) for f in frames] if wcs_list is None else list(wcs_list)
    if len(wcs_list) != len(frames):
        raise SkystackError(f"{len(wcs_list)} WCS given for {len(frames)} frames")
    touching = tiles_touching([(w, f.shape) for w, f in zip(wcs_list, frames)], tiles,
                              labels=[f.label for f in frames])
    by_name: dict[str, SkyTile] = {}
    members: dict[str, list[int]] = {}
    for k, found in enumerate(touching):
        for t in found:
            by_name.setdefault(t.name, t)
            members.setdefault(t.name, []).append(k)
    for k, found in enumerate(touching):
        if not found:
            log.info("%s touches no tile: not stacked", frames[k].label)

    filters = [_filter_value(f.header, filter_key) for f in frames]
    names = _filter_names(sorted(set(filters), key=lambda v: (v is None, str(v))))
    jobs: list[tuple[SkyTile, str | None, list[int]]] = []
    for tile in sorted(by_name.values(), key=_tile_order(tiles)):
        for value in sorted({filters[k] for k in members[tile.name]},
                            key=lambda v: (v is None, str(v))):
            jobs.append((tile, value, [k for k in members[tile.name] if filters[k] == value]))

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"{tile.name}_{names[value]}.fits") for tile, value, _ in jobs]
    if not overwrite:  # before any work: not after hours of the first tiles
        for p in paths:
            if os.path.exists(p):
                raise SkystackError(f"{p}: output exists (use --overwrite to replace it)")
    products: list[TileProduct] = []
    for n, ((tile, value, idx), path) in enumerate(zip(jobs, paths), start=1):
        extra = fits.Header()
        extra["TILENAME"] = (tile.name, "sky tile of this co-add")
        if tile.ring is not None:
            extra["TILERING"] = (tile.ring, "declination ring of the tile")
            extra["TILEIDX"] = (tile.index, "tile index in its ring")
        if value is not None:
            extra[filter_key] = value
        log.info("tile %s, %s %s: %d frames", tile.name, filter_key, value, len(idx))
        stack_to_file([frames[k] for k in idx], path, grid=Grid(tile.wcs, tile.shape),
                      wcs_list=[wcs_list[k] for k in idx], overwrite=overwrite,
                      progress=progress, extra_header=extra, **stack_options)
        product = TileProduct(tile, value, path, _combined_labels(path))
        products.append(product)
        if on_product is not None:
            on_product(product, n, len(jobs))
    write_tiles_json(os.path.join(out_dir, "tiles.json"), frames, products, tiles)
    return products


def stack_files_on_tiles(inputs, out_dir: str | os.PathLike, *, size_deg: float | None = None,
                         scale_arcsec: float | None = None, margin: int | None = None,
                         tile_headers: Sequence[str | os.PathLike] | None = None,
                         hdu: int | str | None = None, **options) -> list[TileProduct]:
    """``skystack stack FILES --tiles SIZE --pixel-scale ARCSEC -o OUT_DIR`` (or
    ``--tiles-from HEADERS``): :func:`load_tile_frames`, then :func:`stack_on_tiles` on the
    tiling of ``size_deg`` (deg) and ``scale_arcsec`` (arcsec/px) with ``margin`` px of overlap,
    or on the tiles of ``tile_headers``; ``options`` as for :func:`stack_on_tiles`."""
    tiles = tiles_from_options(size_deg, scale_arcsec, margin, tile_headers)
    if tiles is None:
        raise SkystackError("give a tile size (--tiles) or tile headers (--tiles-from), "
                            "one of the two")
    frames = load_tile_frames(inputs, hdu=hdu)
    return stack_on_tiles(frames, None, tiles, out_dir, **options)


def tiles_from_options(size_deg: float | None, scale_arcsec: float | None,
                       margin: int | None, tile_headers: Sequence[str | os.PathLike] | None
                       ) -> SkyTiling | list[SkyTile] | None:
    """The tiles of the command line's ``--tiles DEG --pixel-scale ARCSEC [--tile-margin PX]``
    or ``--tiles-from HEADERS``; None when neither is given; a one-line error for both, or for
    options that do not go together."""
    if size_deg is None and not tile_headers:
        if scale_arcsec is not None or margin is not None:
            raise SkystackError("--pixel-scale and --tile-margin need --tiles")
        return None
    if size_deg is not None and tile_headers:
        raise SkystackError("give a tile size (--tiles) or tile headers (--tiles-from), "
                            "one of the two")
    if tile_headers:
        if scale_arcsec is not None or margin is not None:
            raise SkystackError("--pixel-scale and --tile-margin go with --tiles, not with "
                                "--tiles-from (the headers fix the tiles' grids)")
        return tiles_from_header_files(tile_headers)
    if scale_arcsec is None:
        raise SkystackError("--tiles needs --pixel-scale (arcsec per pixel)")
    return SkyTiling(size_deg, scale_arcsec, margin)


def _filter_value(header: fits.Header, key: str) -> str | None:
    value = header.get(key)
    if value is None or str(value).strip() == "":
        return None
    return str(value).strip()


def _tile_order(tiles) -> Callable[[SkyTile], tuple]:
    if isinstance(tiles, SkyTiling):
        return lambda t: (t.ring, t.index)
    order = {t.name: i for i, t in enumerate(tiles)}
    return lambda t: (order[t.name],)


def _combined_labels(path: str) -> tuple[str, ...]:
    """The frames a product lists as combined (IMCMBnnn), in order."""
    header = fits.getheader(path)
    labels = [str(header[f"IMCMB{i:03d}"]) for i in range(1, 1000) if f"IMCMB{i:03d}" in header]
    if int(header.get("NCOMBINE", len(labels))) != len(labels):
        log.info("%s: more than 999 frames; tiles.json lists the first 999", path)
    return tuple(labels)


def write_tiles_json(path: str, frames: Sequence[Frame], products: Sequence[TileProduct],
                     tiles: SkyTiling | Sequence[SkyTile]) -> None:
    """``tiles.json``: the tiling (``tiling``: its parameters, or ``"user"``), ``frames``
    (label → the tiles whose products combined it, sorted) and ``tiles`` (name → centre,
    shape, ring/index and, per filter, the product's file name and frame labels)."""
    # Keyed by the label as the products' IMCMB cards write it.
    frame_tiles: dict[str, set[str]] = {fits_label(f.label)[:68]: set() for f in frames}
    tile_entries: dict[str, dict] = {}
    for p in products:
        entry = tile_entries.setdefault(p.tile.name, {
            "ra": p.tile.ra, "dec": p.tile.dec, "shape": list(p.tile.shape),
            "ring": p.tile.ring, "index": p.tile.index, "products": {}})
        entry["products"][p.filter if p.filter is not None else NO_FILTER] = {
            "file": os.path.basename(p.path), "frames": list(p.frames)}
        for label in p.frames:
            frame_tiles.setdefault(label, set()).add(p.tile.name)
    doc = {"tiling": tiles.describe() if isinstance(tiles, SkyTiling) else "user",
           "frames": {k: sorted(v) for k, v in frame_tiles.items()},
           "tiles": tile_entries}
    with atomic_write(path, overwrite=True) as tmp, open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
