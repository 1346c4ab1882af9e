"""The records passed between the loops and the compute engines: per-frame parameters, the
outputs of one tile, and what a run did."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FrameParams", "TileOutputs", "RunStats"]


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


@dataclass
class RunStats:
    """What a combine did: tiles, seconds spent reading (waiting on reads) and combining."""

    n_frames: int
    n_tiles: int
    tile_shape: tuple[int, int]
    seconds: float
    read_wait_seconds: float
    combine_seconds: float
