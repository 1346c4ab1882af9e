"""Shared fixtures: the backends to test (GPU ones skip cleanly without a GPU)."""

from __future__ import annotations

import pytest

from skystack.backends.gpu import probe


def _gpu_param():
    usable, reason = probe()
    return pytest.param("gpu", marks=[pytest.mark.gpu,
                                      pytest.mark.skipif(not usable, reason=reason)])


@pytest.fixture(params=["cpu", _gpu_param()])
def backend(request) -> str:
    """Name of each backend usable here, for ``skystack.combine(..., backend=backend)``."""
    return request.param
