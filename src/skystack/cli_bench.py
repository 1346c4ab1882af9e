"""``skystack bench``: compare combine methods for quality and speed, with the peers, on
synthetic stacks with a known truth or on the user's frames (see :mod:`skystack.bench`)."""

from __future__ import annotations

import argparse
import re

from .config import CHOICES
from .errors import SkystackError

EPILOG_BENCH = """\
methods (--methods, space-separated; default: all nine aliases):
  mean, median                plain mean / median, no rejection
  sigclip                     mean+sigclip:center=median,spread=std,sigma=3,maxiters=5
  sigclip-mad                 mean+sigclip:center=median,spread=mad,sigma=3,maxiters=5
  minmax                      mean+minmax:nlow=1,nhigh=1
  percentile                  mean+percentile:plow=25,phigh=25 (interquartile mean)
  winsor                      mean+winsor:sigma=3,maxiters=5 (Siril's winsorized sigma clip)
  linfit                      mean+linfit:sigma=3,maxiters=5 (linear-fit clipping, from the ends)
  pctclip                     mean+pctclip:pctclip_low=0.2,pctclip_high=0.1 (Siril's percentile)
  METHOD[+REJECT][:k=v,...]   any other, with skystack combine's options in snake_case

sections (--sections): combine (the methods above; default), resampling (stack --interp
  bilinear/nearest/lanczos3/lanczos4/drizzle on dithered, rotated frames with WCS: flux,
  FWHM broadening, noise and its correlation), weights (--weights none/exptime/bgnoise/
  psf-signal/stars, --scale stars/median/regression on frames of unequal noise: noise against
  the optimal inverse-variance stack, flux bias); --quick runs all three

outputs in DIR: bench.md, bench.csv, bench.json, time_vs_n.png, noise.png, rejection.png

examples:
  skystack bench --quick -o bench-quick
  skystack bench --sections resampling,weights --frames 16 --size 512x512 -o bench-resample
  skystack bench --frames 30 --size 2048x2048 --methods median sigclip-mad -o bench-30
  skystack bench --inputs 'lights/*.fits' --peers numpy,astropy -o bench-mine
  skystack bench --methods 'mean+sigclip:spread=mad,sigma=4' mean --peers none -o b
"""


def _size(text: str) -> tuple[int, int]:
    """``WxH`` or ``N`` -> ``(ny, nx)``."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: want WxH, e.g. 1024x1024")
    w = int(m.group(1))
    h = int(m.group(2) or w)
    return h, w


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid frame counts {text!r}: want e.g. "
                                         "5,10,40") from None


def add_bench_parser(sub) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``sub`` (argparse subparsers); returns its parser."""
    b = sub.add_parser(
        "bench", help="compare combine methods (noise, cosmic rays, trails, flux bias, "
                      "rejected pixels) and their speed against numpy, astropy, ccdproc, SWarp",
        epilog=EPILOG_BENCH, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure every chosen method and rejection on a synthetic stack with a "
                    "known truth (sky, faint and bright stars, read and Poisson noise, cosmic "
                    "rays, a satellite trail, frames with a brighter sky), or on your frames "
                    "(--inputs; quality by leave-one-out), and time them on each backend "
                    "side by side with the peers installed here.")
    b.add_argument("-o", "--output", default="skystack-bench", metavar="DIR",
                   help="output directory (default: ./skystack-bench)")
    b.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in DIR")
    b.add_argument("--quick", action="store_true",
                   help="8 frames of 256x256, N = 4..32 for the time plot and every section "
                        "(under a minute)")
    b.add_argument("--frames", type=int, metavar="N",
                   help="frames in the synthetic stack (default 20; --quick 8)")
    b.add_argument("--size", type=_size, metavar="WxH",
                   help="synthetic frame size (default 1024x1024; --quick 256x256)")
    b.add_argument("--inputs", nargs="+", metavar="FILES",
                   help="measure on these FITS files (aligned frames, at least 3) instead")
    b.add_argument("--hdu", help="with --inputs: HDU index or EXTNAME")
    b.add_argument("--methods", nargs="+", metavar="SPEC",
                   help="methods to compare (see below; default: all six aliases)")
    b.add_argument("--backend", default="all", metavar="LIST",
                   help="cpu, gpu or all (default; an unusable GPU is reported and skipped)")
    b.add_argument("--peers", default="all", metavar="LIST",
                   help="comma-separated: numpy, bottleneck, astropy, ccdproc, swarp; all "
                        "(default) or none")
    b.add_argument("--sweep", type=_counts, metavar="N,N,...",
                   help="frame counts for the time-against-N plot (default N/4, N/2, 2N; "
                        "--quick 4,16,32)")
    b.add_argument("--sections", default=None, metavar="LIST",
                   help="what to compare, comma-separated: combine (methods and rejections; "
                        "the default), resampling (stack --interp bilinear, nearest, lanczos3/4, "
                        "drizzle; peers reproject and drizzle), weights (--weights and "
                        "--scale/--zero choices on frames of unequal noise), or all "
                        "(--quick: all)")
    b.add_argument("--repeats", type=int, metavar="R",
                   help="timed runs of each skystack contestant, median kept (default 3; "
                        "peers run once unless --quick)")
    # The peers get frames normalised by bench.run.normalise, which knows the statistics
    # kinds only (not the star or regression fits of skystack.frame_measures).
    b.add_argument("--zero", default="median", choices=_plain(CHOICES["zero"]),
                   help="additive normalisation of skystack's combines (default: median)")
    b.add_argument("--scale", default="none", choices=_plain(CHOICES["scale"]),
                   help="multiplicative normalisation (default: none)")
    b.add_argument("--seed", type=int, help="seed of the synthetic stack")
    b.add_argument("--threads", type=int, help="skystack CPU threads (default: all cores)")
    b.add_argument("--timeout", type=float, default=900.0, metavar="S",
                   help="seconds before one contestant is abandoned (900)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    b.add_argument("-v", "--verbose", action="store_true", help="log details")
    return b


def _plain(kinds: tuple[str, ...]) -> list[str]:
    """The normalisation kinds that are not measured from stars or by regression."""
    from .frame_measures import MEASURED_SCALES, MEASURED_ZEROS

    return [k for k in kinds if k not in MEASURED_SCALES + MEASURED_ZEROS]


def settings_from_args(a: argparse.Namespace):
    """:class:`~skystack.bench.run.BenchSettings` from parsed arguments (validated)."""
    from .bench import peers as peer_mod
    from .bench.methods import DEFAULT_METHODS, parse_methods
    from .bench.run import FULL, QUICK, SECTIONS, BenchSettings
    from .bench.truth import SEED

    preset = QUICK if a.quick else FULL
    backends = _list(a.backend.lower())
    if backends == ["all"]:
        backends = ["cpu", "gpu"]
    bad = set(backends) - {"cpu", "gpu"}
    if bad or not backends:
        raise SkystackError(f"invalid --backend {a.backend!r}: choose cpu, gpu, cpu,gpu or all")
    peers = _list(a.peers.lower())
    if peers == ["all"]:
        peers = list(peer_mod.PEERS)
    elif peers == ["none"]:
        peers = []
    bad = set(peers) - set(peer_mod.PEERS)
    if bad:
        raise SkystackError(f"invalid --peers {', '.join(sorted(bad))}: choose from "
                            f"{', '.join(peer_mod.PEERS)}, all or none")
    frames = a.frames if a.frames is not None else preset["frames"]
    repeats = a.repeats if a.repeats is not None else preset["repeats"]
    if repeats < 1:
        raise SkystackError(f"invalid --repeats {repeats}: must be at least 1")
    if a.sweep is not None and any(n < 2 for n in a.sweep):
        raise SkystackError("invalid --sweep: every frame count must be at least 2")
    sections = _list((a.sections or ("all" if a.quick else "combine")).lower())
    if sections == ["all"]:
        sections = list(SECTIONS)
    bad = set(sections) - set(SECTIONS)
    if bad or not sections:
        raise SkystackError(f"invalid --sections {a.sections!r}: choose from "
                            f"{', '.join(SECTIONS)} or all")
    hdu = int(a.hdu) if a.hdu is not None and a.hdu.lstrip("-").isdigit() else a.hdu
    return BenchSettings(
        out_dir=a.output, frames=frames, shape=a.size or preset["shape"],
        backends=tuple(dict.fromkeys(backends)), methods=parse_methods(a.methods or
                                                                        DEFAULT_METHODS),
        peers=tuple(dict.fromkeys(peers)), inputs=a.inputs, hdu=hdu, quick=a.quick,
        sweep=a.sweep if a.sweep is not None else preset["sweep"], repeats=repeats,
        zero=a.zero, scale=a.scale, seed=SEED if a.seed is None else a.seed,
        timeout=a.timeout, threads=a.threads, overwrite=a.overwrite,
        sections=tuple(dict.fromkeys(sections)))


def run_bench(a: argparse.Namespace) -> int:
    """Run ``skystack bench``; returns the exit code (0, or 2 for a user error raised as
    SkystackError by the caller)."""
    from .bench.run import run_suite

    settings = settings_from_args(a)
    rep = run_suite(settings, log=None if a.quiet else print)
    if not a.quiet:
        from .bench.report import render_markdown

        print()
        print(render_markdown(rep))
        print(f"wrote {len(rep['files'])} files to {a.output} in {rep['seconds_total']:.1f} s")
    return 0
