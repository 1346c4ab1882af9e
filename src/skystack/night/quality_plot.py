"""Frame-quality plots of a night's stacks: per light frame, against its DATE-OBS, the median
stellar FWHM (pixels), the number of stars, the sky background (ADU) and the frame's weight in
the stack; frames left out of the stack are marked (red crosses).

The values are the night's own per-frame records (:class:`~skystack.night.summary.FrameRecord`
``stars``, measured by :mod:`skystack.register` when the stack was aligned or selected by stars;
NaN when a frame was not measured, e.g. a WCS-aligned stack without star selection). ``weight``
is the stack's ``--weights`` applied to the raw headers (:func:`skystack.normalization.
frame_weights`; 1 when unweighted), divided by its largest value, and 0 for a frame left out.
Time is hours since the first frame with a DATE-OBS; without any DATE-OBS, the frame's index.

:func:`quality_series` returns exactly the arrays that :func:`write_quality_plot` draws.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.frame import Frame
from ..errors import SkystackError
from ..io.atomic import atomic_write

__all__ = ["QualitySeries", "quality_series", "write_quality_plot"]


@dataclass
class QualitySeries:
    """The per-frame values of one stack's quality plot (module docstring); ``time_label``
    names the x axis."""

    names: list[str]
    time: np.ndarray
    time_label: str
    fwhm: np.ndarray
    n_stars: np.ndarray
    background: np.ndarray
    weight: np.ndarray
    rejected: np.ndarray


def _mjd(date_obs: str) -> float:
    if not date_obs:
        return math.nan
    try:
        from astropy.time import Time

        return float(Time(date_obs.strip(), format="isot", scale="utc").mjd)
    except ValueError:
        return math.nan


def _value(stars: dict, key: str) -> float:
    value = stars.get(key)
    return math.nan if value is None else float(value)


def _weights(frames, stack_options: dict) -> np.ndarray:
    """The stack's weights from the raw headers, largest 1; ones when they cannot be had."""
    from ..api import combine_options
    from ..normalization import frame_weights

    try:
        opts = combine_options(**stack_options)
        w = frame_weights([Frame(f.name, f.info.shape, f.info.header, None) for f in frames],
                          opts)
    except SkystackError:  # e.g. a light lacking the weight keyword: not stacked either
        return np.ones(len(frames))
    top = np.max(w) if len(w) else 1.0
    return w / top if top > 0 else np.ones(len(frames))


def quality_series(frames: Sequence, records: dict, stack_options: dict) -> QualitySeries:
    """The quality values of a stack's raw ``frames`` (:class:`~skystack.night.plan.RawFrame`
    s, from the night's plan) from the night's ``records`` (by frame name)."""
    names = [f.name for f in frames]
    recs = [records.get(n) for n in names]
    stars = [r.stars if r is not None and r.stars else {} for r in recs]
    mjd = np.array([_mjd(f.info.date_obs) for f in frames])
    if np.isfinite(mjd).any():
        time = (mjd - np.nanmin(mjd)) * 24.0
        label = "hours since first frame (DATE-OBS)"
    else:
        time = np.arange(len(frames), dtype=float)
        label = "frame (no DATE-OBS)"
    rejected = np.array([r is None or not r.used for r in recs], bool)
    weight = np.where(rejected, 0.0, _weights(frames, stack_options))
    return QualitySeries(
        names=names, time=time, time_label=label,
        fwhm=np.array([_value(s, "fwhm_px") for s in stars]),
        n_stars=np.array([_value(s, "n_stars") for s in stars]),
        background=np.array([_value(s, "background") for s in stars]),
        weight=weight, rejected=rejected)


def write_quality_plot(series: QualitySeries, path: str, title: str = "") -> QualitySeries:
    """Draw ``series`` as a four-panel PNG at ``path`` (atomically); returns ``series``.
    Drawn on a matplotlib ``Figure`` with the Agg canvas: pyplot's state is left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True)
    kept = ~series.rejected
    panels = (("FWHM (px)", series.fwhm), ("stars", series.n_stars),
              ("background (ADU)", series.background), ("weight", series.weight))
    for ax, (label, values) in zip(axes, panels):
        ax.plot(series.time[kept], values[kept], "o-", color="0.2", markersize=4, linewidth=0.8)
        if series.rejected.any():
            ax.plot(series.time[series.rejected], values[series.rejected], "x", color="red",
                    markersize=7, label="left out of the stack")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if series.rejected.any():
        axes[0].legend(loc="best", fontsize="small")
    axes[-1].set_xlabel(series.time_label)
    fig.suptitle(title or "frame quality")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, suffix=".tmp") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return series
