"""Classify a directory of raw frames by reading every FITS header once.

Each file becomes a :class:`FrameInfo` (role, filter, exposure time, object, binning, shape…) or
a :class:`SkippedFile` saying why it cannot be used. Nothing here raises for a bad file.

Conventions
-----------
* TIFF and XISF files (``.tif``/``.tiff``/``.xisf``) are scanned too, their headers mapped by
  :mod:`skystack.io.formats_tiff` / :mod:`skystack.io.formats_xisf`.
* ``role`` is one of ``'bias'``, ``'dark'``, ``'flat'``, ``'light'``, read from ``IMAGETYP``
  (or, when that is missing or blank, ``IMAGETYPE``, ``OBSTYPE``, ``FRAME``), case-insensitively,
  ignoring spaces, ``_`` and ``-`` and a trailing ``FRAME``: ``Bias Frame``/``ZERO`` are biases,
  ``Flat Field``/``SKYFLAT``/``DOMEFLAT``/``TWIFLAT`` flats, ``OBJECT``/``SCIENCE`` lights…
* ``exptime`` in seconds (``EXPTIME`` or ``EXPOSURE``), NaN when absent; such a frame is kept
  with a note in :attr:`FrameInfo.notes` (it cannot be matched to a dark by exposure time).
* ``shape`` is ``(rows, cols)`` = ``(NAXIS2, NAXIS1)``; ``binning`` is ``(xbin, ybin)`` from
  ``XBINNING``/``YBINNING``, else ``CCDSUM``/``BINNING`` (``'2 2'``, ``'2x2'``, ``2``), else 1x1.
* ``filter`` and ``object`` are the stripped header strings, ``''`` when absent.
* A multi-extension (mosaic) file gives one :class:`FrameInfo` per 2-D image extension (a CCD):
  ``hdu`` its HDU index, ``extname`` its ``EXTNAME``; its header is the extension's with the
  primary's keywords it lacks (role, filter, exposure time, object and date usually live in the
  primary), so that its BIASSEC/TRIMSEC/GAIN are the CCD's own. ``name`` (``file[EXTNAME]``)
  names the CCD image in records and tables. A file with one image is one frame, as before
  (``hdu`` None, ``name`` its path).

Groups (see :class:`GroupKey`) never mix binning or shape: lights of one (OBJECT, FILTER) taken
with two binnings, or two windowed shapes, become two light groups whose keys differ only in
``binning``/``shape``; :func:`group_names` gives them distinct short names.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from astropy.io import fits

from ..errors import SkystackError
from ..io.inputs import expand_paths, image_extensions, read_header, with_primary
from ..io.provenance import exposure_seconds
from ..io.selection import Selection
from ..text_table import text_table
from .names import SEPARATOR, identity_digest, safe_name

__all__ = ["ROLES", "FITS_SUFFIXES", "FrameInfo", "SkippedFile", "GroupKey", "ScanResult",
           "classify_imagetyp", "check_raw_dir", "scan", "group_names", "format_scan_table"]

ROLES = ("bias", "dark", "flat", "light")

#: File name endings that a directory scan picks up (compared case-insensitively).
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fit.fz", ".fts.fz", ".fits.gz",
                 ".fit.gz", ".fts.gz")

#: Header keywords holding the frame type, in order of preference.
TYPE_KEYS = ("IMAGETYP", "IMAGETYPE", "OBSTYPE", "FRAME")

# Normalised type (upper case, no spaces/underscores/hyphens, trailing FRAME dropped) -> role.
_ROLE_OF = {
    "BIAS": "bias", "ZERO": "bias",
    "DARK": "dark",
    "FLAT": "flat", "FLATFIELD": "flat", "SKYFLAT": "flat", "DOMEFLAT": "flat",
    "TWIFLAT": "flat", "TWILIGHTFLAT": "flat", "LAMPFLAT": "flat",
    "LIGHT": "light", "OBJECT": "light", "SCIENCE": "light",
}

# Group fields available to ScanResult.groups, and the default fields per role.
GROUP_FIELDS = ("object", "filter", "exptime", "binning", "shape")
DEFAULT_GROUP_FIELDS = {
    "bias": ("binning", "shape"),
    "dark": ("binning", "shape", "exptime"),
    "flat": ("binning", "shape", "filter"),
    "light": ("object", "filter", "binning", "shape"),
}


@dataclass(frozen=True)
class FrameInfo:
    """One classified raw frame. See the module docstring for units and conventions."""

    path: str
    role: str
    filter: str
    exptime: float
    object: str
    binning: tuple[int, int]
    shape: tuple[int, int]
    date_obs: str
    header: fits.Header = field(repr=False, compare=False)
    notes: tuple[str, ...] = ()
    hdu: int | None = None  # the CCD's HDU index in a multi-extension file, else None
    extname: str = ""  # the CCD's EXTNAME ('' when none or not a multi-extension file)

    @property
    def ccd(self) -> str:
        """The CCD of a multi-extension file: its EXTNAME, else its HDU index; ``''`` else."""
        if self.hdu is None:
            return ""
        return self.extname or str(self.hdu)

    @property
    def name(self) -> str:
        """``path[EXTNAME]`` for a CCD of a multi-extension file, else the path."""
        return self.path if self.hdu is None else f"{self.path}[{self.ccd}]"


@dataclass(frozen=True)
class SkippedFile:
    """A file that cannot be used; ``reason`` is one line (the path is not repeated in it)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class GroupKey(NamedTuple):
    """What the frames of one group share. Fields not used by the grouping are ``None``.

    ``exptime`` is rounded to milliseconds, and ``None`` also when the header has none.
    """

    role: str
    object: str | None = None
    filter: str | None = None
    exptime: float | None = None
    binning: tuple[int, int] | None = None
    shape: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        """Readable description, e.g. ``'M67 V 1x1 512x512'`` or ``'dark 60 s 1x1 512x512'``."""
        parts = []
        if self.object is not None:
            parts.append(self.object or "(no OBJECT)")
        if self.filter is not None:
            parts.append(self.filter or "(no FILTER)")
        if self.role == "dark" or (self.exptime is not None and self.role != "light"):
            parts.append(f"{self.exptime:g} s" if self.exptime is not None else "(no EXPTIME)")
        if self.binning is not None:
            parts.append(f"bin {self.binning[0]}x{self.binning[1]}")
        if self.shape is not None:
            parts.append(f"{self.shape[0]}x{self.shape[1]}")
        return " ".join(parts)


def _group_value(info: FrameInfo, name: str):
    if name == "exptime":
        return round(info.exptime, 3) if math.isfinite(info.exptime) else None
    return getattr(info, name)


def _sort_key(key: GroupKey) -> tuple:
    """Sort None first and NaN-free, so that keys of mixed completeness still order."""
    return tuple((v is not None, v if v is not None else 0) for v in key[1:])


@dataclass
class ScanResult:
    """Frames found by :func:`scan` (in input order) and the files skipped, with reasons."""

    frames: list[FrameInfo] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    # (keyword, value, comment) cards recording --where/--exclude (skystack.io.selection)
    selection: tuple = ()

    def by_role(self, role: str) -> list[FrameInfo]:
        """Frames of one role, in scan order."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
        return [f for f in self.frames if f.role == role]

    def groups(self, role: str, keys: Sequence[str] | None = None
               ) -> dict[GroupKey, list[FrameInfo]]:
        """Frames of ``role`` grouped by the fields ``keys`` (default: that role's usual ones,
        see :data:`DEFAULT_GROUP_FIELDS`); groups are sorted by key, frames keep scan order."""
        keys = DEFAULT_GROUP_FIELDS[role] if keys is None else tuple(keys)
        bad = [k for k in keys if k not in GROUP_FIELDS]
        if bad:
            raise ValueError(f"unknown group fields {bad}; expected some of {GROUP_FIELDS}")
        out: dict[GroupKey, list[FrameInfo]] = {}
        for info in self.by_role(role):
            key = GroupKey(role, **{k: _group_value(info, k) for k in keys})
            out.setdefault(key, []).append(info)
        return {k: out[k] for k in sorted(out, key=_sort_key)}

    def bias_groups(self) -> dict[GroupKey, list[FrameInfo]]:
        """Biases by (binning, shape)."""
        return self.groups("bias")

    def dark_groups(self) -> dict[GroupKey, list[FrameInfo]]:
        """Darks by (binning, shape, exptime)."""
        return self.groups("dark")

    def flat_groups(self) -> dict[GroupKey, list[FrameInfo]]:
        """Flats by (binning, shape, filter)."""
        return self.groups("flat")

    def light_groups(self) -> dict[GroupKey, list[FrameInfo]]:
        """Lights by (object, filter, binning, shape): never mixing binnings or shapes."""
        return self.groups("light")


def classify_imagetyp(value) -> str | None:
    """Role (``'bias'``…) of a frame-type header value, or None when it is not recognised."""
    key = re.sub(r"[\s_\-]+", "", str(value)).upper()
    if key.endswith("FRAME") and len(key) > len("FRAME"):
        key = key[: -len("FRAME")]
    return _ROLE_OF.get(key)


def _frame_type(header: fits.Header) -> tuple[str | None, str | None]:
    """(keyword, stripped value) of the first non-blank frame-type keyword, or (None, None)."""
    for key in TYPE_KEYS:
        if key in header:
            value = str(header[key]).strip()
            if value:
                return key, value
    return None, None


def _text(header: fits.Header, *keys: str) -> str:
    for key in keys:
        value = header.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return ""


def _binning(header: fits.Header) -> tuple[tuple[int, int], str | None]:
    """((xbin, ybin), note or None): XBINNING/YBINNING, else CCDSUM/BINNING, else 1x1."""
    try:
        if "XBINNING" in header or "YBINNING" in header:
            x = int(header.get("XBINNING", header.get("YBINNING")))
            y = int(header.get("YBINNING", x))
        else:
            text = _text(header, "CCDSUM", "BINNING")
            if not text:
                return (1, 1), None
            parts = [int(float(p)) for p in re.split(r"[\s,xX*]+", text) if p]
            if len(parts) not in (1, 2):
                raise ValueError(text)
            x, y = parts[0], parts[-1]
        if x < 1 or y < 1:
            raise ValueError((x, y))
        return (x, y), None
    except (TypeError, ValueError):
        return (1, 1), "unreadable binning keywords, assumed 1x1"


def _classify(path: str) -> list[FrameInfo] | SkippedFile:
    """The frame of ``path``, or one per CCD of a multi-extension file (module docstring)."""
    try:
        primary, images = image_extensions(path)
        if len(images) <= 1:  # one image: exactly as a single-chip file always was
            # (read_header's first image HDU; with none, it says why)
            item = _classify_header(path, *read_header(path))
            return [item] if isinstance(item, FrameInfo) else item
    except SkystackError as exc:
        msg = str(exc)
        return SkippedFile(path, msg[len(path) + 2:] if msg.startswith(f"{path}: ") else msg)
    except Exception as exc:  # never raise for one bad file
        return SkippedFile(path, f"cannot read ({type(exc).__name__}: {exc})")
    frames = []
    for ext in images:
        merged = with_primary(ext.header, primary) if ext.index != 0 else ext.header
        item = _classify_header(path, merged, ext.shape)
        if isinstance(item, SkippedFile):  # one CCD's header fails: the file's others too
            return SkippedFile(path, f"HDU {ext.index}: {item.reason}")
        frames.append(replace(item, hdu=ext.index, extname=ext.extname or ""))
    return frames


def _classify_header(path: str, header: fits.Header, shape) -> FrameInfo | SkippedFile:
    key, value = _frame_type(header)
    if key is None:
        return SkippedFile(path, "no frame type: none of the keywords " + "/".join(TYPE_KEYS)
                           + " is set, so it is not known to be a bias, dark, flat or light")
    role = classify_imagetyp(value)
    if role is None:
        if value.upper().startswith("MASTER"):
            return SkippedFile(path, f"{key} = {value!r} is a master calibration frame, "
                                     "not a raw frame")
        return SkippedFile(path, f"unknown {key} = {value!r} (expected a bias, dark, flat or "
                                 "light type)")
    notes = []
    exptime = exposure_seconds(header)
    if not math.isfinite(exptime) and role != "bias":
        notes.append("no EXPTIME/EXPOSURE keyword: exposure time unknown")
    binning, note = _binning(header)
    if note:
        notes.append(note)
    return FrameInfo(path=path, role=role, filter=_text(header, "FILTER", "FILTNAME"),
                     exptime=exptime, object=_text(header, "OBJECT"), binning=binning,
                     shape=(int(shape[0]), int(shape[1])), date_obs=_text(header, "DATE-OBS"),
                     header=header, notes=tuple(notes))


#: Other image files a directory scan picks up (read by skystack.io.formats_tiff/_xisf).
OTHER_SUFFIXES = (".tif", ".tiff", ".xisf")


def _is_fits_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(FITS_SUFFIXES + OTHER_SUFFIXES)


def _directory_files(directory: str) -> list[str]:
    """FITS files directly inside ``directory`` (not sub-directories, not hidden), sorted."""
    names = sorted(n for n in os.listdir(directory)
                   if not n.startswith(".") and _is_fits_name(n))
    return [os.path.join(directory, n) for n in names
            if os.path.isfile(os.path.join(directory, n))]


def _expand(inputs) -> tuple[list[str], list[SkippedFile]]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths: list[str] = []
    skipped: list[SkippedFile] = []
    for item in inputs:
        text = os.fspath(item)
        if os.path.isdir(text):
            try:
                paths.extend(_directory_files(text))
            except OSError as exc:
                skipped.append(SkippedFile(text, f"cannot list directory ({exc.strerror})"))
            continue
        if not text.startswith("@") and not glob.has_magic(text) and not os.path.exists(text):
            skipped.append(SkippedFile(text, "no such file or directory"))
            continue
        try:
            found = expand_paths([text])
        except SkystackError as exc:
            msg = str(exc)
            skipped.append(SkippedFile(text, msg[len(text) + 2:]
                                       if msg.startswith(f"{text}: ") else msg))
            continue
        for p in found:
            if os.path.isdir(p):
                paths.extend(_directory_files(p))
            else:
                paths.append(p)
    return paths, skipped


def check_raw_dir(raw_dir) -> None:
    """Raise SkystackError unless ``raw_dir``, when one path, is an existing directory (a list
    of paths/globs is left to :func:`scan`, which reports each bad entry)."""
    if not isinstance(raw_dir, (str, os.PathLike)):
        return
    path = os.fspath(raw_dir)
    if not os.path.exists(path):
        raise SkystackError(f"{path}: no such directory")
    if not os.path.isdir(path):
        raise SkystackError(f"{path}: not a directory (give the directory of raw frames)")


def scan(inputs: str | os.PathLike | Iterable[str | os.PathLike],
         selection: Selection | None = None) -> ScanResult:
    """Read and classify every FITS header once.

    ``inputs`` is a directory (its ``*.fits``/``.fit``/``.fts`` files, optionally ``.fz`` or
    ``.gz``, matched case-insensitively, sorted by name, not recursive, hidden files ignored), a
    file, a glob pattern, an ``@list.txt``, or a list mixing these. A file named twice is read
    once. Unreadable, non-FITS, non-2-D and unclassifiable files, missing paths and patterns
    that match nothing become :class:`SkippedFile` entries; this function does not raise for
    them (a caller with nothing in ``frames`` decides what to say).

    ``selection`` (``--exclude``/``--where``): excluded files are not read; ``--where`` keeps
    the frames (calibrations included) whose header matches; leaving none is a one-line error.
    """
    paths, skipped = _expand(inputs)
    n_excluded = 0
    if selection is not None and selection.exclude_file is not None:
        paths, n_excluded, _ = replace(selection, where=None).apply(
            paths, path_of=lambda p: p, label_of=os.path.basename, header_of=None)
    result = _scan_paths(paths, skipped)
    if selection is not None:
        n_where = 0
        if selection.where is not None and result.frames:
            result.frames, _, n_where = Selection(selection.where).apply(
                result.frames, path_of=lambda f: f.path, label_of=lambda f: f.name,
                header_of=lambda f: f.header)
        result.selection = selection.cards(n_excluded, n_where)
    return result


def _scan_paths(paths: list[str], skipped: list[SkippedFile]) -> ScanResult:
    """:func:`scan` of expanded paths."""
    result = ScanResult(skipped=skipped)
    seen: set[str] = set()
    for path in paths:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        item = _classify(path)
        if isinstance(item, SkippedFile):
            result.skipped.append(item)
        else:
            result.frames.extend(item)
    return result


def group_names(groups: Iterable[GroupKey]) -> dict[GroupKey, str]:
    """Short, file-name-safe, distinct names for group keys.

    The name is built from the role (bias/dark/flat only), object, filter and exposure time
    (``M67_V``, ``dark_60s``, ``flat_B``); ``_bin2x2`` and then ``_<rows>x<cols>`` are appended
    only where needed to tell apart groups that would otherwise share a name; groups whose raw
    values differ but still share a name (FILTER ``V/1`` and ``V_1`` both read ``V_1``; names
    compared case-insensitively) get ``~`` and a hash of their raw key, as the night's products
    do (:mod:`skystack.night.names`), so that two groups never write one plot file.
    """
    keys = list(groups)

    def base(k: GroupKey) -> str:
        parts = [] if k.role == "light" else [k.role]
        if k.object is not None:
            parts.append(safe_name(k.object or "unknown"))
        if k.filter is not None:
            parts.append(safe_name(k.filter or "none", "none"))
        if k.exptime is not None and k.role != "light":
            parts.append(f"{k.exptime:g}s".replace(".", "p"))
        return "_".join(parts)

    def with_bin(k: GroupKey) -> str:
        b = k.binning
        return base(k) + (f"_bin{b[0]}x{b[1]}" if b is not None else "")

    def with_shape(k: GroupKey) -> str:
        s = k.shape
        return with_bin(k) + (f"_{s[0]}x{s[1]}" if s is not None else "")

    names: dict[GroupKey, str] = {}
    for k in keys:
        for name in (base, with_bin, with_shape):
            if sum(name(o).casefold() == name(k).casefold() for o in keys) == 1:
                names[k] = name(k)
                break
        else:  # raw values that read alike once made safe: the raw key's hash tells them apart
            names[k] = f"{base(k)}{SEPARATOR}{identity_digest(tuple(k))}"
    return names


def _fmt_exptimes(frames: list[FrameInfo]) -> str:
    values = sorted({round(f.exptime, 3) for f in frames if math.isfinite(f.exptime)})
    text = ", ".join(f"{v:g}" for v in values)
    if any(not math.isfinite(f.exptime) for f in frames):
        text = f"{text}, ?" if text else "?"
    return text


def format_scan_table(result: ScanResult) -> str:
    """A readable table: one row per group (role, group, number of frames, exposure times),
    then the frames that carry notes and the skipped files with their reasons."""
    rows = []
    for role in ROLES:
        for key, frames in result.groups(role).items():
            rows.append((role, key.label, str(len(frames)), _fmt_exptimes(frames)))
    header = ("role", "group", "frames", "exptime [s]")
    lines = [f"{len(result.frames)} frames classified, {len(result.skipped)} skipped"]
    if rows:
        lines += text_table(header, rows)
    noted = [f for f in result.frames if f.notes]
    if noted:
        lines.append("")
        lines.append(f"notes ({len(noted)}):")
        lines += [f"  {f.path}: {'; '.join(f.notes)}" for f in noted]
    if result.skipped:
        lines.append("")
        lines.append(f"skipped ({len(result.skipped)}):")
        lines += [f"  {s}" for s in result.skipped]
    return "\n".join(lines)
