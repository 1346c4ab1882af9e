"""The combine methods a benchmark compares, written as short specs.

A spec is ``METHOD[+REJECT][:key=value,...]`` with the option names of
:func:`skystack.combine_options` (``center``, ``spread``, ``sigma``, ``sigma_low``,
``sigma_high``, ``maxiters``, ``nlow``, ``nhigh``, ``plow``, ``phigh``, ``low``, ``high``,
``pctclip_low``, ``pctclip_high``, ``esd_alpha``, ``esd_max_frac``, ``gain``, ``rdnoise``,
``snoise``, ``pclip``), e.g.
``median``, ``mean+sigclip:spread=mad,sigma=4`` or ``mean+minmax:nhigh=2``; or one of the
aliases of :data:`ALIASES` (``sigclip``, ``sigclip-mad``, ``minmax``, ``percentile``,
``winsor``, ``linfit``, ``pctclip``, ``esd``, ``ccdclip``, ``pclip``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api import combine_options
from ..config import METHODS, REJECTIONS
from ..errors import SkystackError
from .truth import GAIN, READ_NOISE

#: Short names for the usual choices of astronomers, in the order of the default comparison:
#: plain mean (best noise, no rejection), median (robust, ~25 % more noise), sigma clipping
#: around the median with the standard deviation (IRAF/ccdproc habit) and with the MAD (robust
#: with few frames), min/max rejection and the interquartile mean (percentile 25/25); Siril's
#: winsorized sigma clipping, linear-fit clipping and percentile clipping (relative to the median).
ALIASES: dict[str, str] = {
    "mean": "mean",
    "median": "median",
    "sigclip": "mean+sigclip:center=median,spread=std,sigma=3,maxiters=5",
    "sigclip-mad": "mean+sigclip:center=median,spread=mad,sigma=3,maxiters=5",
    "minmax": "mean+minmax:nlow=1,nhigh=1",
    "percentile": "mean+percentile:plow=25,phigh=25",
    "winsor": "mean+winsor:sigma=3,maxiters=5",
    "linfit": "mean+linfit:sigma=3,maxiters=5",
    "pctclip": "mean+pctclip:pctclip_low=0.2,pctclip_high=0.1",
    # Siril's GESDT values (at most 0.3 n outliers, 5 %); IRAF's ccdclip with the synthetic
    # stacks' own noise model (gain e-/ADU, read noise e-: skystack.bench.truth); IRAF's pclip.
    "esd": "mean+esd:esd_alpha=0.05,esd_max_frac=0.3",
    "ccdclip": f"mean+ccdclip:sigma=3,gain={GAIN:g},rdnoise={READ_NOISE * GAIN:g},snoise=0",
    "pclip": "mean+pclip:pclip=-0.5,sigma=3",
}
DEFAULT_METHODS = tuple(ALIASES)

_INT_KEYS = {"maxiters", "nlow", "nhigh"}
_FLOAT_KEYS = {"sigma", "sigma_low", "sigma_high", "plow", "phigh", "low", "high",
               "pctclip_low", "pctclip_high",
               "esd_alpha", "esd_max_frac", "gain", "rdnoise", "snoise", "pclip"}
_TEXT_KEYS = {"center", "spread"}


@dataclass(frozen=True)
class MethodSpec:
    """One combine method: its spec text and the keyword options of :func:`skystack.combine`.

    ``options`` is a tuple of ``(name, value)`` pairs (hashable); :attr:`kwargs` gives a dict.
    Only the options that matter for the rejection are kept, so that :attr:`label` is short.
    """

    spec: str
    options: tuple[tuple[str, object], ...]

    @property
    def kwargs(self) -> dict:
        return dict(self.options)

    @property
    def method(self) -> str:
        return self.kwargs["method"]

    @property
    def reject(self) -> str:
        return self.kwargs.get("reject", "none")

    @property
    def label(self) -> str:
        """A readable name, e.g. ``mean+sigclip(median,mad,3σ)``."""
        o = self.kwargs
        reject = self.reject
        if reject == "none":
            return o["method"]
        if reject == "sigclip":
            lo, hi = o["sigma_low"], o["sigma_high"]
            sig = f"{lo:g}σ" if lo == hi else f"-{lo:g}σ/+{hi:g}σ"
            iters = "" if o["maxiters"] == 5 else f",{o['maxiters'] or '∞'} it"
            inner = f"{o['center']},{o['spread']},{sig}{iters}"
        elif reject == "minmax":
            inner = f"{o['nlow']},{o['nhigh']}"
        elif reject == "percentile":
            inner = f"{o['plow']:g}%,{o['phigh']:g}%"
        elif reject in ("winsor", "linfit"):
            lo, hi = o["sigma_low"], o["sigma_high"]
            sig = f"{lo:g}σ" if lo == hi else f"-{lo:g}σ/+{hi:g}σ"
            inner = sig + ("" if o["maxiters"] == 5 else f",{o['maxiters'] or '∞'} it")
        elif reject == "pctclip":
            inner = f"-{o['pctclip_low']:g}/+{o['pctclip_high']:g}×median"
        elif reject == "esd":
            inner = f"α={o['esd_alpha']:g},≤{o['esd_max_frac']:g}"
        elif reject == "ccdclip":
            g, rn = ("hdr" if o[k] is None else f"{o[k]:g}" for k in ("gain", "rdnoise"))
            inner = (f"{o['center']},{o['sigma_low']:g}σ/{o['sigma_high']:g}σ,g={g},rn={rn},"
                     f"sn={o['snoise']:g}")
        elif reject == "pclip":
            inner = f"{o['pclip']:g},{o['sigma_low']:g}σ/{o['sigma_high']:g}σ"
        else:
            inner = f"{o.get('low')},{o.get('high')}"
        return f"{o['method']}+{reject}({inner})"


def parse_method(text: str) -> MethodSpec:
    """Parse one spec (see module docstring); raises SkystackError naming the bad part."""
    spec = ALIASES.get(text.strip(), text.strip())
    head, _, tail = spec.partition(":")
    method, _, reject = head.partition("+")
    method, reject = method.strip(), (reject.strip() or "none")
    if method not in METHODS:
        raise SkystackError(f"--methods {text!r}: unknown method {method!r} "
                            f"(choose from {', '.join(METHODS)} or {', '.join(ALIASES)})")
    if reject not in REJECTIONS:
        raise SkystackError(f"--methods {text!r}: unknown rejection {reject!r} "
                            f"(choose from {', '.join(REJECTIONS)})")
    given: dict[str, object] = {}
    for item in filter(None, (p.strip() for p in tail.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        try:
            if not eq:
                raise ValueError
            if key in _INT_KEYS:
                given[key] = int(value)
            elif key in _FLOAT_KEYS:
                given[key] = float(value)
            elif key in _TEXT_KEYS:
                given[key] = value.strip()
            else:
                raise SkystackError(f"--methods {text!r}: unknown option {key!r}")
        except ValueError:
            raise SkystackError(f"--methods {text!r}: bad option {item!r} "
                                "(want key=value)") from None
    opts = combine_options(method=method, reject=reject, **given)  # validates every value
    keep: dict[str, object] = {"method": method}
    if reject != "none":
        keep["reject"] = reject
    if reject == "sigclip":
        keep.update(center=opts.center, spread=opts.spread, sigma_low=opts.sigma_low,
                    sigma_high=opts.sigma_high, maxiters=opts.maxiters)
    elif reject == "minmax":
        keep.update(nlow=opts.nlow, nhigh=opts.nhigh)
    elif reject == "percentile":
        keep.update(plow=opts.plow, phigh=opts.phigh)
    elif reject in ("winsor", "linfit"):
        keep.update(sigma_low=opts.sigma_low, sigma_high=opts.sigma_high,
                    maxiters=opts.maxiters)
    elif reject == "pctclip":
        keep.update(pctclip_low=opts.pctclip_low, pctclip_high=opts.pctclip_high)
    elif reject == "range":
        keep.update(low=opts.range_low, high=opts.range_high)
    elif reject == "esd":
        keep.update(esd_alpha=opts.esd_alpha, esd_max_frac=opts.esd_max_frac)
    elif reject == "ccdclip":
        keep.update(center=opts.center, sigma_low=opts.sigma_low, sigma_high=opts.sigma_high,
                    gain=opts.gain, rdnoise=opts.rdnoise, snoise=opts.snoise)
    elif reject == "pclip":
        keep.update(pclip=opts.pclip, sigma_low=opts.sigma_low, sigma_high=opts.sigma_high)
    return MethodSpec(spec=text.strip(), options=tuple(keep.items()))


def parse_methods(items: list[str] | tuple[str, ...]) -> list[MethodSpec]:
    """Parse several specs, dropping repeats (same options) while keeping the order."""
    out: list[MethodSpec] = []
    for item in items:
        m = parse_method(item)
        if all(m.options != o.options for o in out):
            out.append(m)
    if not out:
        raise SkystackError("--methods: no method given")
    return out
