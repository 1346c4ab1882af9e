"""Frame selection: ``--exclude FILE`` (frames observers set aside) and ``--where EXPR``
(a header selection such as ``IMAGETYP=DARK and EXPTIME=60``).

The ``--where`` language is parsed here, never evaluated by Python (no ``eval``)::

    expr   := term ("or" term)*
    term   := factor ("and" factor)*
    factor := "(" expr ")" | KEY OP VALUE
    OP     := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="

``KEY`` is a header keyword (case-insensitive, e.g. ``DATE-OBS``); ``VALUE`` a bare word or a
quoted string (``'M 31'``). When both the header value and ``VALUE`` read as numbers they are
compared as numbers (``EXPTIME=60`` matches ``60.0``); otherwise as strings, stripped and
case-insensitive (``IMAGETYP=dark`` matches ``'DARK   '``; ``DATE-OBS>=2024-01-02`` compares
ISO dates as text). A frame without ``KEY`` fails that comparison (``!=`` included). ``and``
binds tighter than ``or``.

The exclude file lists one frame a line: a path (relative to the list's directory or to the
working directory) or a bare file name (matched against each input's name); blank lines and
``#`` comments are ignored. An entry that matches no input is logged as a warning: a typo must
not silently let a bad frame in.

:class:`Selection` applies both to loaded frames (:func:`skystack.io.inputs.load_frames`) and to
the night's scanned frames; :meth:`Selection.cards` are the product-header cards recording it.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import SkystackError

__all__ = ["Where", "parse_where", "read_exclude_file", "Selection", "selection_from"]

log = logging.getLogger("skystack")

_TOKEN = re.compile(r"""\s*(?:(?P<paren>[()])|(?P<op><=|>=|!=|==|=|<|>)|(?P<quoted>'[^']*'|"[^"]*")
                        |(?P<word>[^\s()=<>!'"]+)|(?P<bad>\S))""", re.VERBOSE)
_OPS: dict[str, Callable[[object, object], bool]] = {
    "=": lambda a, b: a == b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _number(value) -> float | None:
    """``value`` as a finite or infinite float when it reads as a number (not a bool), else
    None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _text(value) -> str:
    if isinstance(value, bool):
        return "T" if value else "F"
    return str(value).strip().casefold()


@dataclass(frozen=True)
class _Compare:
    key: str
    op: str
    value: str

    def matches(self, header) -> bool:
        if self.key not in header:
            return False
        have = header[self.key]
        a, b = _number(have), _number(self.value)
        if a is not None and b is not None:
            return _OPS[self.op](a, b)
        return _OPS[self.op](_text(have), _text(self.value))


@dataclass(frozen=True)
class _Either:
    parts: tuple

    def matches(self, header) -> bool:
        return any(p.matches(header) for p in self.parts)


@dataclass(frozen=True)
class _All:
    parts: tuple

    def matches(self, header) -> bool:
        return all(p.matches(header) for p in self.parts)


@dataclass(frozen=True)
class Where:
    """A parsed ``--where`` expression (module docstring); ``text`` as given."""

    text: str
    tree: object = field(repr=False)

    def matches(self, header) -> bool:
        """Whether a FITS header (or any mapping of keyword to value) satisfies it."""
        return self.tree.matches(header)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "paren":
            kind = value
        if kind == "bad":
            raise SkystackError(f"--where {text!r}: unexpected character {value!r}")
        if kind == "word" and value.lower() in ("and", "or"):
            kind = value.lower()
        elif kind == "quoted":
            kind, value = "value", value[1:-1]
        tokens.append((kind, value))
    return tokens


def parse_where(text: str) -> Where:
    """Parse a ``--where`` expression; a syntax error is a one-line :class:`SkystackError`."""
    tokens = _tokens(text)
    if not tokens:
        raise SkystackError("--where '': empty selection expression")
    pos = 0

    def fail(what: str):
        got = f"{tokens[pos][1]!r}" if pos < len(tokens) else "the end"
        raise SkystackError(f"--where {text!r}: expected {what}, found {got}")

    def take(*kinds: str) -> str | None:
        nonlocal pos
        if pos < len(tokens) and tokens[pos][0] in kinds:
            pos += 1
            return tokens[pos - 1][1]
        return None

    def expr():
        parts = [term()]
        while take("or") is not None:
            parts.append(term())
        return parts[0] if len(parts) == 1 else _Either(tuple(parts))

    def term():
        parts = [factor()]
        while take("and") is not None:
            parts.append(factor())
        return parts[0] if len(parts) == 1 else _All(tuple(parts))

    def factor():
        if take("(") is not None:
            inner = expr()
            if take(")") is None:
                fail("')'")
            return inner
        key = take("word")
        if key is None:
            fail("a keyword")
        op = take("op")
        if op is None:
            fail(f"a comparison (=, !=, <, <=, >, >=) after {key}")
        value = take("word", "value")
        if value is None:
            fail(f"a value after {key}{op}")
        return _Compare(key.upper(), op, value)

    tree = expr()
    if pos != len(tokens):
        fail("'and', 'or' or the end")
    return Where(text, tree)


def read_exclude_file(path: str | os.PathLike) -> list[str]:
    """The entries of an exclude list (module docstring); an unreadable or binary file is a
    one-line error. An empty list is allowed (nothing excluded)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise SkystackError(f"{path}: cannot read exclude list ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise SkystackError(f"{path}: exclude list is not a text file (binary data)")
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line)
    return entries


@dataclass(frozen=True)
class Selection:
    """What ``--where`` and ``--exclude`` keep (module docstring).

    ``where``: the parsed expression or None; ``exclude_file``: the list's path or None;
    ``entries``: its entries.
    """

    where: Where | None = None
    exclude_file: str | None = None
    entries: tuple[str, ...] = ()

    def _entry_matches(self, entry: str, path: str | None, label: str) -> bool:
        if os.sep not in entry and "/" not in entry:  # a bare name: the input's file name
            return entry == (os.path.basename(path) if path else label)
        if path is None:
            return False
        real = os.path.realpath(path)
        bases = [os.getcwd()] + ([os.path.dirname(os.path.abspath(self.exclude_file))]
                                 if self.exclude_file else [])
        return any(os.path.realpath(os.path.join(b, entry)) == real for b in bases)

    def excluded_by_list(self, path: str | None, label: str) -> str | None:
        """The exclude entry naming this input (``path``, else its ``label``), or None."""
        return next((e for e in self.entries if self._entry_matches(e, path, label)), None)

    def apply(self, items: Sequence, path_of: Callable, label_of: Callable,
              header_of: Callable | None) -> tuple[list, int, int]:
        """The ``items`` kept, and how many the exclude list and ``--where`` dropped.

        ``path_of``/``label_of``/``header_of`` give an item's file path (or None), name and
        header (``header_of`` None: exclusion only, ``--where`` not applied here). Exclude
        entries matching no item are logged as warnings. Leaving nothing is a one-line error.
        """
        used: set[str] = set()
        kept, n_excluded, n_where = [], 0, 0
        for item in items:
            entry = self.excluded_by_list(path_of(item), label_of(item)) if self.entries \
                else None
            if entry is not None:
                used.add(entry)
                n_excluded += 1
                continue
            if self.where is not None and header_of is not None \
                    and not self.where.matches(header_of(item)):
                n_where += 1
                continue
            kept.append(item)
        for entry in self.entries:
            if entry not in used:
                log.warning("%s: excluded frame %r matches no input", self.exclude_file, entry)
        if items and not kept:
            raise SkystackError(f"{self.describe()} leaves no frames (of {len(items)}: "
                                f"{n_excluded} excluded, {n_where} not matching --where)")
        return kept, n_excluded, n_where

    def describe(self) -> str:
        """The selection as given on the command line, e.g. ``--where 'EXPTIME=60'``."""
        parts = []
        if self.where is not None:
            parts.append(f"--where {self.where.text!r}")
        if self.exclude_file is not None:
            parts.append(f"--exclude {self.exclude_file}")
        return "selection " + " ".join(parts)

    def cards(self, n_excluded: int, n_where: int) -> tuple[tuple[str, object, str], ...]:
        """Product-header cards recording this selection: ``SELWHERE`` (the expression),
        ``NEXCLUDE`` (frames dropped by the exclude list), ``NWHEREX`` (frames not matching),
        and a HISTORY line."""
        cards: list[tuple[str, object, str]] = []
        if self.where is not None:
            cards.append(("SELWHERE", self.where.text, "--where header selection of the inputs"))
            cards.append(("NWHEREX", n_where, "input frames not matching --where"))
        if self.exclude_file is not None:
            cards.append(("NEXCLUDE", n_excluded, "input frames dropped by --exclude list"))
        cards.append(("HISTORY", f"skystack {self.describe()}: {n_excluded} excluded, "
                                 f"{n_where} not matching", ""))
        return tuple(cards)


def selection_from(where: str | Where | None = None,
                   exclude: str | os.PathLike | None = None) -> Selection | None:
    """A :class:`Selection` from the ``--where`` text and ``--exclude`` file, or None when
    neither is given."""
    if where is None and exclude is None:
        return None
    if isinstance(where, str):
        where = parse_where(where)
    exclude_file = None if exclude is None else os.fspath(exclude)
    entries = tuple(read_exclude_file(exclude_file)) if exclude_file is not None else ()
    return Selection(where, exclude_file, entries)
