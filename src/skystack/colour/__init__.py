"""Colour (one-shot-colour, CFA) cameras: Bayer patterns from the headers
(:mod:`skystack.colour.cfa`) and demosaicing (:mod:`skystack.colour.debayer`)."""

from .cfa import CFA_KEYS, PATTERNS, CfaPattern, cfa_pattern, common_cfa
from .debayer import DEBAYER_METHODS, debayer

__all__ = ["CFA_KEYS", "PATTERNS", "CfaPattern", "cfa_pattern", "common_cfa",
           "DEBAYER_METHODS", "debayer"]
