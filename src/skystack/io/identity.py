"""What an input file is, cheaply: path, size, modification time and a hash of sampled bytes.

A product is reused, or a cluster run resumed, when its inputs are unchanged. Size and
modification time alone miss a file rewritten in place with its time set back (``touch -r``,
``rsync --times``, a pixel fixed with a script that restores the stat): the sampled hash covers
the first, middle and last :data:`SAMPLE_BYTES` of the file (the whole file when it is smaller
than three samples). The first sample holds the FITS header of any ordinary frame (36 cards of
80 bytes per 2880-byte block: 800 cards in 64 KiB). A change confined to unsampled bytes of a
large file is not seen: this is a cheap guard (three reads per file), not a checksum.

:func:`recipe_fingerprint` is the one digest of "what a product is made from" (the night's
``SKYFPRNT`` and input records, a cluster run's journal): canonical JSON of the recipe, hashed.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

__all__ = ["SAMPLE_BYTES", "content_sample", "file_identity", "recipe_fingerprint",
           "short_digest"]

SAMPLE_BYTES = 64 * 1024


def content_sample(path: str | os.PathLike) -> str:
    """Hex SHA-1 (16 digits) of the first, middle and last :data:`SAMPLE_BYTES` of ``path``
    and of its size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        digest = hashlib.sha1(str(size).encode())
        if size <= 3 * SAMPLE_BYTES:
            offsets = range(0, size, SAMPLE_BYTES)
        else:
            offsets = (0, (size - SAMPLE_BYTES) // 2, size - SAMPLE_BYTES)
        for offset in offsets:
            digest.update(os.pread(fd, SAMPLE_BYTES, offset))
    finally:
        os.close(fd)
    return digest.hexdigest()[:16]


def file_identity(path: str | os.PathLike) -> list:
    """``[absolute path, size, mtime in ns, content sample]`` of a file."""
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns, content_sample(path)]


def short_digest(text: str, digits: int) -> str:
    """The first ``digits`` hex digits of the SHA-1 of ``text`` (UTF-8; the lone surrogates of
    undecodable file names kept as they are)."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:digits]


def _jsonable(value):
    """What JSON cannot write: an array by its dtype, shape and the SHA-1 of its bytes (its
    text would be cut short with "..."), anything else by ``str``."""
    if isinstance(value, np.ndarray):
        return {"dtype": value.dtype.str, "shape": value.shape,
                "sha1": hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()}
    return str(value)


def recipe_fingerprint(recipe, digits: int = 16) -> str:
    """``digits`` hex digits of the SHA-1 of ``recipe`` (JSON-able; arrays and other values
    allowed, see :func:`_jsonable`) written as canonical JSON (keys sorted): equal recipes give
    equal fingerprints, in any process and on any machine."""
    return short_digest(json.dumps(recipe, sort_keys=True, default=_jsonable), digits)
