"""``skystack info``: one row of header facts per file."""

from __future__ import annotations

from ..errors import SkystackError
from ..text_table import text_table
from .inputs import expand_paths, read_header

COLUMNS = ("file", "shape", "dtype", "IMAGETYP", "FILTER", "EXPTIME", "DATE-OBS")


def pixel_type(header) -> str:
    """NumPy-style name of the pixels' type as astropy presents them (uint16 for BZERO=32768)."""
    bitpix = header.get("ZBITPIX", header.get("BITPIX"))
    bzero = header.get("BZERO", 0)
    bscale = header.get("BSCALE", 1)
    names = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32", -64: "float64"}
    if bscale == 1 and (bitpix, bzero) in ((16, 2**15), (32, 2**31), (64, 2**63)):
        return "u" + names[bitpix]
    if bitpix == 8 and bzero == -128 and bscale == 1:
        return "int8"
    name = names.get(bitpix, f"BITPIX={bitpix}")
    return f"{name} (scaled)" if bscale != 1 or bzero != 0 else name


def info_rows(items, hdu=None) -> tuple[list[tuple[str, ...]], list[str]]:
    """Rows of :data:`COLUMNS` for every readable file, and one error line per unreadable one."""
    rows: list[tuple[str, ...]] = []
    errors: list[str] = []
    try:
        paths = expand_paths(items)
    except SkystackError as exc:
        return rows, [str(exc)]
    for path in paths:
        try:
            header, shape = read_header(path, hdu, check_data=True)
        except SkystackError as exc:
            errors.append(str(exc))
            continue
        rows.append((path, f"{shape[0]}x{shape[1]}", pixel_type(header),
                     str(header.get("IMAGETYP", "")).strip(), str(header.get("FILTER", "")).strip(),
                     str(header.get("EXPTIME", "")), str(header.get("DATE-OBS", "")).strip()))
    return rows, errors


def format_table(rows) -> str:
    """The rows of :func:`info_rows` under :data:`COLUMNS`, as printed by ``skystack info``."""
    return "\n".join(text_table(COLUMNS, rows))
