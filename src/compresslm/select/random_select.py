"""Random selection: the seeded baseline every other method must beat.

Each document's score is a uniform draw from ``numpy.random.default_rng(seed)``, drawn one per
document in pool order. The draws do not depend on how the pool is batched, so the top-k of the
scores is a seeded uniform sample of k documents without replacement, the same for every batch size
and on every pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from compresslm.select.base import PoolFactory, SelectionMethod


class RandomSelection(SelectionMethod):
    """Scores every document with an independent seeded Uniform[0, 1) draw."""

    name = "random"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def score_batches(self, pool: PoolFactory) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(self.seed)  # fresh per pass: every pass yields the same scores
        for batch in pool():
            indices = np.fromiter((i for i, _ in batch), dtype=np.int64, count=len(batch))
            yield indices, rng.random(len(batch))

    def describe(self) -> dict[str, object]:
        return {"method": self.name, "seed": self.seed, "distribution": "uniform[0, 1), numpy PCG64"}
