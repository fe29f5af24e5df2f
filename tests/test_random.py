"""Random selection: seeded, batch-size independent, uniform."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.select.base import Batch, PoolFactory
from compresslm.select.random_select import RandomSelection


def make_pool(n: int, batch_size: int) -> PoolFactory:
    def pool() -> Iterator[Batch]:
        for b in range(0, n, batch_size):
            yield [(10 + 2 * i, f"doc {i}") for i in range(b, min(b + batch_size, n))]

    return pool


def scores_of(method: RandomSelection, pool: PoolFactory) -> tuple[np.ndarray, np.ndarray]:
    parts = list(method.score_batches(pool))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 64), st.integers(1, 64), st.integers(0, 2**32))
def test_top_k_is_independent_of_batch_size(n: int, b1: int, b2: int, seed: int) -> None:
    idx1, s1 = scores_of(RandomSelection(seed=seed), make_pool(n, b1))
    idx2, s2 = scores_of(RandomSelection(seed=seed), make_pool(n, b2))
    np.testing.assert_array_equal(idx1, 10 + 2 * np.arange(n))  # pool order, pool indices
    np.testing.assert_array_equal(idx1, idx2)
    np.testing.assert_array_equal(s1, s2)


def test_seeds_differ_and_passes_repeat() -> None:
    method = RandomSelection(seed=1)
    pool = make_pool(500, 64)
    first, again = scores_of(method, pool)[1], scores_of(method, pool)[1]
    np.testing.assert_array_equal(first, again)
    top = set(np.argsort(-first)[:50])
    assert top != set(np.argsort(-scores_of(RandomSelection(seed=2), pool)[1])[:50])
    assert method.describe()["seed"] == 1


def test_selection_is_uniform() -> None:
    """Each of 20 documents is picked by a top-5 about equally often over many seeds."""
    hits = np.zeros(20)
    for seed in range(2000):
        scores = scores_of(RandomSelection(seed=seed), make_pool(20, 7))[1]
        hits[np.argsort(-scores)[:5]] += 1
    expected = 2000 * 5 / 20
    chi2 = ((hits - expected) ** 2 / expected).sum()
    assert chi2 < 43.8  # 99.9th percentile of chi-square with 19 degrees of freedom
