"""Cosmetic corrections of single frames before they are combined (cosmic rays)."""
