"""``skystack bench``: measure combine methods for noise, artefact rejection, flux bias and speed.

Modules, one concern each:

* :mod:`.methods` -- the combine methods compared (``mean+sigclip:spread=mad`` specs, defaults);
* :mod:`.truth` -- synthetic stacks with a known noiseless truth;
* :mod:`.quality` -- quality metrics against the truth, or by leave-one-out on real frames;
* :mod:`.peers` -- the same methods done by numpy, bottleneck, astropy, ccdproc and SWarp;
* :mod:`.speed` -- timing and peak memory of every contestant in a separate worker process;
* :mod:`.dithered` -- dithered frames with WCS and frames of unequal noise, with their truth;
* :mod:`.resampling` -- ``stack --interp`` methods and drizzle against reproject and drizzle;
* :mod:`.weighting` -- ``--weights`` / ``--scale`` / ``--zero`` against the optimal stack;
* :mod:`.report` -- Markdown, CSV, JSON and PNG outputs (:mod:`.report_sections`: the tables
  of the resampling and weights sections);
* :mod:`.run` -- the orchestration behind the command line.
"""

from __future__ import annotations

from .methods import DEFAULT_METHODS, MethodSpec, parse_method

__all__ = ["DEFAULT_METHODS", "MethodSpec", "parse_method"]
