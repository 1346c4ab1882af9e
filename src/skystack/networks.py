"""Sorting networks: the one source of truth for the CPU and GPU selection kernels.

A sorting network is a fixed list of compare-exchange steps ``(i, j)`` with ``i < j``: after the
step, ``v[i] <= v[j]``. Because the list does not depend on the data, the same step can be applied
to many pixels at once (SIMD lanes on a CPU, threads on a GPU) without branches, which is what
makes a per-pixel median or sigma clip run at memory speed instead of at quickselect speed.

Networks here are Batcher's odd-even merge sort, generated for any length ``n``. Missing values are
sorted as ``+inf`` so that the valid values of a pixel end up first, in ascending order.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np

__all__ = ["oddeven_merge_pairs", "network_array"]


@cache
def oddeven_merge_pairs(n: int) -> tuple[tuple[int, int], ...]:
    """Return Batcher's odd-even merge sorting network for ``n`` inputs.

    Parameters
    ----------
    n
        Number of values to sort (``n >= 0``).

    Returns
    -------
    tuple of (i, j)
        Compare-exchange steps in the order they must be applied; ``i < j`` always.
        ``n * log2(n)**2 / 4`` steps, about: 0 for n=1, 3 for n=3, 19 for n=8, 63 for n=16.
    """
    if n < 0:
        raise ValueError(f"network length must be >= 0, got {n}")
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


@lru_cache(maxsize=64)
def network_array(n: int) -> np.ndarray:
    """The network of :func:`oddeven_merge_pairs` as a read-only ``(steps, 2)`` int32 array."""
    arr = np.array(oddeven_merge_pairs(n), dtype=np.int32).reshape(-1, 2)
    arr.setflags(write=False)
    return arr
