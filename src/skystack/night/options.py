"""Checking the night's stack options that need more than the combine engine's checks.

* ``debayer`` (colour lights, :mod:`skystack.night.colour`): one of
  :data:`skystack.colour.debayer.DEBAYER_METHODS`. It is in the colour stacks' fingerprint when
  it is not the default (``bilinear``), so that a night re-run with another method refuses (or,
  with ``--overwrite``, rebuilds) the stacks made with the old one, while colour stacks made
  before the option existed stay fresh.
* ``interp="drizzle"`` (:mod:`skystack.drizzling`) with ``pixfrac``, ``drizzle_kernel``,
  ``drizzle_scale``: resolved to their values (defaults filled in) so that they travel, with
  ``interp``, in the stack options into ``stack_to_file`` and into the stacks' fingerprints;
  left out entirely without drizzle (existing fingerprints unchanged).

A drizzle co-add sees one frame at a time and cannot reject outliers, but the night's default
rejection is ``sigclip`` (:data:`skystack.config.NIGHT_STACK_OPTIONS`). A user who asks for
``--interp drizzle`` without choosing a rejection asked for a drizzled night, not for an error
about a default they never set: the night then stacks with ``reject="none"``, says so in its
log and in every stack's header (HISTORY). A rejection the user did choose (anything but
``none``) with drizzle is a one-line error, as for ``skystack stack``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..colour.debayer import DEBAYER_METHODS
from ..errors import SkystackError

__all__ = ["DRIZZLE_KEYS", "DRIZZLE_NO_REJECT", "check_debayer", "drizzle_stack_options"]

DRIZZLE_KEYS = ("pixfrac", "drizzle_kernel", "drizzle_scale")
# A HISTORY card's text (72 characters at most: one card).
DRIZZLE_NO_REJECT = "night: --interp drizzle: reject none (drizzle sees one frame at a time)"


def check_debayer(method: str) -> str:
    """``method`` when it is one of :data:`DEBAYER_METHODS`, else a one-line
    :class:`SkystackError` naming the choices."""
    if method not in DEBAYER_METHODS:
        raise SkystackError(f"invalid --debayer {method!r}: choose from "
                            f"{', '.join(DEBAYER_METHODS)}")
    return method


def drizzle_stack_options(stack_options: dict, defaults: dict,
                          log: Callable[[str], None]) -> tuple[dict, list[str]]:
    """The night's stack options with the drizzle ones resolved, and the HISTORY lines of its
    stacks (see module docstring).

    ``stack_options``: what the user gave (``interp`` and the combine options; the drizzle
    keys may be None: not given); ``defaults``: the night's combine defaults, under the user's
    options. Without ``interp="drizzle"`` the drizzle keys are removed (a value given is a
    one-line error). With it, ``reject`` becomes ``"none"`` unless the user gave one (then it
    must be ``none``, as every other drizzle restriction is checked by
    :func:`skystack.drizzling.drizzle_params`), and the three drizzle options get their
    resolved values."""
    from ..api import LOADING_OPTIONS, combine_options
    from ..drizzling import drizzle_params

    options = {k: v for k, v in stack_options.items() if k not in DRIZZLE_KEYS}
    given = [stack_options.get(k) for k in DRIZZLE_KEYS]
    interp = options.get("interp", "bilinear")
    history = []
    if options.get("reject", "") is None:  # not chosen (the CLI's default): the night's
        del options["reject"]
    if interp == "drizzle" and "reject" not in options:
        options["reject"] = "none"
        log(f"stack   {DRIZZLE_NO_REJECT}")
        history.append(DRIZZLE_NO_REJECT)
    combine = combine_options(**{k: v for k, v in {**defaults, **options}.items()
                                 if k != "interp" and k not in LOADING_OPTIONS})
    params = drizzle_params(interp, *given, combine)
    if params is not None:
        options.update(pixfrac=float(params.pixfrac), drizzle_kernel=params.kernel,
                       drizzle_scale=float(params.scale))
    return options, history

