"""Turning streamed scores into a selection: top-k, or the best documents within a size budget.

Rank order everywhere: score descending, then document index ascending (the earlier document wins
a tie), and NaN scores last (a NaN means "no score": such documents are selected only once every
scored document is). Both selectors consume ``(indices, scores)`` batches in any order and keep
memory bounded by what can still be selected -- k entries, or about budget / smallest document.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from compresslm.errors import ConfigError


def _keys(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nan flag, score with NaN as 0): ranks by (not nan, score) descending."""
    scores = np.asarray(scores, dtype=np.float64)
    nan = np.isnan(scores)
    return nan, np.where(nan, 0.0, scores)


def rank_order(indices: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Positions of ``(indices, scores)`` sorted by rank (score desc, index asc, NaN last)."""
    nan, s = _keys(scores)
    # lexsort: last key is primary -> NaN flag, then -score, then index.
    return np.lexsort((np.asarray(indices), -s, nan))


def select_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices (positions in ``scores``) of the ``k`` best, in rank order; all if ``k`` > len."""
    if k <= 0:
        raise ConfigError(f"k must be a positive number of documents, got {k}")
    scores = np.asarray(scores, dtype=np.float64)
    return rank_order(np.arange(len(scores)), scores)[:k]


def _heap_key(index: int, score: float) -> tuple[bool, float, int]:
    """Min-heap key whose minimum is the WORST document: (is scored, score, -index)."""
    if score != score:  # NaN
        return (False, 0.0, -index)
    return (True, score, -index)


class TopK:
    """The ``k`` best documents of a stream of scored batches (memory: k entries).

    ``push_batch`` filters each batch against the current k-th best with numpy first, so the Python
    heap only sees documents that can still enter the selection.
    """

    def __init__(self, k: int) -> None:
        if k <= 0:
            raise ConfigError(f"k must be a positive number of documents, got {k}")
        self.k = k
        self._heap: list[tuple[bool, float, int]] = []
        self.seen = 0

    def push_batch(self, indices: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        sc = np.asarray(scores, dtype=np.float64)
        if idx.shape != sc.shape:
            raise ValueError(f"indices and scores differ in length ({idx.shape} vs {sc.shape})")
        self.seen += len(idx)
        heap = self._heap
        if len(heap) >= self.k and len(idx):
            worst_scored, worst_score, worst_neg_index = heap[0]
            nan, s = _keys(sc)
            if worst_scored:
                better = ~nan & ((s > worst_score) | ((s == worst_score) & (-idx > worst_neg_index)))
            else:  # the worst kept is a NaN: any scored document, or a NaN with a lower index, is better
                better = ~nan | (-idx > worst_neg_index)
            idx, sc = idx[better], sc[better]
        for i, s in zip(idx.tolist(), sc.tolist(), strict=True):
            key = _heap_key(i, s)
            if len(heap) < self.k:
                heapq.heappush(heap, key)
            elif key > heap[0]:
                heapq.heapreplace(heap, key)

    def __len__(self) -> int:
        return len(self._heap)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, scores)`` of the selection, best first (fewer than k if fewer were pushed)."""
        items = sorted(self._heap, reverse=True)
        indices = np.fromiter((-neg for _, _, neg in items), np.int64, len(items))
        scores = np.fromiter((s if scored else np.nan for scored, s, _ in items), np.float64, len(items))
        return indices, scores


class BudgetSelector:
    """The best documents whose sizes (tokens, words or bytes) fit in ``budget``.

    Semantics: walk the documents in rank order and add whole documents while the running total
    stays <= ``budget``; the first document that would overflow ends the selection. With
    ``truncate_last=True`` that document is included too, cut to the budget's remainder (the ZIP-FIT
    paper's scripts; the pipeline truncates its text) -- unless the remainder is 0. Sizes must be
    >= 0; since running totals only grow, "fits" never becomes true again after an overflow.

    Streaming: the kept set is a heap with the worst document on top. The worst is dropped as soon
    as the better documents already kept decide that it cannot be selected (their total plus its
    size overflows; with truncation, they fill the budget by themselves). Every later arrival
    ranked below a dropped document is discarded too, which keeps the invariant that each dropped
    document ranks below every kept one -- so at the end the totals over the kept set are the true
    totals. Memory: the kept sizes sum to at most ``budget`` plus one document.
    """

    def __init__(self, budget: int, *, truncate_last: bool = False) -> None:
        if budget <= 0:
            raise ConfigError(f"the budget must be positive, got {budget}")
        self.budget = int(budget)
        self.truncate_last = truncate_last
        self._heap: list[tuple[bool, float, int, int]] = []  # (scored, score, -index, size); min = worst
        self._total = 0
        self._cutoff: tuple[bool, float, int] | None = None  # best key among dropped documents
        self.seen = 0

    def push_batch(
        self,
        indices: Sequence[int] | np.ndarray,
        scores: Sequence[float] | np.ndarray,
        sizes: Sequence[int] | np.ndarray,
    ) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        sc = np.asarray(scores, dtype=np.float64)
        sz = np.asarray(sizes, dtype=np.int64)
        if not idx.shape == sc.shape == sz.shape:
            raise ValueError(
                f"indices, scores and sizes differ in length ({idx.shape}, {sc.shape}, {sz.shape})"
            )
        if len(sz) and sz.min() < 0:
            raise ValueError("document sizes must be >= 0")
        self.seen += len(idx)
        heap = self._heap
        for i, s, n in zip(idx.tolist(), sc.tolist(), sz.tolist(), strict=True):
            key = _heap_key(i, s)
            if self._cutoff is not None and key < self._cutoff:
                continue  # ranks below a dropped document: cannot be selected
            heapq.heappush(heap, (*key, n))
            self._total += n
            self._shrink()

    def _shrink(self) -> None:
        heap = self._heap
        while heap:
            worst_size = heap[0][3]
            total = self._total  # = size of the worst + sizes of everything ranked above it
            if self.truncate_last:
                dead = total > self.budget and total - worst_size >= self.budget
            else:
                dead = total > self.budget
            if not dead:
                return
            scored, score, neg, size = heapq.heappop(heap)
            self._total -= size
            key = (scored, score, neg)
            if self._cutoff is None or key > self._cutoff:
                self._cutoff = key

    def sizes_of(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The sizes pushed with kept documents ``indices`` (e.g. the result's), for a later merge."""
        by_index = {-neg: size for _, _, neg, size in self._heap}
        return np.fromiter((by_index[int(i)] for i in indices), np.int64, len(indices))

    def result(self) -> tuple[np.ndarray, np.ndarray, int | None]:
        """``(indices, scores, truncated_size)`` in rank order.

        ``truncated_size`` is the budget units the last document keeps when it was cut
        (``truncate_last``), else ``None``.
        """
        items = sorted(self._heap, reverse=True)
        kept: list[tuple[bool, float, int, int]] = []
        total = 0
        truncated: int | None = None
        for item in items:
            size = item[3]
            if total + size <= self.budget:
                kept.append(item)
                total += size
                continue
            if self.truncate_last and total < self.budget:
                kept.append(item)
                truncated = self.budget - total
            break
        indices = np.fromiter((-neg for _, _, neg, _ in kept), np.int64, len(kept))
        scores = np.fromiter((s if scored else np.nan for scored, s, _, _ in kept), np.float64, len(kept))
        return indices, scores, truncated
