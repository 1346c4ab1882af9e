"""Tile planning, kept under its old name: see :mod:`skystack.core.tiles`."""

from __future__ import annotations

from .core.tiles import INPUT_BUFFERS, OUTPUT_BYTES_PER_PIXEL, Tile, bytes_per_pixel, plan_tiles

__all__ = ["Tile", "OUTPUT_BYTES_PER_PIXEL", "INPUT_BUFFERS", "bytes_per_pixel", "plan_tiles"]
