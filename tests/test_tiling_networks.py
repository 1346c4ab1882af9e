"""Pure pieces: sorting networks (0-1 principle, random data) and tile planning under a budget."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from skystack.networks import network_array, oddeven_merge_pairs
from skystack.tiling import bytes_per_pixel, plan_tiles


@pytest.mark.parametrize("n", range(0, 14))
def test_network_sorts_every_zero_one_input(n):
    pairs = oddeven_merge_pairs(n)
    assert all(i < j < n for i, j in pairs)
    for bits in itertools.product((0, 1), repeat=n):
        v = list(bits)
        for i, j in pairs:
            if v[i] > v[j]:
                v[i], v[j] = v[j], v[i]
        assert v == sorted(v)


@pytest.mark.parametrize("n", [17, 25, 33, 100, 257])
def test_network_sorts_random_values(n):
    rng = np.random.default_rng(n)
    v = rng.normal(size=(n, 200))
    for i, j in network_array(n):
        lo = np.minimum(v[i], v[j])
        v[j] = np.maximum(v[i], v[j])
        v[i] = lo
    assert np.array_equal(v, np.sort(v, axis=0))


def _covers(tiles, shape):
    seen = np.zeros(shape, int)
    for t in tiles:
        seen[t.r0:t.r1, t.c0:t.c1] += 1
    return (seen == 1).all()


@pytest.mark.parametrize("n_frames", [1, 25, 1000, 100_000])
@pytest.mark.parametrize("mem", [16 * 2**20, 512 * 2**20])
def test_tiles_cover_once_within_budget(n_frames, mem):
    shape = (301, 4096)
    tiles = plan_tiles(shape, n_frames, mem)
    assert _covers(tiles, shape)
    largest = max(t.shape[0] * t.shape[1] for t in tiles)
    assert largest * bytes_per_pixel(n_frames) <= max(mem, bytes_per_pixel(n_frames))


def test_tiles_are_row_bands_when_rows_fit():
    tiles = plan_tiles((1000, 2000), 25, 512 * 2**20)
    assert all(t.c0 == 0 and t.c1 == 2000 for t in tiles)
    assert len(tiles) >= 8  # enough bands for reading to overlap combining
