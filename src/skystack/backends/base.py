"""The Backend protocol: what the tile loop asks of a compute engine.

A backend combines one tile at a time. The pipeline hands it a float32 block of shape
``(n_frames, rows, cols)`` (frame-major, C order; NaN = missing) and per-frame parameters, and the
backend writes the combined image, its standard error and the count of values used into
preallocated outputs of shape ``(rows, cols)``. Backends never do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..config import CombineOptions


@dataclass(frozen=True)
class FrameParams:
    """Per-frame normalisation and weights (length n_frames each).

    Each value v of frame k is used as ``v * scale[k] + zero[k]`` (float32); ``weights`` (float64)
    apply to mean and sum. ``gain`` (e-/ADU) and ``rdnoise`` (e-), float64, are set for the
    noise-model uncertainty only (:mod:`skystack.uncertainty`); backends ignore them.
    """

    scale: np.ndarray
    zero: np.ndarray
    weights: np.ndarray
    gain: np.ndarray | None = None
    rdnoise: np.ndarray | None = None


@dataclass
class TileOutputs:
    """Outputs of one tile: ``image`` and ``uncertainty`` float32, ``count`` int32, (rows, cols)."""

    image: np.ndarray
    uncertainty: np.ndarray
    count: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> TileOutputs:
        return cls(np.empty(shape, np.float32), np.empty(shape, np.float32),
                   np.empty(shape, np.int32))


@runtime_checkable
class Backend(Protocol):
    """A compute engine for combination (and, later, reprojection) of tiles."""

    name: str

    def describe(self) -> str:
        """One line naming the engine and its hardware, for logs and FITS provenance."""

    def combine_tile(self, block: np.ndarray, options: CombineOptions, params: FrameParams,
                     out: TileOutputs) -> None:
        """Combine ``block`` (n_frames, rows, cols) along axis 0 into ``out``."""

    def close(self) -> None:
        """Release threads, streams and device memory."""
