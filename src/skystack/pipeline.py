"""The combine of a stack of frames, pixel by pixel along the frame axis.

:func:`combine_frames` prepares a run (uncertainty mode, per-frame normalisation, the sinks of
the uncertainty) and hands it to the backend's ``run_combine``
(:class:`skystack.backends.base.Backend`): the CPU runs the host tile loop of
:mod:`skystack.core.combine_loop` (plan → read → combine → write, the next tile read while this
one combines; memory bounded by ``options.mem_limit``), the GPU streams raw bytes through pinned
memory with its own tiling and buffers (:mod:`skystack.backends.gpu.streaming`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .backends.base import Backend
from .clip_efficiency import clip_variance_factors
from .config import CombineOptions
from .core.combine_loop import Progress
from .core.frame import Frame
from .core.records import RunStats
from .core.tiles import Tile
from .io.sigma import TileSigma, resolve_uncertainty, sigma_source
from .normalization import frame_params
from .uncertainty import uncertainty_sinks

__all__ = ["ArraySink", "RunStats", "Progress", "combine_frames"]

log = logging.getLogger("skystack")


class ArraySink:
    """Collects the tiles of a combine into whole in-memory arrays (a
    :class:`~skystack.io.contracts.TileSink`)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.image = np.empty(shape, np.float32)
        self.uncertainty = np.empty(shape, np.float32)
        self.count = np.empty(shape, np.int32)

        self.mask: np.ndarray | None = None
        self.extras: dict[str, np.ndarray] = {}

    def write_tile(self, tile: Tile, image, uncertainty, count, *, mask=None,
                   extras=None) -> None:
        sl = (slice(tile.r0, tile.r1), slice(tile.c0, tile.c1))
        self.image[sl] = image
        self.uncertainty[sl] = uncertainty
        self.count[sl] = count
        if mask is not None:
            if self.mask is None:
                self.mask = np.zeros(self.image.shape, bool)
            self.mask[sl] = mask
        for name, plane in (extras or {}).items():
            if name not in self.extras:
                self.extras[name] = np.full(self.image.shape, np.nan, np.float32)
            self.extras[name][sl] = plane


def combine_frames(frames: list[Frame], options: CombineOptions, backend: Backend,
                   sinks: Sequence, *, progress: Progress | None = None,
                   max_tile_rows: int | None = None, read_workers: int = 2) -> RunStats:
    """Combine ``frames`` tile by tile with ``backend``, handing each finished tile to ``sinks``.

    ``options`` must be validated (``CombineOptions.validated()``). Each sink has
    ``write_tile(tile, image, uncertainty, count)``; the uncertainty is the one
    ``options.uncertainty`` asks for (:mod:`skystack.uncertainty`).
    """
    t0 = time.perf_counter()
    options = resolve_uncertainty(frames, options)
    params = frame_params(frames, options)
    sigma = None
    if options.uncertainty == "propagate":
        sigma = TileSigma([sigma_source(f) for f in frames])
    sinks = uncertainty_sinks(sinks, options, params, sigma,  # UNCERT: skystack.uncertainty
                              clip_variance_factors(options, params))
    stats = backend.run_combine(frames, options, params, sinks, progress=progress,
                                max_tile_rows=max_tile_rows, read_workers=read_workers)
    stats = replace(stats, seconds=time.perf_counter() - t0)
    log.debug("combine: %s", stats)
    return stats
