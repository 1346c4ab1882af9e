"""The product header's record of the cosmetic corrections its frames received (each frame's
header copy says what was done to it: see :mod:`.cosmic_rays` and :mod:`.interpolate`)."""

from __future__ import annotations

from astropy.io import fits

from .cosmic_rays import cosmic_ray_cards
from .interpolate import interpolation_cards

__all__ = ["cosmetic_cards"]


def cosmetic_cards(header: fits.Header, frames: list) -> None:
    """Add the cosmic-ray and bad-pixel-interpolation cards of ``frames`` to ``header``."""
    cosmic_ray_cards(header, frames)
    interpolation_cards(header, frames)
