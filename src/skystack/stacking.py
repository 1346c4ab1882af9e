"""Reprojected stacking: every output tile is filled by resampling each frame straight into it,
then combined — no resampled copy of any frame is ever written.

:func:`stack_frames` prepares a run (uncertainty mode, per-frame normalisation, the sinks of
the uncertainty, EXPTIME per frame) and hands it to the backend's ``run_stack``
(:class:`skystack.backends.base.Backend`): the CPU runs the host loop of
:mod:`skystack.core.stack_loop` (its rules are described there), the GPU resamples on the device
into the tile block it combines (:mod:`skystack.backends.gpu.stack_streaming`), with the same
rules and results. The grid and the frames' WCS live in :mod:`skystack.core.grid`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
from astropy.wcs import WCS

from .backends.base import Backend
from .clip_efficiency import clip_variance_factors
from .config import CombineOptions
from .core.frame import Frame
from .core.grid import Grid, frame_wcs, frames_off_grid
from .core.records import RunStats
from .core.stack_loop import (
    coverage_and_expmap,
    fill_stack_block,
    stack_tile_plan,
    write_stack_tile,
)
from .io.provenance import exposure_seconds
from .io.sigma import ResampledSigma, resolve_uncertainty, sigma_source
from .normalization import frame_params
from .rejection_noise import check_ccdclip_resampling
from .uncertainty import uncertainty_sinks

__all__ = ["Grid", "frame_wcs", "frames_off_grid", "stack_frames", "stack_tile_plan",
           "fill_stack_block", "coverage_and_expmap", "write_stack_tile"]

log = logging.getLogger("skystack")


def stack_frames(frames: list[Frame], grid: Grid, options: CombineOptions, backend: Backend,
                 sinks, *, interp: str = "bilinear", conserve_flux: bool = False,
                 progress=None, max_tile_rows: int | None = None, workers: int = 2,
                 step: int = 32, wcs_list: list[WCS] | None = None,
                 drizzle=None) -> RunStats:
    """Reproject ``frames`` onto ``grid`` and combine them tile by tile into ``sinks``.

    Each sink gets ``write_tile(tile, image, uncertainty, coverage, mask=..., extras={"EXPMAP":
    ...})``; ``mask`` is True where no value survived rejection. ``drizzle`` (a
    :class:`skystack.drizzling.DrizzleParams`) drizzles instead, on the CPU
    (:func:`skystack.drizzling.drizzle_frames`).
    """
    t0 = time.perf_counter()
    if wcs_list is None:
        wcs_list = [frame_wcs(f) for f in frames]
    if drizzle is not None:
        from .drizzling import drizzle_frames

        stats = drizzle_frames(frames, grid, replace(options, uncertainty="scatter"), sinks,
                               wcs_list=wcs_list, params=drizzle, conserve_flux=conserve_flux,
                               progress=progress, max_tile_rows=max_tile_rows, step=step,
                               workers=workers)
        return replace(stats, seconds=time.perf_counter() - t0)
    options = resolve_uncertainty(frames, options)
    check_ccdclip_resampling(options, conserve_flux)
    params = frame_params(frames, options, wcs_list)
    sigma = None
    if options.uncertainty == "propagate":
        sigma = ResampledSigma(frames, [sigma_source(f) for f in frames], wcs_list, grid,
                               interp, conserve_flux, step)
    sinks = uncertainty_sinks(sinks, options, params, sigma,  # UNCERT: skystack.uncertainty
                              clip_variance_factors(options, params))
    exptimes = np.nan_to_num(np.array([exposure_seconds(f.header) for f in frames], np.float32))
    stats = backend.run_stack(frames, grid, options, params, sinks, wcs_list=wcs_list,
                              exptimes=exptimes, interp=interp, conserve_flux=conserve_flux,
                              progress=progress, max_tile_rows=max_tile_rows, workers=workers,
                              step=step)
    return replace(stats, seconds=time.perf_counter() - t0)
