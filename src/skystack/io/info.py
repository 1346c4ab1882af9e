"""``skystack info``: one row of header facts per file, or per CCD of a multi-extension file.

A file with several image extensions (a mosaic camera's exposure, plain or ``.fits.fz``) gives
one row per image extension, named ``path[EXTNAME]`` (cfitsio's extended file name; ``path[i]``
for an extension without a name), with IMAGETYP, FILTER, EXPTIME and DATE-OBS taken from the
primary header where the extension does not have them. ``--hdu`` picks one HDU of every file
(``--hdu all``: the default).
"""

from __future__ import annotations

import os

from ..errors import SkystackError
from ..text_table import text_table
from .inputs import expand_paths, image_extensions, read_header
from .selection import Selection

COLUMNS = ("file", "shape", "dtype", "IMAGETYP", "FILTER", "EXPTIME", "DATE-OBS")


def pixel_type(header) -> str:
    """NumPy-style name of the pixels' type as astropy presents them (uint16 for BZERO=32768)."""
    bitpix = header.get("ZBITPIX", header.get("BITPIX"))
    if bitpix is None and "PIXTYPE" in header:  # a TIFF or XISF image (io/formats_*.py)
        return str(header["PIXTYPE"])
    bzero = header.get("BZERO", 0)
    bscale = header.get("BSCALE", 1)
    names = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32", -64: "float64"}
    if bscale == 1 and (bitpix, bzero) in ((16, 2**15), (32, 2**31), (64, 2**63)):
        return "u" + names[bitpix]
    if bitpix == 8 and bzero == -128 and bscale == 1:
        return "int8"
    name = names.get(bitpix, f"BITPIX={bitpix}")
    return f"{name} (scaled)" if bscale != 1 or bzero != 0 else name


def info_rows(items, hdu=None, selection: Selection | None = None
              ) -> tuple[list[tuple[str, ...]], list[str]]:
    """Rows of :data:`COLUMNS` for every readable file, and one error line per unreadable one;
    ``selection`` (``--exclude``/``--where`` on the primary header) lists only the files it
    keeps (an unreadable file stays, for its error line)."""
    rows: list[tuple[str, ...]] = []
    errors: list[str] = []
    try:
        paths = expand_paths(items)
        if selection is not None:
            paths, _, _ = selection.apply(paths, path_of=lambda p: p,
                                          label_of=os.path.basename, header_of=None)
            if selection.where is not None:
                paths = [p for p in paths if _kept_by_where(p, selection)]
                if not paths:
                    raise SkystackError(f"{selection.describe()} leaves no files")
    except SkystackError as exc:
        return rows, [str(exc)]
    for path in paths:
        try:
            rows.extend(_file_rows(path, hdu))
        except SkystackError as exc:
            errors.append(str(exc))
    return rows, errors


def _kept_by_where(path: str, selection: Selection) -> bool:
    """Whether ``--where`` keeps ``path`` (its primary header); an unreadable file is kept, so
    that its error line is shown."""
    try:
        return selection.where.matches(image_extensions(path)[0])
    except SkystackError:
        return True


def _file_rows(path: str, hdu) -> list[tuple[str, ...]]:
    """The rows of one file: one, or one per image extension of a multi-extension file."""
    if hdu is None or (isinstance(hdu, str) and hdu.strip().lower() == "all"):
        primary, found = image_extensions(path)
        if len(found) > 1:
            rows = []
            for ext in found:
                header, shape = read_header(path, ext.index, check_data=True)
                for card in primary.cards:  # the exposure's keywords live in the primary
                    if card.keyword not in header and card.keyword not in ("COMMENT", "HISTORY"):
                        header.append(card, end=True)
                name = ext.extname if ext.extname is not None else str(ext.index)
                rows.append(_row(f"{path}[{name}]", header, shape))
            return rows
    header, shape = read_header(path, hdu, check_data=True)
    return [_row(path, header, shape)]


def _row(name: str, header, shape) -> tuple[str, ...]:
    return (name, f"{shape[0]}x{shape[1]}", pixel_type(header),
            str(header.get("IMAGETYP", "")).strip(), str(header.get("FILTER", "")).strip(),
            str(header.get("EXPTIME", "")), str(header.get("DATE-OBS", "")).strip())


def format_table(rows) -> str:
    """The rows of :func:`info_rows` under :data:`COLUMNS`, as printed by ``skystack info``."""
    return "\n".join(text_table(COLUMNS, rows))
