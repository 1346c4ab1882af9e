"""skystack: calibrate, align and stack astronomical FITS images at the speed of the hardware."""

from ._version import __version__
from .api import combine, combine_options, combine_to_file
from .api_reproject import reproject, stack
from .errors import SkystackError

__all__ = ["__version__", "combine", "combine_options", "combine_to_file", "reproject", "stack",
           "SkystackError"]
