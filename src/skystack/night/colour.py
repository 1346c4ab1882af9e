"""Colour (one-shot-colour, Bayer) lights in a night: three stacks per object and filter.

Masters and calibration stay in CFA space (a bias, dark or flat is combined photosite by
photosite and keeps the Bayer cards; a colour flat is normalised per colour channel:
:func:`skystack.night.masters.normalise_flat`). The lights are then debayered
(``run_night(debayer=...)``, ``night --debayer``, default :data:`NIGHT_DEBAYER`;
:func:`skystack.colour.debayer`) after calibration:

* alignment (WCS or stars) is made on the *green* planes of the object's lights
  (:func:`green_frames`), once for the three colours;
* each (object, filter) group of colour lights is planned as three stacks, one per plane
  (:func:`colour_stack_keys`): FILTER key ``R``, ``G``, ``B`` when the lights have no colour
  filter of their own (no FILTER, or a luminance / clear / UV-IR-cut one), else
  ``<FILTER>_R`` …; ``stacks/<OBJECT>_R.fits`` … are ordinary stacks with ``CFACHAN`` and
  ``DEBAYER`` in the header, and the night's RGB composite is made from the three planes as
  from three filters. A light's record in ``summary.json`` names its three plane stacks.

Lights mixing colour and monochrome frames in one group are refused by the plan (one line
naming a frame of each).
"""

from __future__ import annotations

import numpy as np

from ..colour.cfa import CFA_KEYS, CHANNELS, cfa_pattern
from ..colour.debayer import debayer, plane_cards
from ..core.frame import Frame
from ..core.tiles import Tile
from ..errors import SkystackError
from ..io.reader import ArraySource

NIGHT_DEBAYER = "bilinear"  # the night's demosaicing (skystack.colour.debayer.DEBAYER_METHODS)
# Filters that pass all three colours: the planes are named R, G, B alone.
_NEUTRAL = {"", "none", "l", "lum", "luminance", "c", "clear", "clr", "open", "uvir", "uv-ir",
            "uv/ir", "uvircut", "uv-ir-cut", "ir-cut", "ircut"}


def colour_stack_keys(filt: str, headers: list, labels: list[str]) -> list[tuple[str, str]]:
    """``[(filter key, channel), ...]`` for the three plane stacks of a group of colour
    lights in filter ``filt``; ``[]`` for monochrome lights. A group mixing the two is a
    :class:`SkystackError`."""
    patterns = [cfa_pattern(h, label) for h, label in zip(headers, labels, strict=True)]
    colour = [p is not None for p in patterns]
    if not any(colour):
        return []
    if not all(colour):
        mono = labels[colour.index(False)]
        raise SkystackError(f"{mono}: monochrome light mixed with colour (Bayer) light "
                            f"{labels[colour.index(True)]} in filter {filt}")
    neutral = filt.strip().lower() in _NEUTRAL
    return [(ch if neutral else f"{filt}_{ch}", ch) for ch in CHANNELS]


def _planes(frame: Frame, method: str) -> np.ndarray:
    pattern = cfa_pattern(frame.header, frame.label)
    if pattern is None:
        raise SkystackError(f"{frame.label}: not a colour (Bayer) frame")
    mosaic = np.empty(frame.shape, np.float32)
    frame.source.read(Tile(0, frame.shape[0], 0, frame.shape[1]), mosaic)
    return debayer(mosaic, pattern.layout(frame.shape), method)


def plane_frame(frame: Frame, channel: str, method: str = NIGHT_DEBAYER) -> Frame:
    """The ``channel`` (R, G or B) plane of a calibrated colour light, debayered in memory,
    with its header (same path and HDU, so that it is matched to its registration) minus the
    Bayer cards, plus ``CFACHAN`` and ``DEBAYER``."""
    plane = _planes(frame, method)[CHANNELS.index(channel)]
    header = frame.header.copy()
    for key in CFA_KEYS:
        header.remove(key, ignore_missing=True)
    for key, value, comment in plane_cards(channel, method):
        header[key] = (value, comment)
    return Frame(frame.label, frame.shape, header, ArraySource(plane), frame.path,
                 frame.hdu_index)


def green_frames(lights: list[Frame], method: str = NIGHT_DEBAYER) -> list[Frame]:
    """The lights to align: colour lights replaced by their green plane (twice the photosites
    of red or blue), monochrome ones as they are."""
    return [plane_frame(f, "G", method) if cfa_pattern(f.header, f.label) is not None else f
            for f in lights]
