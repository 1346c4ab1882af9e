"""Markdown tables and CSV rows of the resampling and frame-weights sections of the report
(``report["resampling"]``, ``report["weights"]``; see :mod:`.resampling`, :mod:`.weighting`)."""

from __future__ import annotations

import math

#: CSV columns these sections add to :data:`skystack.bench.report.CSV_COLUMNS`.
EXTRA_CSV_COLUMNS = ["binned_noise_ratio", "noise_correlation", "flux_ratio", "flux_bias_pct",
                     "flux_bias_err_pct", "fwhm_px", "fwhm_ratio", "noise_vs_optimal",
                     "weights", "scale", "zero", "time_ratio"]


def _f(value, fmt: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, fmt)


def _bias(row: dict) -> str:
    if row.get("flux_bias_pct") is None:
        return "–"
    return f"{row['flux_bias_pct']:+.2f} ± {_f(row.get('flux_bias_err_pct'), '.2f')}"


def resampling_markdown(section: dict) -> list[str]:
    d = section["data"]
    lines = [
        "", "## Resampling", "",
        f"{d['n_frames']} frames of {d['shape'][1]}×{d['shape'][0]} px (seed {d['seed']}), each "
        f"dithered by up to ±{d['max_shift_px']:g} px and turned by up to "
        f"±{d['max_rotation_deg']:g}° with its WCS; {d['n_stars']} Moffat stars of FWHM "
        f"{d['fwhm_px']:g} px, sky {d['sky_adu']:g} ADU, one frame's σ = "
        f"{d['frame_sigma_adu']} ADU, ideal σ/√N = {d['ideal_sigma_adu']} ADU; stacked onto the "
        "undithered grid as a mean, no rejection, CPU. Noise / ideal: background residual "
        "against σ/√N (below 1 = smoothed); binned 4×4: the residual's 4×4 block means against "
        "σ/√N/4; correlation = binned / unbinned (1 = uncorrelated); flux ratio: median over "
        "the bright stars of aperture flux (3 FWHM) against the truth; flux bias: all stars' "
        "summed flux (± standard error); FWHM ratio: stacked stars' median FWHM over the "
        "truth's (same measurement); time: median of the runs, ratio to skystack bilinear.",
        "- peers: " + "; ".join(f"{k}: {v}" for k, v in section["peers"].items()), "",
        "| method | engine | noise / ideal | binned 4×4 / ideal | correlation | flux ratio "
        "| flux bias % | FWHM px | FWHM ratio | seconds | time ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in section["rows"]:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['engine']} | {r['error']} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['engine']} | {_f(r.get('noise_ratio'))} "
            f"| {_f(r.get('binned_noise_ratio'))} | {_f(r.get('noise_correlation'), '.2f')} "
            f"| {_f(r.get('flux_ratio'), '.4f')} | {_bias(r)} | {_f(r.get('fwhm_px'), '.2f')} "
            f"| {_f(r.get('fwhm_ratio'))} | {_f(r.get('seconds'), '.3f')} "
            f"| {_f(r.get('time_ratio'), '.2f')} |")
    return lines


def weights_markdown(section: dict) -> list[str]:
    d = section["data"]
    lines = [
        "", "## Frame weights and normalisation", "",
        f"{d['n_frames']} aligned frames of {d['shape'][1]}×{d['shape'][0]} px (seed "
        f"{d['seed']}): EXPTIME {', '.join(f'{e:g}' for e in d['exptime_s'])} s, transparency "
        f"{min(d['transparency']):.2f}–{max(d['transparency']):.2f}, sky "
        f"{min(d['sky_adu']):g}–{max(d['sky_adu']):g} ADU (moonlight on some), seeing "
        f"{min(d['fwhm_px']):.1f}–{max(d['fwhm_px']):.1f} px; each frame's noise scaled to "
        f"frame 0 {min(d['frame_sigma_ref_units']):.1f}–{max(d['frame_sigma_ref_units']):.1f} "
        f"ADU. Combined as a mean, no rejection, CPU. Noise / optimal: background residual "
        f"against the inverse-variance optimum from the truth's σ ({d['optimal_sigma_adu']} "
        f"ADU; equal weights would give {d['equal_vs_optimal']:.3f} in theory); flux ratio: "
        f"median over {d['bright_stars']} bright stars of aperture flux against frame 0's "
        "truth; flux bias: all stars' summed flux; bg bias in units of the optimal σ; time "
        "includes measuring the frames, ratio to equal weights. A wrong scale shows in the "
        "flux ratio (its noise is then on another scale too).", "",
        "| weights | scale | zero | noise / optimal | flux ratio | flux bias % | bg bias (σ) "
        "| seconds | time ratio |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in section["rows"]:
        head = f"| {r['weights']} | {r['scale']} | {r['zero']} "
        if "error" in r:
            lines.append(head + f"| {r['error']} | | | | | |")
            continue
        lines.append(
            head + f"| {_f(r.get('noise_vs_optimal'))} | {_f(r.get('flux_ratio'), '.4f')} "
            f"| {_bias(r)} | {_f(r.get('bg_bias_sigma'), '+.2f')} "
            f"| {_f(r.get('seconds'), '.3f')} | {_f(r.get('time_ratio'), '.2f')} |")
    return lines


def section_markdown(report: dict) -> list[str]:
    """The Markdown of every extra section present in ``report`` (none: empty)."""
    lines: list[str] = []
    if "resampling" in report:
        lines += resampling_markdown(report["resampling"])
    if "weights" in report:
        lines += weights_markdown(report["weights"])
    return lines


def section_csv_rows(report: dict) -> list[dict]:
    """CSV rows of the extra sections, ``kind`` = ``resampling`` or ``weights``."""
    rows = []
    for kind in ("resampling", "weights"):
        for r in report.get(kind, {}).get("rows", []):
            rows.append({"kind": kind, "backend": "cpu", **r})
    return rows
