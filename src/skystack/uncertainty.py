"""The ``UNCERT`` plane of a product and its effective ``GAIN``/``RDNOISE``.

``--uncertainty`` (API ``uncertainty=``) chooses how UNCERT, the standard error of each combined
value, is computed; the header's ``UNCMETH`` says which was used:

``scatter``
    From the scatter of the kept values between frames (the combine kernels' own estimate: the
    standard error of the mean, of the sum, ``sqrt(pi/2)`` x that of the mean from the IQR for
    the median). Needs no header, but is itself noisy at small N (about 1/sqrt(2(N-1)) relative,
    35 % at N = 5).
    With rejection, the mean's and sum's is the winsorized (Tukey-McLaughlin) standard error
    (``backends/cpu/kernels.py``, ``_winsorized_se_of_mean``); after a value clip the mean's is
    then multiplied by :mod:`skystack.clip_efficiency`'s factor (header ``UNCCLIP``).
``model``
    From a CCD noise model, per kept frame (values in ADU, gain g in e-/ADU, read noise r in e-,
    both from each frame's header: ``GAIN``; ``RDNOISE``, ``READNOIS`` or ``RON``)::

        var_k = s_k * max(x - z_k, 0) / g_k + (s_k * r_k / g_k)**2

    where x is the combined value (the per-frame signal; the data must be bias-subtracted: a
    bias level left in the data would count as signal) and s_k, z_k the frame's scale and zero
    normalisation. With w_k the weights (mean and sum; 1 otherwise), n the frames kept at the
    pixel (COUNT after rejection) and A = mean_k(w_k**2 var_k), B = mean_k(w_k):

    * mean: var = A / (B**2 n)  (= sum_kept w**2 var / (sum_kept w)**2 when the kept frames are
      typical of all frames: exact without weights or without rejection);
    * sum: var = n A, with the per-frame signal x = value / (n B);
    * median: var = (pi/2) A / n (the median's asymptotic efficiency for Gaussian noise);
    * min, max: var = A (one frame's).

    After minmax or percentile rejection (rank trims), the mean's and sum's var is multiplied by
    the Gaussian trimmed-mean factor of :mod:`skystack.trim_efficiency` (also for
    ``propagate``): var / n overstates a trimmed mean's variance (1.7x for the interquartile
    mean). After a value clip (sigclip, winsor, linfit, esd, pclip, ccdclip) the mean's var / n
    understates it (1.55x for a 2-sigma clip of 20 frames): it is multiplied by the factor of
    :mod:`skystack.clip_efficiency` (also for ``propagate``, and for ``scatter``, whose
    winsorized standard error misses the same effect). pctclip keeps var / n.

    The result is nearly noise-free (it only inherits the combined value's noise through x).
    For stacks it is the noise before resampling: bilinear interpolation smooths each pixel
    (measured: the pixel-to-pixel scatter of a stack of sub-pixel dithers is 0.67x this UNCERT)
    but not the sums over apertures (0.95x for 5x5 pixels), which the scatter estimate, made
    after resampling, underestimates (1.5x too small there).
``propagate``
    From the inputs' own uncertainties: a CCDData's ``uncertainty`` (standard deviation,
    variance or inverse variance), or an ``UNCERT`` image extension of a FITS input (as CCDData
    writes it; ``UTYPE`` says which kind, standard deviation by default), read tile by tile like
    the data (for stacks resampled like the data, which neglects the covariance of neighbouring
    output pixels). The combine kernels do not report which frames were kept at a pixel, so the
    same approximation as for ``model`` is made, with var_k = (s_k sigma_k)**2 averaged over the
    frames whose sigma is finite there: exact for a combine without rejection and without
    weights (mean: sum sigma_k**2 / n**2), and where the rejected frames' sigmas are typical.
``auto`` (default)
    ``model`` when every input has GAIN and a read noise, and none is raw data still holding
    its bias level (integer pixels, BITPIX > 0, unless the header says ``BIASSUB = T`` as the
    night's calibrated frames do; or IMAGETYP bias/zero); else ``scatter``.

All three are computed after the combine, per tile on the host, from the combined image and
COUNT (and for ``propagate`` the inputs' sigma), so the CPU, GPU and cluster paths give the same
values (:func:`uncertainty_sinks`).

Effective gain and read noise (header ``GAIN`` and ``RDNOISE``, written for mean, sum and median
when every input has a GAIN, frames are not scaled, RDNOISE when every input has one): the
product's variance in its own units is written as ``var(X) = X / G + (R / G)**2`` (X >= 0), the
form of a single frame of gain G and read noise R, so that the usual CCD equation applies to the
product. The model above with n = NCOMBINE and no zero offsets gives ``var = a X + b``, hence
``G = 1 / a`` and ``R = G sqrt(b)``. For N frames of gain g and read noise r:

* mean: var = (X/g + r**2/g**2) / N, so G = g N and R = r sqrt(N);
* sum: X = N x, var = N (x/g + r**2/g**2) = X/g + N r**2/g**2, so G = g and R = r sqrt(N);
* median: the mean's variance times pi/2, i.e. N_eff = 2N/pi: G = g N_eff, R = r sqrt(N_eff).

Frames of different gains combine exactly by the same formula (1/G is a weighted sum of the
1/g_k: a harmonic combination), which the keyword's comment then says. min and max have no
effective gain; neither keyword is written for them (HISTORY says so).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .config import CombineOptions
from .core.records import FrameParams
from .errors import SkystackError
from .trim_efficiency import rank_trim_variance_factor

__all__ = ["GAIN_KEYS", "RDNOISE_KEYS", "frame_noise", "raw_with_bias", "noise_arrays",
           "model_variance", "propagated_variance", "effective_noise", "uncertainty_sinks"]

GAIN_KEYS = ("GAIN",)
RDNOISE_KEYS = ("RDNOISE", "READNOIS", "RON")
_BIAS_TYPES = ("BIAS", "ZERO")


def _header_number(frame, keys: tuple[str, ...], positive: bool,
                   strict: bool) -> float | None:
    """The first of ``keys`` in the frame's header as a finite number (> 0 for a gain, >= 0
    for a read noise); None when none is there; a value that is not one is a one-line error
    when ``strict`` (the model was asked for), else counts as absent."""
    header = frame.header
    for key in keys:
        if header is None or key not in header:
            continue
        try:
            value = float(header[key])
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            if not strict:
                return None
            need = "positive" if positive else "non-negative"
            raise SkystackError(f"{frame.label}: {key} = {header[key]!r} is not a {need} number")
        return value
    return None


def frame_noise(frame, strict: bool = False) -> tuple[float | None, float | None]:
    """(gain in e-/ADU, read noise in e-) of a frame's header; None where absent (or, unless
    ``strict``, not a valid number)."""
    return (_header_number(frame, GAIN_KEYS, True, strict),
            _header_number(frame, RDNOISE_KEYS, False, strict))


def raw_with_bias(frame) -> bool:
    """Whether a frame evidently still holds its bias level (see module docstring, ``auto``)."""
    header = frame.header
    if header is None:
        return False
    words = str(header.get("IMAGETYP", "")).upper().replace("_", " ").split()
    if any(w in _BIAS_TYPES for w in words):
        return True
    if header.get("BIASSUB") is True:
        return False
    bitpix = header.get("BITPIX")
    return isinstance(bitpix, int) and bitpix > 0


def noise_arrays(frames) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame gain (e-/ADU) and read noise (e-) as float64 arrays, NaN where absent."""
    pairs = [frame_noise(f) for f in frames]
    gain = np.array([np.nan if g is None else g for g, _ in pairs], np.float64)
    rdnoise = np.array([np.nan if r is None else r for _, r in pairs], np.float64)
    return gain, rdnoise


def _weights(params: FrameParams, options: CombineOptions) -> np.ndarray:
    w = np.asarray(params.weights, np.float64)
    return w if options.weighted else np.ones_like(w)


# How the per-frame variance A becomes the combined value's (module docstring), by method.
_MEAN, _SUM, _MEDIAN, _ONE = 0, 1, 2, 3
_COMBINATIONS = {"mean": _MEAN, "sum": _SUM, "median": _MEDIAN}


@njit(cache=True, nogil=True)
def _variance_kernel(value, kept, a_map, const, zvals, coefs, combination, b, root,
                     out):  # pragma: no cover - compiled
    """The combined value's variance at every pixel (flat arrays), or its square root (the
    standard error: ``root``) into ``out`` (float64, or float32 for an UNCERT plane).

    A, the mean over frames of w_k**2 var_k, is ``a_map[p]`` when ``a_map`` is not empty, else
    the noise model's ``const + sum_t coefs[t] * max(x - zvals[t], 0)`` of the per-frame signal
    x. NaN where no value was kept or the value is NaN. One pass, no temporaries: the UNCERT of
    every tile of every product goes through here."""
    use_map = a_map.size > 0
    for p in range(value.size):
        n = kept[p]
        x = np.float64(value[p])
        if n <= 0 or x != x:
            out[p] = np.nan
            continue
        if combination == 1:  # sum: the per-frame signal is the value over the kept weight
            x = x / (n * b)
        if use_map:
            a = a_map[p]
        else:
            a = const
            for t in range(zvals.size):
                d = x - zvals[t]
                if d > 0.0:
                    a += coefs[t] * d
        if combination == 0:
            var = a / (b * b * n)
        elif combination == 1:
            var = a * n
        elif combination == 2:
            var = (np.pi / 2) * a / n
        else:
            var = a
        out[p] = np.sqrt(var) if root else var


def _combined_variance(method: str, value: np.ndarray, count: np.ndarray, w: np.ndarray, *,
                       terms: tuple[float, np.ndarray, np.ndarray] | None = None,
                       a_map: np.ndarray | None = None, as_sigma: bool = False) -> np.ndarray:
    """Variance (float64, ``value``'s shape) of each combined value from A (the noise model's
    ``terms`` or a per-pixel ``a_map``) and the kept count (see module docstring); with
    ``as_sigma`` its square root as float32 (an UNCERT plane; NaN where nothing was kept)."""
    value = np.ascontiguousarray(value)
    out = np.empty(value.shape, np.float32 if as_sigma else np.float64)
    const, zvals, coefs = terms if terms is not None else (0.0, np.zeros(0), np.zeros(0))
    a = np.zeros(0) if a_map is None else np.ascontiguousarray(a_map, np.float64).reshape(-1)
    _variance_kernel(value.reshape(-1), np.ascontiguousarray(count).reshape(-1), a,
                     float(const), zvals, coefs, _COMBINATIONS.get(method, _ONE),
                     float(np.mean(w)), as_sigma, out.reshape(-1))
    return out


def _model_terms(params: FrameParams, w: np.ndarray,
                 zero_offsets: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """The noise model's A(x) = mean_k(w_k**2 var_k(x)) (module docstring) as
    ``const + sum_t coefs[t] * max(x - zvals[t], 0)``: frames sharing a zero offset share one
    term (usually all: no --zero)."""
    s = np.asarray(params.scale, np.float64)
    z = np.asarray(params.zero, np.float64) if zero_offsets else np.zeros(len(s))
    g = np.asarray(params.gain, np.float64)
    r = np.nan_to_num(np.asarray(params.rdnoise, np.float64)) if params.rdnoise is not None \
        else np.zeros(len(s))
    const = float(np.mean(w**2 * (s * r / g) ** 2))
    coef = w**2 * s / g / len(s)
    zvals = np.unique(z)
    return const, zvals, np.array([coef[z == zv].sum() for zv in zvals], np.float64)


def model_variance(image: np.ndarray, count: np.ndarray, options: CombineOptions,
                   params: FrameParams, *, as_sigma: bool = False,
                   clip_factor: np.ndarray | float | None = None) -> np.ndarray:
    """Variance (float64) of each combined value by the noise model (module docstring); with
    ``as_sigma`` the standard error (float32). ``clip_factor``: the variance factor of a value
    clip, per pixel or one (:mod:`skystack.clip_efficiency`), None for none."""
    w = _weights(params, options)
    return _times_efficiency(options, count, w, as_sigma, clip_factor, lambda sigma: (
        _combined_variance(options.method, image, count, w, terms=_model_terms(params, w),
                           as_sigma=sigma)))


def propagated_variance(sigma: np.ndarray, image: np.ndarray, count: np.ndarray,
                        options: CombineOptions, params: FrameParams, *,
                        as_sigma: bool = False,
                        clip_factor: np.ndarray | float | None = None) -> np.ndarray:
    """Variance (float64) of each combined value from the inputs' sigma, a block
    ``(n_frames, rows, cols)`` (NaN = none), by the approximation of the module docstring;
    with ``as_sigma`` the standard error (float32); ``clip_factor`` as for
    :func:`model_variance`."""
    w = _weights(params, options)
    s = np.asarray(params.scale, np.float64)
    acc = np.zeros(sigma.shape[1:], np.float64)
    nvalid = np.zeros(sigma.shape[1:], np.float64)
    for k in range(sigma.shape[0]):
        v = (s[k] * sigma[k].astype(np.float64)) ** 2
        ok = np.isfinite(v)
        acc += np.where(ok, w[k] ** 2 * v, 0.0)
        nvalid += ok
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_var = np.where(nvalid > 0, acc / nvalid, np.nan)
    return _times_efficiency(options, count, w, as_sigma, clip_factor, lambda sigma: (
        _combined_variance(options.method, image, count, w, a_map=mean_var, as_sigma=sigma)))


def _times_efficiency(options: CombineOptions, count: np.ndarray, w: np.ndarray, as_sigma: bool,
                  clip_factor: np.ndarray | float | None, variance):
    """``variance(as_sigma)``, for a mean or sum after minmax / percentile rejection times the
    Gaussian trimmed-mean factor of :mod:`skystack.trim_efficiency` (var / COUNT overstates
    it: 1.41x the true SE of an interquartile mean), after a value clip times ``clip_factor``
    (var / COUNT understates it; :mod:`skystack.clip_efficiency`)."""
    factor = rank_trim_variance_factor(count, options, len(w))
    if factor is None:
        factor = clip_factor
    if factor is None:
        return variance(as_sigma)
    var = variance(False) * factor
    return np.sqrt(var).astype(np.float32) if as_sigma else var


def effective_noise(method: str, n_frames: int, gain: np.ndarray, rdnoise: np.ndarray | None,
                    weights: np.ndarray) -> tuple[float, float | None]:
    """Effective (GAIN e-/ADU, RDNOISE e-) of a product of ``n_frames`` unscaled frames
    (module docstring); RDNOISE None when ``rdnoise`` is None."""
    params = FrameParams(np.ones(len(gain)), np.zeros(len(gain)), weights, gain, rdnoise)
    var = _combined_variance(method, np.array([0.0, 1.0]), np.full(2, n_frames), weights,
                             terms=_model_terms(params, weights, zero_offsets=False))
    g_eff = 1.0 / (var[1] - var[0])
    return g_eff, (g_eff * math.sqrt(var[0]) if rdnoise is not None else None)


def _clip_at(table: np.ndarray | None, count: np.ndarray, kept) -> np.ndarray | float | None:
    """The value-clip factor table looked up per pixel: by ``count`` (a stack's coverage, the
    valid values) when ``kept`` is given, else at the number of frames (a combine's COUNT is
    the kept values; its pixels rarely lack valid ones)."""
    if table is None:
        return None
    if kept is None:
        return float(table[-1])
    return table[np.clip(np.asarray(count), 0, len(table) - 1)]


class _UncertaintySink:
    """Replaces the uncertainty of every tile before handing it to ``sinks`` (see
    :func:`uncertainty_sinks`). ``takes_kept``: stacks pass the count of kept values as
    ``kept`` (their COUNT plane is the coverage)."""

    takes_kept = True

    def __init__(self, sinks, options: CombineOptions, params: FrameParams, sigma=None,
                 clip_table: np.ndarray | None = None):
        self.sinks = list(sinks)
        self.options = options
        self.params = params
        self.sigma = sigma
        self.clip_table = clip_table

    def write_tile(self, tile, image, uncertainty, count, *, mask=None, extras=None,
                   kept=None) -> None:
        factor = _clip_at(self.clip_table, count, kept)
        kept = count if kept is None else kept
        if self.options.uncertainty == "model":
            unc = model_variance(image, kept, self.options, self.params, as_sigma=True,
                                 clip_factor=factor)
        else:
            unc = propagated_variance(self.sigma.read(tile), image, kept, self.options,
                                      self.params, as_sigma=True, clip_factor=factor)
        more = {}
        if mask is not None:
            more["mask"] = mask
        if extras is not None:
            more["extras"] = extras
        for sink in self.sinks:
            sink.write_tile(tile, image, unc, count, **more)


class _ScaledUncertaintySink:
    """Multiplies every tile's uncertainty by the square root of the value-clip variance
    factor (per pixel by coverage in stacks) before handing it to ``sinks``."""

    takes_kept = True

    def __init__(self, sinks, table: np.ndarray):
        self.sinks = list(sinks)
        self.table = np.sqrt(table).astype(np.float32)

    def write_tile(self, tile, image, uncertainty, count, *, kept=None, **more) -> None:
        factor = _clip_at(self.table, count, kept)
        unc = None if uncertainty is None else (uncertainty * factor).astype(np.float32)
        for sink in self.sinks:
            sink.write_tile(tile, image, unc, count, **more)


def uncertainty_sinks(sinks, options: CombineOptions, params: FrameParams, sigma=None,
                      clip: tuple[np.ndarray, np.ndarray] | None = None) -> list:
    """``sinks`` as they should receive tiles for ``options.uncertainty``: for ``scatter`` the
    kernels' own, else behind a sink that computes UNCERT from the tile's image and count
    (``model``) or from ``sigma`` (``propagate``: an object whose ``read(tile)`` returns the
    inputs' sigma on the tile, ``(n_frames, rows, cols)``). ``clip``: the variance-factor
    tables ``(scatter, model)`` by number of valid frames of a value clip
    (:func:`skystack.clip_efficiency.clip_variance_factors`, computed by the callers, which sit
    above the engines), None for none."""
    mode = options.uncertainty
    if mode == "scatter":
        if clip is None:
            return list(sinks)
        return [_ScaledUncertaintySink(sinks, clip[0])]
    if mode == "auto":
        raise ValueError("uncertainty 'auto' must be resolved first "
                         "(skystack.io.sigma.resolve_uncertainty)")
    if mode == "propagate" and sigma is None:
        raise SkystackError("--uncertainty propagate needs the inputs' uncertainty "
                            "(not available on this path)")
    return [_UncertaintySink(sinks, options, params, sigma,
                             None if clip is None else clip[1])]
