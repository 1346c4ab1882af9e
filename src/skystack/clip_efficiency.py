"""The variance of a mean after a *value* clip (``--reject sigclip``, ``winsor``, ``linfit``,
``esd``, ``pclip``, ``ccdclip``), for ``UNCERT``.

A value clip keeps the values within bounds set by the data themselves (a centre and a spread
estimated from the same values, or a noise model's sigma). Its mean is a *skipped mean*: for
Gaussian noise and bounds at ``c`` standard deviations its asymptotic variance is

    var * V_skip(c) / n,   V_skip(c) = 1 / (P(c) - 2 c phi(c)),   P(c) = 2 Phi(c) - 1

(the sandwich formula of an M-estimator with hard rejection: the bounds move with the data, and
values crossing them shift the mean by a jump, which neither ``var / h`` nor the winsorized
standard error of a fixed-fraction trim sees). The clip's effective ``c`` is lower than its
``--sigma`` when the spread is estimated from the kept values (a 2-sigma clip with the kept
values' std settles near c = 1.45, where V_skip = 2.2 while ``var / h`` says 1.17): measured on
20 000 Gaussian pixels of 20 frames, the winsorized standard error was 0.68 of the true one
for ``sigclip --sigma 2`` (0.75 ``winsor 2``, 0.84 ``pclip``, 0.98 ``sigclip 3``).

Rather than a formula per algorithm (each estimates its centre and spread differently, and small
stacks differ from the asymptote), the factor is *measured* for the product's own combine:
the CPU kernels combine a fixed, seeded block of unit Gaussian values of the product's number
of frames (``M`` pixels, ``M = clamp(4e6 / n, 4000, 40000)``, with the frames' weights), and
the factor is the true variance of those means (their scatter across the block's pixels) over
the mean of what the UNCERT estimate gives there:

* ``scatter``: over the mean square of the kernels' winsorized standard error;
* ``model`` / ``propagate``: over the mean of ``A / (B**2 h)`` (their ``var / COUNT`` with unit
  frame variances, A = mean(w**2), B = mean(w); see :mod:`skystack.uncertainty`).

Value clips are location-scale invariant (sigclip, winsor, linfit, esd, pclip), so one unit
Gaussian block stands for every pixel. ``ccdclip`` is not (its sigma comes from gain, read noise
and the level); with a correct noise model its bounds sit at ``c = --sigma`` exactly, and its
factors are the formula's: ``V_skip(c) / V_trim(c)`` (scatter; ``V_trim`` the fixed-fraction
trimmed mean's, which the winsorized standard error estimates) and ``V_skip(c) P(c)`` (model).
``pctclip`` (bounds relative to the median's level, not to the noise) and rank trims (minmax,
percentile: :mod:`skystack.trim_efficiency`) get no factor here; nor does any combine other than
the mean.

The factor depends on the number of valid values n (sigclip about the median with the MAD at
5/3 sigma, the night's default: 1.30 at 3 frames, 1.21 at 5, 1.05 at 20 on UNCERT): a table by
n (:func:`clip_factor_tables`) is applied by each pixel's coverage in stacks; a combine's
pixels take the table at the number of frames (its pixels rarely lack values). Assumption:
Gaussian noise. The product header says what was applied where every frame is valid:
``UNCCLIP`` (the factor on UNCERT, i.e. the square root of the variance factor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from statistics import NormalDist

import numpy as np

__all__ = ["VALUE_CLIPS", "ClipFactors", "value_clip_factors", "clip_factor_tables",
           "clip_variance_factors", "clip_cards", "skipped_mean_variance"]

VALUE_CLIPS = ("sigclip", "winsor", "linfit", "esd", "pclip", "ccdclip")
_SEED = 20261205
_UNIT = NormalDist()


@dataclass(frozen=True)
class ClipFactors:
    """Variance factors of a value-clipped mean: ``scatter`` multiplies the kernels' squared
    winsorized standard error, ``model`` the noise model's (and propagation's) ``var / COUNT``."""

    scatter: float
    model: float


def skipped_mean_variance(c: float) -> tuple[float, float]:
    """``(V_skip(c), V_trim(c))`` for symmetric bounds at ``c`` standard deviations: n x the
    asymptotic variance of the skipped mean (module docstring) and of the mean trimmed by the
    same expected fraction (Tukey & McLaughlin), for unit Gaussian values."""
    p = 2.0 * _UNIT.cdf(c) - 1.0
    edge = 2.0 * c * _UNIT.pdf(c)
    tail = 1.0 - _UNIT.cdf(c)
    return 1.0 / (p - edge), (p - edge + 2.0 * tail * c * c) / (p * p)


def value_clip_factors(options, weights: np.ndarray | None, n_frames: int) -> ClipFactors | None:
    """The variance factors for a mean with a value clip of ``n_frames`` frames of these
    ``weights`` (None: equal), or None where none applies (module docstring). ``options``: a
    CombineOptions."""
    if options.method != "mean" or options.reject not in VALUE_CLIPS or n_frames < 3:
        return None
    if options.reject == "ccdclip":
        lo, hi = options.sigma_low, options.sigma_high
        c = 0.5 * (lo + hi)  # the formula is for symmetric bounds; near-symmetric in practice
        v_skip, v_trim = skipped_mean_variance(c)
        return ClipFactors(v_skip / v_trim, v_skip * (2.0 * _UNIT.cdf(c) - 1.0))
    w = np.ones(n_frames) if weights is None else np.asarray(weights, np.float64)
    if not (np.all(np.isfinite(w)) and w.sum() > 0):
        return None
    return _simulated(_options_key(options), tuple(np.round(w / w.mean(), 12)))


def _frame_weights(options, params) -> np.ndarray:
    w = np.asarray(params.weights, np.float64)
    return w if options.weighted else np.ones_like(w)


# Frame counts at which the tables are simulated: every one up to _DENSE, then about 35 % apart
# (the factor changes slowly there), and the stack's own; linear in log n in between.
_DENSE = 12
_STEP = 1.35


def _table_counts(n_frames: int) -> list[int]:
    counts = set(range(3, min(n_frames, _DENSE) + 1))
    c = float(_DENSE)
    while c < n_frames:
        counts.add(int(round(c)))
        c *= _STEP
    counts.add(n_frames)
    return sorted(n for n in counts if 3 <= n <= n_frames)


def clip_factor_tables(options, weights: np.ndarray, n_frames: int
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scatter, model)``: float64 arrays of length ``n_frames + 1``, the variance factors of
    a value-clipped mean of ``n`` valid frames at index ``n`` (1 below 3 frames; the first
    ``n`` frames' weights), or None where no factor applies (module docstring)."""
    if value_clip_factors(options, weights, n_frames) is None:
        return None
    w = np.asarray(weights, np.float64)
    counts = _table_counts(n_frames)
    at = [value_clip_factors(options, w[:n], n) for n in counts]
    scatter = np.ones(n_frames + 1)
    model = np.ones(n_frames + 1)
    n = np.arange(3, n_frames + 1)
    logs = np.log(counts)
    scatter[3:] = np.interp(np.log(n), logs, [f.scatter for f in at])
    model[3:] = np.interp(np.log(n), logs, [f.model for f in at])
    return scatter, model


def clip_variance_factors(options, params) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scatter, model)`` variance-factor tables by number of valid frames
    (:func:`clip_factor_tables`) for a combine or stack of ``options`` (resolved) and
    ``params`` (:class:`skystack.core.records.FrameParams`), as
    :func:`skystack.uncertainty.uncertainty_sinks` takes them; None where none applies."""
    w = _frame_weights(options, params)
    return clip_factor_tables(options, w, len(w))


def clip_cards(header, options, params) -> None:
    """``UNCCLIP``: the factor the product's UNCERT was multiplied by for its value clip where
    every frame is valid (stacks: by each pixel's coverage; none when no factor applies, e.g.
    drizzle, min/max or the median)."""
    if options.uncertainty not in ("scatter", "model", "propagate"):
        return
    tables = clip_variance_factors(options, params)
    if tables is None:
        return
    factor = (tables[0] if options.uncertainty == "scatter" else tables[1])[-1]
    header["UNCCLIP"] = (round(math.sqrt(factor), 6),
                         f"UNCERT x this at {len(tables[0]) - 1} frames ({options.reject})")


def _options_key(options):
    """The options that change the clip, with the others at their defaults (the block is unit
    Gaussian values, already normalised: no valid range, scale, zero, selection or weights
    kind; the weights themselves are the key's second part)."""
    return replace(options, uncertainty="scatter", scale="none", zero="none",
                   range_low=None, range_high=None, selection=(), hdu=None, mem_limit=None,
                   weights=type(options.weights)())


@lru_cache(maxsize=1024)  # a table takes about 20 entries
def _simulated(options, weights: tuple) -> ClipFactors:
    from .backends.base import FrameParams, TileOutputs
    from .backends.cpu import CpuBackend

    n = len(weights)
    m = int(min(40_000, max(4_000, 4_000_000 // n)))
    block = np.random.default_rng(_SEED).standard_normal((n, 1, m)).astype(np.float32)
    out = TileOutputs.empty((1, m))
    params = FrameParams(np.ones(n, np.float32), np.zeros(n, np.float32),
                         np.asarray(weights, np.float64))
    cpu = CpuBackend(threads=1)
    try:
        cpu.combine_tile(block, options, params, out)
    finally:
        cpu.close()
    value = out.image.reshape(-1).astype(np.float64)
    se = out.uncertainty.reshape(-1).astype(np.float64)
    kept = out.count.reshape(-1).astype(np.float64)
    ok = np.isfinite(value) & np.isfinite(se) & (kept > 0)
    true_var = float(np.var(value[ok], ddof=1))
    w = np.asarray(weights, np.float64)
    model = np.mean(np.mean(w ** 2) / (np.mean(w) ** 2 * kept[ok]))
    scatter = float(np.mean(se[ok] ** 2))
    if not (scatter > 0 and model > 0 and math.isfinite(true_var)):
        return ClipFactors(1.0, 1.0)
    return ClipFactors(true_var / scatter, float(true_var / model))
