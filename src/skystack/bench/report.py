"""The benchmark's outputs: ``bench.md``, ``bench.csv``, ``bench.json`` and PNG plots.

Every file is written under a temporary name in the output directory and renamed when complete.
``bench.json`` holds everything (settings, machine, how the data were made, every result); the
CSV has one row per contestant and frame count (``kind`` = ``main`` for the quality stack,
``sweep`` for the timing-only stacks of the time-against-N plot).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..io.atomic import atomic_write
from .report_sections import EXTRA_CSV_COLUMNS, section_csv_rows, section_markdown

OUTPUT_FILES = ("bench.md", "bench.csv", "bench.json", "time_vs_n.png", "noise.png",
                "rejection.png")

CSV_COLUMNS = [
    "kind", "method", "engine", "backend", "n_frames", "ny", "nx", "seconds",
    "mpix_frames_per_s", "peak_rss_mib", "op_mib", "device_mib", "noise_ratio",
    "bg_bias_sigma", "cr_rms_sigma", "cr_max_sigma", "trail_rms_sigma", "trail_max_sigma",
    "artefact_rms_sigma", "artefact_max_sigma", "faint_bias_pct", "faint_bias_err_pct",
    "bright_bias_pct", "bright_bias_err_pct", "good_rejected_pct", "note", "error",
    *EXTRA_CSV_COLUMNS,
]


def _f(value, fmt: str = ".2f", missing: str = "–") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, fmt)


def _pair(a, b, fmt: str = ".1f") -> str:
    return "–" if a is None else f"{_f(a, fmt)} / {_f(b, fmt)}"


def _bias(value, err) -> str:
    return "–" if value is None else f"{value:+.1f} ± {_f(err, '.1f')}"


def contestant(row: dict) -> str:
    engine = row["engine"] if row["engine"] != "skystack" else f"skystack {row['backend']}"
    return f"{row['method']} · {engine}"


def render_markdown(report: dict) -> str:
    if "combine" not in report["settings"].get("sections", ["combine"]):
        m = report["machine"]
        quick = ", quick" if report["settings"]["quick"] else ""
        return "\n".join([
            f"# skystack bench ({report['date']}{quick})",
            "", f"- machine: {m.get('cpu_model')}, {m.get('cpu_count')} CPUs, "
            f"{m.get('mem_total_gib')} GiB; python {m.get('python')}, numpy {m.get('numpy')}, "
            f"skystack {m.get('skystack')}", *section_markdown(report), ""])
    s, m = report["settings"], report["machine"]
    truth = report["mode"] == "synthetic"
    title = f"# skystack bench ({report['date']}{', quick' if s['quick'] else ''})"
    lines = [title, ""]
    if truth:
        d = report["data"]
        lines.append(
            f"- data: synthetic, {d['n_frames']} frames of {d['shape'][1]}×{d['shape'][0]} px "
            f"(seed {d['seed']}): sky {d['sky_adu'][0]:g} ADU (frames {d['bright_sky_frames']} "
            f"brighter ×{max(d['sky_adu']) / d['sky_adu'][0]:.1f}), gain {d['gain_e_per_adu']} "
            f"e-/ADU, read noise {d['read_noise_adu']} ADU, {d['n_faint_stars']} faint and "
            f"{d['n_bright_stars']} bright Moffat stars, seeing {min(d['fwhm_px']):.1f}–"
            f"{max(d['fwhm_px']):.1f} px, {d['cosmic_ray_pixels']} cosmic-ray pixels, one "
            f"satellite trail ({d['trail_pixels']} px above 1σ) in frame {d['trail_frame']}; "
            f"ideal σ/√N = {d['ideal_sigma_adu']} ADU")
    else:
        d = report["data"]
        lines.append(f"- data: {d['n_frames']} input frames of {d['shape'][1]}×{d['shape'][0]} "
                     f"px ({d['first']} …); quality by split halves and leave-one-out "
                     f"({d['outlier_pixels']} outlier pixels found)")
    lines.append(f"- normalisation: every contestant gets the same frames, normalised "
                 f"beforehand (untimed) as skystack's --zero {s['zero']} --scale {s['scale']} "
                 "would")
    lines.append(f"- machine: {m.get('cpu_model')}, {m.get('cpu_count')} CPUs, "
                 f"{m.get('mem_total_gib')} GiB; python {m.get('python')}, numpy "
                 f"{m.get('numpy')}, astropy {m.get('astropy')}, skystack {m.get('skystack')}")
    lines.append("- backends: " + "; ".join(f"{k}: {v}" for k, v in report["backends"].items()))
    lines.append("- peers: " + "; ".join(f"{k}: {v}" for k, v in report["peers"].items()))
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    lines += ["", "## Quality", ""]
    rows = [r for r in report["results"] if "error" not in r]
    if truth:
        lines += [
            "Residuals in units of the ideal σ/√N (about 1 means removed down to the noise); "
            "flux bias by aperture photometry against the true fluxes (± standard error); "
            "good rejected = 1 − COUNT/N where no artefact is (– where the engine gives no "
            "count).", "",
            "| method | engine | noise / ideal | bg bias (σ) | CR rms / max (σ) "
            "| trail rms / max (σ) | faint flux bias % | bright flux bias % | good rejected % |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(
                f"| {r['method']} | {_engine(r)} | {_f(r.get('noise_ratio'), '.3f')} "
                f"| {_f(r.get('bg_bias_sigma'), '+.2f')} "
                f"| {_pair(r.get('cr_rms_sigma'), r.get('cr_max_sigma'))} "
                f"| {_pair(r.get('trail_rms_sigma'), r.get('trail_max_sigma'))} "
                f"| {_bias(r.get('faint_bias_pct'), r.get('faint_bias_err_pct'))} "
                f"| {_bias(r.get('bright_bias_pct'), r.get('bright_bias_err_pct'))} "
                f"| {_f(r.get('good_rejected_pct'), '.2f')} |")
    else:
        lines += [
            "No truth: noise / ideal from the difference of the stacks of two disjoint halves "
            "of the frames; artefact residual = stack with − stack without the frame holding "
            "the outlier, in units of the ideal σ/√N (leave-one-out); good rejected = "
            "1 − COUNT/N where no frame has an outlier.", "",
            "| method | engine | noise / ideal (halves) | artefact rms / max (σ) "
            "| good rejected % |", "|---|---|---:|---:|---:|"]
        for r in rows:
            lines.append(
                f"| {r['method']} | {_engine(r)} | {_f(r.get('noise_ratio'), '.3f')} "
                f"| {_pair(r.get('artefact_rms_sigma'), r.get('artefact_max_sigma'))} "
                f"| {_f(r.get('good_rejected_pct'), '.2f')} |")
    lines += ["", "## Speed", "",
              f"{s['frames']} frames of {s['shape'][1]}×{s['shape'][0]}, in memory, median of "
              f"{s['repeats']} run(s); pixel-frames/s = N·W·H / seconds; peak RSS = the worker "
              "process's high-water mark during the call, op = what the call added (see "
              "bench.json `memory`).", "",
              "| method | engine | backend | seconds | Mpix·frames/s | peak RSS MiB | op MiB "
              "| note |", "|---|---|---|---:|---:|---:|---:|---|"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['engine']} | {r['backend']} | {r['error']} "
                         "| | | | |")
            continue
        op = _f(r.get("op_mib"), ".0f")
        if r.get("device_mib") is not None:
            op += f" (device {r['device_mib']:.0f})"
        lines.append(f"| {r['method']} | {r['engine']} | {r['backend']} | {r['seconds']:.4f} "
                     f"| {_f(r.get('mpix_frames_per_s'), '.1f')} "
                     f"| {_f(r.get('peak_rss_mib'), '.0f')} | {op} | {r.get('note') or ''} |")
    series = time_series(report)
    if series:
        ns = sorted({n for pts in series.values() for n, _ in pts})
        lines += ["", "## Time against N (seconds)", "",
                  "| contestant | " + " | ".join(f"N={n}" for n in ns) + " |",
                  "|---|" + "---:|" * len(ns)]
        for name, pts in series.items():
            by_n = dict(pts)
            lines.append(f"| {name} | " + " | ".join(_f(by_n.get(n), ".4f") for n in ns) + " |")
    lines += section_markdown(report)
    lines.append("")
    return "\n".join(lines)


def _engine(row: dict) -> str:
    return f"skystack ({row['backend']})" if row["engine"] == "skystack" else row["engine"]


def time_series(report: dict) -> dict[str, list[tuple[int, float]]]:
    """Seconds against N for every contestant timed at more than one N."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in list(report["results"]) + list(report.get("sweep", [])):
        if "seconds" in r:
            series.setdefault(contestant(r), []).append((r["n_frames"], r["seconds"]))
    return {k: sorted(set(v)) for k, v in series.items() if len({n for n, _ in v}) > 1}


def render_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for kind in ("results", "sweep"):
        for r in report.get(kind, []):
            w.writerow({**{k: "" for k in CSV_COLUMNS}, "kind": "main" if kind == "results"
                        else "sweep", **{k: ("" if v is None else v) for k, v in r.items()}})
    for r in section_csv_rows(report):
        w.writerow({**{k: "" for k in CSV_COLUMNS},
                    **{k: ("" if v is None else v) for k, v in r.items()}})
    return buf.getvalue()


def _figure(n_panels: int, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * n_panels + 1.5, height), layout="constrained")
    return fig, fig.subplots(1, n_panels, sharey=True, squeeze=False)[0]


def _barh(ax, labels, values, title, xlabel, log=False, errors=None, lines=()) -> None:
    ys = range(len(labels))
    vals = [math.nan if v is None else v for v in values]
    xerr = None if errors is None else [0 if e is None else e for e in errors]
    ax.barh(list(ys), vals, xerr=xerr, color="#4c72b0", alpha=0.85)
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    if log and any(v > 0 for v in vals if math.isfinite(v)):
        ax.set_xscale("log")
    for x, style in lines:
        ax.axvline(x, color="k", lw=0.8, ls=style)


def plot_time_vs_n(report: dict, path: str) -> None:
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    series = time_series(report)
    colours = matplotlib.colormaps["tab20"].colors
    for i, (name, pts) in enumerate(series.items()):
        ns, secs = zip(*pts)
        ax.plot(ns, secs, marker="o", ms=3, lw=1.2, label=name, color=colours[i % 20],
                ls="-" if "skystack" in name else "--")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("frames N")
    ax.set_ylabel("seconds (in memory, median)")
    s = report["settings"]
    ax.set_title(f"time against N, {s['shape'][1]}×{s['shape'][0]} px frames", fontsize=10)
    if series:
        ax.legend(fontsize=6, loc="upper left", ncol=1 if len(series) < 12 else 2)
    else:
        ax.text(0.5, 0.5, "no contestant timed at several N", ha="center",
                transform=ax.transAxes)
    fig.savefig(path, format="png", dpi=110)


def plot_noise(report: dict, path: str) -> None:
    rows = [r for r in report["results"] if "error" not in r]
    labels = [contestant(r) for r in rows]
    truth = report["mode"] == "synthetic"
    fig, axes = _figure(3 if truth else 1, 0.8 + 0.22 * max(1, len(rows)))
    _barh(axes[0], labels, [r.get("noise_ratio") for r in rows], "background noise / ideal σ/√N",
          "ratio (1 = plain mean; dotted: median, √(π/2))",
          lines=((1.0, "-"), (math.sqrt(math.pi / 2), ":")))
    if truth:
        for ax, name in zip(axes[1:], ("faint", "bright")):
            _barh(ax, labels, [r.get(f"{name}_bias_pct") for r in rows],
                  f"{name} star flux bias", "% of true flux",
                  errors=[r.get(f"{name}_bias_err_pct") for r in rows], lines=((0.0, "-"),))
    fig.savefig(path, format="png", dpi=110)


def plot_rejection(report: dict, path: str) -> None:
    rows = [r for r in report["results"] if "error" not in r]
    labels = [contestant(r) for r in rows]
    truth = report["mode"] == "synthetic"
    panels = ([("cr_rms_sigma", "cosmic-ray residual"), ("trail_rms_sigma", "trail residual")]
              if truth else [("artefact_rms_sigma", "outlier residual (leave-one-out)")])
    fig, axes = _figure(len(panels) + 1, 0.8 + 0.22 * max(1, len(rows)))
    for ax, (key, title) in zip(axes, panels):
        _barh(ax, labels, [r.get(key) for r in rows], title, "RMS in units of σ/√N (log)",
              log=True, lines=((1.0, ":"),))
    _barh(axes[-1], labels, [r.get("good_rejected_pct") for r in rows],
          "good values rejected", "% of N (– : no count)")
    fig.savefig(path, format="png", dpi=110)


def check_output_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Create ``out_dir`` if needed; refuse (SkystackError) when it holds results already and
    ``overwrite`` is off. Checked before any work."""
    from ..errors import SkystackError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SkystackError(f"{out}: exists and is not a directory")
    if not overwrite:
        for name in OUTPUT_FILES:
            if (out / name).exists():
                raise SkystackError(f"{out / name}: output exists (use --overwrite to "
                                    "replace the results in that directory)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SkystackError(f"{out}: cannot create the output directory "
                            f"({exc.strerror})") from None
    return out


def write_outputs(report: dict, out_dir: str | Path, overwrite: bool) -> list[str]:
    """Write every output file of :data:`OUTPUT_FILES`; returns their paths."""
    out = Path(out_dir)
    texts = {"bench.md": render_markdown(report), "bench.csv": render_csv(report),
             "bench.json": json.dumps(report, indent=1, default=_json_default) + "\n"}
    written = []
    for name, text in texts.items():
        with atomic_write(out / name, overwrite=overwrite) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        written.append(str(out / name))
    plots = (("time_vs_n.png", plot_time_vs_n), ("noise.png", plot_noise),
             ("rejection.png", plot_rejection))
    if "combine" not in report["settings"].get("sections", ["combine"]):
        plots = ()  # the plots show the combine methods only
    for name, plot in plots:
        with atomic_write(out / name, overwrite=overwrite) as tmp:
            plot(report, tmp)
        written.append(str(out / name))
    return written


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
