"""``skystack inspect``: the numbers an observer checks on calibration frames.

Frames are classified and grouped by :mod:`skystack.night.scan` (biases by binning and shape,
darks also by exposure time, flats also by filter); every group gets:

* **bias**: the median of each frame and of the master (median of the frames), in ADU; the read
  noise from frame-to-frame scatter, ``std(bias_a - bias_b) / sqrt(2)`` (5-sigma-clipped
  standard deviation, which removes any fixed pattern), median over up to
  :data:`MAX_READ_NOISE_PAIRS` disjoint pairs, in ADU and, where the header has ``GAIN``
  (e-/ADU), in electrons.
* **dark**: master dark = median of the frames; the dark current is the typical
  ``(master dark - master bias) / exptime`` of a pixel, in ADU/s/pixel (and e-/s/pixel with
  ``GAIN``), the bias being the master of the bias group of the same binning and shape: the
  median over blocks of :data:`LEVEL_BOX` x :data:`LEVEL_BOX` pixels of each block's mean, hot
  pixels left out, so that neither an amplifier-glow corner nor hot pixels count (and not a
  plain median, which for integer ADU would be quantised to whole ADU, too coarse for the few
  ADU of dark signal of a typical exposure). Hot pixels: those whose excess exceeds the *local*
  level (a running median, so that amplifier glow and gradients are not flagged) by more than
  ``max(hot_sigma * sigma, hot_floor_adu)`` ADU in the exposure, ``sigma`` being the local
  MAD-based noise (see :mod:`skystack.night.defects`; the floor keeps a very clean map from
  flagging ordinary pixels); the reported threshold is the typical (median) one. Without a
  bias the dark current is not measured (NaN) and hot pixels are found the same way in the
  dark itself.
* **flat**: per filter, the raw median level (ADU, bias included) and the signal above bias;
  each frame has the master bias and the dark current of the dark group the night would use
  (:func:`skystack.night.masters.choose_dark`: the same exposure time, else the longest),
  scaled to the flat's exposure time, subtracted, is divided by its median, and the median
  of the frames is the normalised flat (median 1). Its robust RMS (MAD-based, %, vignetting
  included), the pixel-to-pixel RMS after dividing by the local median (%), the
  corner-to-centre ratio (mean of the medians of the four corner boxes over the median of the
  central box, boxes a tenth of the shorter side) and the low/dead pixels, below
  ``low_threshold`` (0.5) of the local median. The local median is the median of boxes of
  ``clip(min(shape) // 16, 8, 64)`` pixels, bilinearly interpolated between box centres.

Conventions: ADU, electrons (e-), seconds; arrays and positions are ``(row, col)``, 0-based;
NaN means "no data" or "not measured". Pixels are read with astropy, one frame (or two, for the
read noise) at a time; masters are median-combined in row blocks of about
:data:`BLOCK_BYTES`, so memory stays bounded whatever the number of frames.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from ..errors import SkystackError
from ..io.atomic import atomic_write
from ..io.inputs import quiet_astropy
from ..text_table import text_table
from .defects import find_hot_pixels
from .masters import choose_dark
from .mef_frames import split_by_ccd
from .scan import FrameInfo, GroupKey, ScanResult, group_names, scan

__all__ = ["BiasStats", "DarkStats", "FlatStats", "InspectReport", "inspect_frames",
           "format_inspect_table", "MAX_READ_NOISE_PAIRS", "BLOCK_BYTES"]

MAX_READ_NOISE_PAIRS = 4
BLOCK_BYTES = 64 * 2**20
_KEEP_OPEN = 128  # groups up to this many frames keep their files open during a combine
LEVEL_BOX = 32  # pixels: side of the blocks whose means give the typical dark level


@dataclass
class BiasStats:
    """One bias group. Levels and read noise in ADU; ``read_noise_e`` in electrons."""

    key: GroupKey
    files: list[str]
    levels: list[float]
    level: float
    read_noise_adu: float
    read_noise_e: float
    gain: float
    n_pairs: int
    notes: list[str] = field(default_factory=list)
    ccd: str | None = None  # EXTNAME of the CCD, for multi-extension files


@dataclass
class DarkStats:
    """One dark group. ``rate_*`` per pixel per second; ``hot_pixels`` is (n, 2) ``(row, col)``;
    ``hot_threshold_*`` the typical excess over the local level above which a pixel is hot."""

    key: GroupKey
    files: list[str]
    exptime: float
    levels: list[float]
    level: float
    bias: GroupKey | None
    rate_adu_s: float
    rate_e_s: float
    gain: float
    hot_threshold_adu: float
    hot_threshold_adu_s: float
    hot_pixels: np.ndarray
    notes: list[str] = field(default_factory=list)
    ccd: str | None = None  # EXTNAME of the CCD, for multi-extension files

    @property
    def n_hot(self) -> int:
        return int(len(self.hot_pixels))


@dataclass
class FlatStats:
    """One flat group (filter). ``low_pixels`` is (n, 2) ``(row, col)``."""

    key: GroupKey
    files: list[str]
    filter: str
    levels: list[float]
    level: float
    signal: float
    rms_percent: float
    pixel_rms_percent: float
    corner_ratio: float
    low_pixels: np.ndarray
    bias: GroupKey | None
    dark: GroupKey | None
    notes: list[str] = field(default_factory=list)
    ccd: str | None = None  # EXTNAME of the CCD, for multi-extension files

    @property
    def n_low(self) -> int:
        return int(len(self.low_pixels))


@dataclass
class InspectReport:
    """Everything :func:`inspect_frames` found, and the PNGs it wrote."""

    scan: ScanResult
    biases: list[BiasStats] = field(default_factory=list)
    darks: list[DarkStats] = field(default_factory=list)
    flats: list[FlatStats] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- pixel access -----------------------------------------------------------------------------

class _Pixels:
    """Rows of a frame's image HDU as float32 (astropy ``section``: only those rows are read)."""

    def __init__(self, info: FrameInfo) -> None:
        self.info = info
        self._hdul = None
        self._hdu = None

    def _open(self):
        if self._hdu is None:
            with quiet_astropy():  # scan already reported this file's problems, if any
                hdul = fits.open(self.info.path, memmap=False, lazy_load_hdus=True)
                len(hdul)  # parses every header now, warnings silenced
            want = self.info.shape
            hdu_index = getattr(self.info, "hdu", None)  # a CCD of a multi-extension file
            for h in (hdul if hdu_index is None else [hdul[hdu_index]]):
                if not isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
                    continue
                naxis = h.header.get("NAXIS", 0)
                dims = [h.header.get(f"NAXIS{i}", 0) for i in range(naxis, 0, -1)]
                if naxis >= 2 and tuple(dims[-2:]) == want and all(d == 1 for d in dims[:-2]):
                    self._hdul, self._hdu, self._lead = hdul, h, (0,) * (naxis - 2)
                    break
            else:
                hdul.close()
                raise SkystackError("no 2-D image HDU of the scanned shape")
        return self._hdu

    def rows(self, r0: int, r1: int) -> np.ndarray:
        hdu = self._open()
        data = hdu.section[(*self._lead, slice(r0, r1), slice(None))]
        out = np.asarray(data, dtype=np.float32)
        blank = hdu.header.get("BLANK")
        if blank is not None and np.asarray(data).dtype.kind in "iu" and not isinstance(
                hdu, fits.CompImageHDU):
            bscale, bzero = hdu.header.get("BSCALE", 1.0), hdu.header.get("BZERO", 0.0)
            out[out == np.float32(blank * bscale + bzero)] = np.nan
        return out

    def full(self) -> np.ndarray:
        return self.rows(0, self.info.shape[0])

    def close(self) -> None:
        if self._hdul is not None:
            self._hdul.close()
        self._hdul = self._hdu = None


def _read_full(info: FrameInfo, notes: list[str]) -> np.ndarray | None:
    px = _Pixels(info)
    try:
        return px.full()
    except Exception as exc:  # a bad file is reported, never fatal
        notes.append(f"{info.path}: cannot read pixels ({_why(exc)}); left out")
        return None
    finally:
        px.close()


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, SkystackError) else f"{type(exc).__name__}: {exc}"


def _median_combine(frames: list[FrameInfo], bias: np.ndarray | None = None,
                    rate: np.ndarray | None = None, times: list[float] | None = None,
                    scales: list[float] | None = None) -> np.ndarray:
    """Per-pixel median over ``frames`` of ``(frame - bias - rate * time) / scale``, read in
    row blocks of about :data:`BLOCK_BYTES` (any of the corrections may be None)."""
    rows, cols = frames[0].shape
    n = len(frames)
    step = int(max(1, min(rows, BLOCK_BYTES // (4 * n * cols))))
    out = np.empty((rows, cols), np.float32)
    buf = np.empty((n, step, cols), np.float32)
    readers = [_Pixels(f) for f in frames]
    try:
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            for i, rd in enumerate(readers):
                block = rd.rows(r0, r1)
                if n > _KEEP_OPEN:
                    rd.close()
                if bias is not None:
                    block -= bias[r0:r1]
                if rate is not None and times is not None:
                    block -= rate[r0:r1] * np.float32(times[i])
                if scales is not None:
                    block /= np.float32(scales[i])
                buf[i, : r1 - r0] = block
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
                out[r0:r1] = np.nanmedian(buf[:, : r1 - r0], axis=0)
    finally:
        for rd in readers:
            rd.close()
    return out


def _typical_level(image: np.ndarray, exclude: np.ndarray) -> float:
    """Median over blocks of :data:`LEVEL_BOX` pixels of each block's mean, ``exclude``d and
    non-finite pixels left out: the level of a typical pixel, untouched by a glowing corner or
    hot pixels, and not quantised like a median of integer ADU."""
    rows, cols = image.shape
    box = max(1, min(LEVEL_BOX, rows, cols))
    nby, nbx = rows // box, cols // box
    sub = np.where(exclude, np.nan, image)[: nby * box, : nbx * box]
    blocks = sub.reshape(nby, box, nbx, box).transpose(0, 2, 1, 3).reshape(nby * nbx, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _nanmedian(np.nanmean(blocks, axis=1))


def _nanmedian(a: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmedian(a))


def _gain(frames: list[FrameInfo]) -> float:
    try:
        g = float(frames[0].header.get("GAIN", math.nan))
    except (TypeError, ValueError):
        return math.nan
    return g if math.isfinite(g) and g > 0 else math.nan


# -- local statistics -------------------------------------------------------------------------

def _interp_matrix(n: int, box: int) -> np.ndarray:
    """(n, nb) weights that linearly interpolate per-box values at box centres to n pixels,
    constant beyond the first and last centre."""
    nb = -(-n // box)
    starts = np.arange(nb) * box
    ends = np.minimum(starts + box, n)
    centres = (starts + ends - 1) / 2.0
    x = np.arange(n, dtype=np.float64)
    eye = np.eye(nb)
    return np.stack([np.interp(x, centres, eye[j]) for j in range(nb)], axis=1)


def _local_median(image: np.ndarray, box: int) -> np.ndarray:
    """Median of ``box`` x ``box`` blocks, bilinearly interpolated back to full resolution."""
    rows, cols = image.shape
    nby, nbx = -(-rows // box), -(-cols // box)
    padded = np.full((nby * box, nbx * box), np.nan, np.float64)
    padded[:rows, :cols] = image
    blocks = padded.reshape(nby, box, nbx, box).transpose(0, 2, 1, 3).reshape(nby, nbx, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        grid = np.nanmedian(blocks, axis=2)
    grid[~np.isfinite(grid)] = _nanmedian(image)
    return _interp_matrix(rows, box) @ grid @ _interp_matrix(cols, box).T


def _corner_ratio(flat: np.ndarray) -> float:
    rows, cols = flat.shape
    b = max(2, min(rows, cols) // 10)
    corners = [flat[:b, :b], flat[:b, -b:], flat[-b:, :b], flat[-b:, -b:]]
    r0, c0 = (rows - b) // 2, (cols - b) // 2
    centre = _nanmedian(flat[r0:r0 + b, c0:c0 + b])
    return float(np.mean([_nanmedian(c) for c in corners]) / centre)


# -- plots ------------------------------------------------------------------------------------

def _save_figure(fig, path: str) -> str:
    with atomic_write(path, suffix=".tmp") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _bins(values: np.ndarray):
    """Histogram bins: aligned to the quantum of quantised data (integer ADU, their medians,
    differences or ratios), else 200 equal bins; avoids empty comb teeth."""
    sample = values.ravel()[:: max(1, values.size // 200_000)].astype(np.float64)
    u = np.unique(sample)
    if len(u) < 2 or len(u) > 20_000:
        return 200
    q = float(np.min(np.diff(u)))
    steps = (u - u[0]) / q
    if not np.allclose(steps, np.round(steps), atol=1e-3):
        return 200
    lo, hi = float(values.min()), float(values.max())
    width = q * max(1, math.ceil((hi - lo) / q / 200))
    start = u[0] - width * math.ceil((u[0] - lo) / width + 1e-9) - width / 2
    return np.arange(start, hi + width, width)


def _plot(path: str, title: str, image: np.ndarray, image_label: str, hist: np.ndarray,
          hist_label: str, lines: Iterable[tuple[float, str]] = (),
          marks: np.ndarray | None = None) -> str:
    """A two-panel PNG: the image (row 0 at the bottom) and a histogram (log counts).

    Drawn on a :class:`~matplotlib.figure.Figure` with the Agg canvas directly: no pyplot,
    so the caller's matplotlib backend and global state are left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    ax_img, ax_hist = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.88, wspace=0.3)
    finite = image[np.isfinite(image)]
    vmin, vmax = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
    shown = ax_img.imshow(image, origin="lower", cmap="gray", vmin=vmin, vmax=vmax,
                          interpolation="nearest")
    fig.colorbar(shown, ax=ax_img, label=image_label)
    if marks is not None and 0 < len(marks) <= 2000:
        ax_img.scatter(marks[:, 1], marks[:, 0], s=40, facecolors="none", edgecolors="red",
                       linewidths=0.8)
    ax_img.set_xlabel("column")
    ax_img.set_ylabel("row")
    values = hist[np.isfinite(hist)]
    if values.size:
        ax_hist.hist(values.ravel(), bins=_bins(values), log=True, histtype="stepfilled",
                     color="0.4")
    for x, label in lines:
        if math.isfinite(x):
            ax_hist.axvline(x, color="red", linestyle="--", linewidth=1, label=label)
    if any(math.isfinite(x) for x, _ in lines):
        ax_hist.legend(loc="upper right", fontsize="small")
    ax_hist.set_xlabel(hist_label)
    ax_hist.set_ylabel("pixels")
    fig.suptitle(title)
    return _save_figure(fig, path)


# -- per group --------------------------------------------------------------------------------

def _bias_group(key: GroupKey, frames: list[FrameInfo], plot: str | None
                ) -> tuple[BiasStats | None, np.ndarray | None]:
    from astropy.stats import sigma_clipped_stats

    notes: list[str] = []
    good: list[FrameInfo] = []
    levels: list[float] = []
    noise: list[float] = []
    pending: np.ndarray | None = None
    first_diff: np.ndarray | None = None
    for info in frames:
        data = _read_full(info, notes)
        if data is None:
            continue
        good.append(info)
        levels.append(_nanmedian(data))
        if pending is None:
            if len(noise) < MAX_READ_NOISE_PAIRS:
                pending = data
            continue
        diff = pending - data
        pending = None
        _, _, std = sigma_clipped_stats(diff, sigma=5.0, maxiters=5)
        noise.append(float(std) / math.sqrt(2.0))
        if first_diff is None and plot:
            first_diff = diff / math.sqrt(2.0)
    if not good:
        return None, None
    master = _median_combine(good)
    gain = _gain(good)
    rn = float(np.median(noise)) if noise else math.nan
    if not noise:
        notes.append("read noise needs two bias frames")
    stats = BiasStats(key=key, files=[f.path for f in good], levels=levels,
                      level=_nanmedian(master), read_noise_adu=rn, read_noise_e=rn * gain,
                      gain=gain, n_pairs=len(noise), notes=notes)
    if plot:
        hist = first_diff if first_diff is not None else master - stats.level
        label = ("(bias A - bias B) / sqrt(2) [ADU]" if first_diff is not None
                 else "master bias - median [ADU]")
        stats_lines = [(-rn, "±read noise"), (rn, "")] if first_diff is not None else []
        _plot(plot, f"bias {key.label}: {len(good)} frames", master, "master bias [ADU]",
              hist, label, stats_lines)
    return stats, master


def _dark_group(key: GroupKey, frames: list[FrameInfo], bias_key: GroupKey | None,
                bias: np.ndarray | None, hot_sigma: float, hot_floor_adu: float,
                plot: str | None) -> tuple[DarkStats | None, np.ndarray | None]:
    notes: list[str] = []
    good: list[FrameInfo] = []
    levels: list[float] = []
    for info in frames:
        data = _read_full(info, notes)
        if data is not None:
            good.append(info)
            levels.append(_nanmedian(data))
    if not good:
        return None, None
    master = _median_combine(good)
    exptime = good[0].exptime
    has_time = math.isfinite(exptime) and exptime > 0
    if not has_time:
        notes.append("no positive EXPTIME: dark current not measured, hot-pixel threshold "
                     "in ADU only")
    excess = master - bias if bias is not None else master - _nanmedian(master)
    hot_mask, threshold = find_hot_pixels(lambda r0, r1: excess[r0:r1], excess.shape,
                                          hot_sigma=hot_sigma, floor=hot_floor_adu)
    hot = np.argwhere(hot_mask).astype(np.int64)
    if bias is not None:
        dark_adu = _typical_level(excess, hot_mask)
    else:
        notes.append("no bias of the same binning and shape: dark current not measured, hot "
                     "pixels found relative to the dark's local level")
        dark_adu = math.nan
    gain = _gain(good)
    rate = dark_adu / exptime if has_time else math.nan
    stats = DarkStats(key=key, files=[f.path for f in good], exptime=exptime, levels=levels,
                      level=_nanmedian(master), bias=bias_key, rate_adu_s=rate,
                      rate_e_s=rate * gain, gain=gain, hot_threshold_adu=threshold,
                      hot_threshold_adu_s=threshold / exptime if has_time else math.nan,
                      hot_pixels=hot, notes=notes)
    rate_map = excess / exptime if has_time else excess
    unit = "ADU/s" if has_time else "ADU"
    if plot:
        what = "dark - bias" if bias is not None else "dark - median"
        t = threshold / exptime if has_time else threshold
        centre = _nanmedian(rate_map)
        _plot(plot, f"dark {key.label}: {len(good)} frames, {stats.n_hot} hot pixels",
              rate_map, f"({what}) [{unit}]", rate_map, f"({what}) [{unit}]",
              [(centre + t, f"typical hot threshold {t:.3g} {unit} above the local level")],
              marks=hot)
    # Only a bias-subtracted dark gives the current to subtract from flats.
    return stats, (rate_map if bias is not None and has_time else None)


def _flat_group(key: GroupKey, frames: list[FrameInfo], bias_key: GroupKey | None,
                bias: np.ndarray | None, dark: tuple[GroupKey, np.ndarray] | None,
                low_threshold: float, plot: str | None) -> FlatStats | None:
    from astropy.stats import mad_std

    notes: list[str] = []
    if bias is None:
        notes.append("no bias of the same binning and shape: levels include the bias offset")
    rate = dark[1] if dark is not None else None
    good: list[FrameInfo] = []
    levels: list[float] = []
    scales: list[float] = []
    times: list[float] = []
    for info in frames:
        data = _read_full(info, notes)
        if data is None:
            continue
        level = _nanmedian(data)
        t = info.exptime if math.isfinite(info.exptime) and info.exptime > 0 else 0.0
        if bias is not None:
            data -= bias
        if rate is not None and t > 0:
            data -= rate * np.float32(t)
        scale = _nanmedian(data)
        if not (math.isfinite(scale) and scale > 0):
            notes.append(f"{info.path}: median level {scale:.4g} ADU above bias is not "
                         "positive; left out")
            continue
        good.append(info)
        levels.append(level)
        scales.append(scale)
        times.append(t)
    if not good:
        return None
    if dark is None:
        notes.append("no bias-subtracted dark of the same binning and shape: dark current not "
                     "subtracted")
    elif any(t == 0 for t in times):
        notes.append("flats without EXPTIME: dark current not subtracted from them")
    flat = _median_combine(good, bias, rate, times, scales)
    flat /= np.float32(_nanmedian(flat))
    rows, cols = flat.shape
    box = int(np.clip(min(rows, cols) // 16, 8, 64))
    local = _local_median(flat, box)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = flat / local
        low = np.argwhere(ratio < low_threshold).astype(np.int64)
    stats = FlatStats(key=key, files=[f.path for f in good], filter=key.filter or "",
                      levels=levels, level=float(np.median(levels)),
                      signal=float(np.median(scales)),
                      rms_percent=100.0 * float(mad_std(flat, ignore_nan=True)),
                      pixel_rms_percent=100.0 * float(mad_std(ratio, ignore_nan=True)),
                      corner_ratio=_corner_ratio(flat), low_pixels=low, bias=bias_key,
                      dark=dark[0] if dark is not None else None, notes=notes)
    if plot:
        _plot(plot, f"flat {key.label}: {len(good)} frames, {stats.n_low} low pixels", flat,
              "normalised flat", ratio, "flat / local median",
              [(low_threshold, f"low-pixel threshold {low_threshold:g}")], marks=low)
    return stats


def _dark_for_flats(darks: dict, camera: tuple, exptime: float):
    """(dark key, rate map) of the camera's dark group whose current is subtracted from its
    flats of ``exptime`` seconds, or None: the dark the night would use
    (:func:`skystack.night.masters.choose_dark`; these darks are bias-subtracted), so that
    the flat inspected is the one the night makes. Flats without EXPTIME get no dark current
    subtracted (their note says so); the longest dark is named.

    Different on purpose: without a bias ``darks`` is empty (no dark current can be measured,
    so none is subtracted and the levels include the bias), where the night subtracts the
    closest dark unscaled to remove the bias level it holds: inspect reports the flats'
    statistics above the bias, it does not make a calibrated flat."""
    mine = {k.exptime: (k, m) for k, m in darks.items() if (k.binning, k.shape) == camera}
    if not mine:
        return None
    if not math.isfinite(exptime):
        return mine[max(mine)]
    return choose_dark(mine, exptime, bias_subtracted=True)[0]


# -- public -----------------------------------------------------------------------------------

def inspect_frames(inputs: str | os.PathLike | Iterable[str | os.PathLike] | ScanResult,
                   plot_dir: str | os.PathLike | None = None, *, hot_sigma: float = 5.0,
                   hot_floor_adu: float = 10.0, low_threshold: float = 0.5) -> InspectReport:
    """Statistics of the bias, dark and flat groups of ``inputs`` (see the module docstring).

    ``inputs`` is anything :func:`skystack.night.scan.scan` accepts, or its result. With
    ``plot_dir`` (created if missing) one PNG per group is written there (``bias.png``,
    ``dark_60s.png``, ``flat_V.png``…): the master image and a histogram. Light frames are
    counted, not inspected. Unreadable files are reported in the notes, never fatal.

    ``hot_sigma`` and ``hot_floor_adu`` set the hot-pixel threshold: excess of
    ``(master dark - master bias)`` over its local level above ``max(hot_sigma * sigma,
    hot_floor_adu)`` ADU, ``sigma`` the local noise.
    ``low_threshold`` is the fraction of the local median below which a flat pixel is low/dead.
    """
    result = inputs if isinstance(inputs, ScanResult) else scan(inputs)
    report = InspectReport(scan=result)
    for ccd, part in split_by_ccd(result).items():
        _inspect_part(part, report, ccd, plot_dir, hot_sigma, hot_floor_adu, low_threshold)
    lights = result.light_groups()
    if lights:
        n = sum(len(v) for v in lights.values())
        report.notes.append(f"{n} light frames in {len(lights)} groups (not inspected)")
    return report


def _inspect_part(result: ScanResult, report: InspectReport, ccd: str | None, plot_dir,
                  hot_sigma: float, hot_floor_adu: float, low_threshold: float) -> None:
    """The bias, dark and flat groups of ``result`` (all frames of one CCD, or of a
    single-image camera when ``ccd`` is None) into ``report``."""
    before = (len(report.biases), len(report.darks), len(report.flats), len(report.notes))
    plot_folder = None
    if plot_dir is not None:
        plot_folder = os.fspath(plot_dir)
        try:
            os.makedirs(plot_folder, exist_ok=True)
        except OSError as exc:
            raise SkystackError(f"{plot_folder}: cannot create ({exc.strerror})") from None

    def plot_path(groups, key) -> str | None:
        if plot_folder is None:
            return None
        name = group_names(groups)[key]
        path = os.path.join(plot_folder, f"{name if ccd is None else f'{ccd}_{name}'}.png")
        report.plots.append(path)
        return path

    biases: dict[tuple, tuple[GroupKey, np.ndarray]] = {}
    groups = result.bias_groups()
    for key, frames in groups.items():
        stats, master = _bias_group(key, frames, plot_path(groups, key))
        if stats is None:
            report.notes.append(f"bias {key.label}: no readable frame")
            continue
        report.biases.append(stats)
        biases[(key.binning, key.shape)] = (key, master)

    darks: dict[GroupKey, np.ndarray] = {}
    groups = result.dark_groups()
    for key, frames in groups.items():
        bias_key, bias = biases.get((key.binning, key.shape), (None, None))
        stats, rate_map = _dark_group(key, frames, bias_key, bias, hot_sigma, hot_floor_adu,
                                      plot_path(groups, key))
        if stats is None:
            report.notes.append(f"dark {key.label}: no readable frame")
            continue
        report.darks.append(stats)
        if rate_map is not None:
            darks[key] = rate_map

    groups = result.flat_groups()
    for key, frames in groups.items():
        camera = (key.binning, key.shape)
        bias_key, bias = biases.get(camera, (None, None))
        times = [f.exptime for f in frames if math.isfinite(f.exptime)]
        dark = _dark_for_flats(darks, camera, float(np.median(times)) if times else math.nan)
        stats = _flat_group(key, frames, bias_key, bias, dark, low_threshold,
                            plot_path(groups, key))
        if stats is None:
            report.notes.append(f"flat {key.label}: no usable frame")
            continue
        report.flats.append(stats)
    for stats in (*report.biases[before[0]:], *report.darks[before[1]:],
                  *report.flats[before[2]:]):
        stats.ccd = ccd
    if ccd is not None:
        report.notes[before[3]:] = [f"{ccd}: {n}" for n in report.notes[before[3]:]]


def _f(value: float, fmt: str = ".4g") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)


def _group(stats) -> str:
    """A group's label, after its CCD's name for multi-extension files."""
    return stats.key.label if stats.ccd is None else f"{stats.ccd} {stats.key.label}"


def format_inspect_table(report: InspectReport) -> str:
    """The report as text: one table per role (a multi-extension camera's groups one per CCD,
    led by the CCD's name), then notes, skipped files and plots."""
    lines: list[str] = []
    if report.biases:
        lines.append("Bias (ADU; e- from the GAIN keyword)")
        lines += text_table(
            ("group", "frames", "level", "frame levels", "read noise", "read noise [e-]"),
            [(_group(b), str(len(b.files)), _f(b.level, ".2f"),
              f"{_f(min(b.levels), '.2f')} .. {_f(max(b.levels), '.2f')}",
              _f(b.read_noise_adu, ".3f"), _f(b.read_noise_e, ".3f")) for b in report.biases])
        lines.append("")
    if report.darks:
        lines.append("Dark (per pixel; hot = excess above threshold)")
        lines += text_table(
            ("group", "frames", "level [ADU]", "current [ADU/s]", "current [e-/s]",
             "hot pixels", "hot threshold [ADU/s]"),
            [(_group(d), str(len(d.files)), _f(d.level, ".2f"), _f(d.rate_adu_s, ".4g"),
              _f(d.rate_e_s, ".4g"), str(d.n_hot), _f(d.hot_threshold_adu_s, ".4g"))
             for d in report.darks])
        lines.append("")
    if report.flats:
        lines.append("Flat (normalised to median 1)")
        lines += text_table(
            ("group", "frames", "level [ADU]", "above bias [ADU]", "rms [%]",
             "pixel rms [%]", "corner/centre", "low pixels"),
            [(_group(f), str(len(f.files)), _f(f.level, ".1f"), _f(f.signal, ".1f"),
              _f(f.rms_percent, ".2f"), _f(f.pixel_rms_percent, ".2f"),
              _f(f.corner_ratio, ".3f"), str(f.n_low)) for f in report.flats])
        lines.append("")
    if not (report.biases or report.darks or report.flats):
        lines.append("no bias, dark or flat frames to inspect")
        lines.append("")
    group_notes = [(s, n) for s in (*report.biases, *report.darks, *report.flats)
                   for n in s.notes]
    if group_notes or report.notes:
        lines.append("notes:")
        lines += [f"  {s.key.role} {_group(s)}: {n}" for s, n in group_notes]
        lines += [f"  {n}" for n in report.notes]
    if report.scan.skipped:
        lines.append(f"skipped ({len(report.scan.skipped)}):")
        lines += [f"  {s}" for s in report.scan.skipped]
    if report.plots:
        lines.append(f"plots: {', '.join(report.plots)}")
    return "\n".join(lines).rstrip()

