"""Errors that skystack reports to users as one line, without a traceback."""

from __future__ import annotations


class SkystackError(Exception):
    """A problem with the user's input or options; the message names the file and the problem.

    The command line prints it as ``skystack: error: <message>`` and exits with code 2.
    """


class BackendUnavailable(SkystackError):
    """The requested compute backend cannot run here (message says why)."""
