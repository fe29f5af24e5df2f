"""The interface every selection method implements (ZIP-FIT, DSIR, D4, random).

A method turns a pool of accepted documents into one score per document, higher is better. The
shared machinery in :mod:`compresslm.select.topk` turns scores into a selection (top-k, token or
byte budget, deterministic ties by document order) and the pipeline does the accounting and I/O,
so every method gets the same options and outputs.

The pool is *re-iterable*: ``pool()`` returns a fresh iterator of batches, each a list of
``(index, text)`` with indices increasing. Methods that need a pass over the pool before scoring
(DSIR fits the raw n-gram distribution, D4 embeds and clusters, ``--contrast background`` samples
the pool) call ``pool()`` more than once; ZIP-FIT scores in one streaming pass. Scores are yielded
per batch, aligned with the pool's order, so memory stays bounded by the batch, not the pool.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence

import numpy as np

Batch = list[tuple[int, str]]
PoolFactory = Callable[[], Iterator[Batch]]


class SelectionMethod(ABC):
    """Scores documents by how useful they are for a target; higher is better."""

    #: short name used on the command line and in reports (e.g. "zipfit", "dsir")
    name: str = ""

    def prepare(self, targets: Sequence[str], pool: PoolFactory) -> None:  # noqa: B027 - optional hook
        """Fit whatever the method needs before scoring (may iterate ``pool()``)."""

    @abstractmethod
    def score_batches(self, pool: PoolFactory) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices, scores)`` arrays (int64, float64) per batch, in pool order."""

    def describe(self) -> dict[str, object]:
        """Parameters that determine the scores, recorded in reports and score files."""
        return {"method": self.name}
