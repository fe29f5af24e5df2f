"""Turning streamed scores into a selection: top-k, or the best documents within a size budget.

Rank order everywhere: score descending, then document index ascending (the earlier document wins
a tie), and NaN scores last (a NaN means "no score": such documents are selected only once every
scored document is). Both selectors consume ``(indices, scores)`` batches in any order and keep
memory bounded by what can still be selected -- k entries, or about budget / smallest document.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

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


def fit_budget(sizes: Sequence[int], budget: int, *, truncate_last: bool = False) -> tuple[int, int | None]:
    """The budget rule, defined once for every budget filler. Walk ``sizes`` in rank order and take
    whole documents while the running total stays <= ``budget``; the first document that would
    overflow ends the walk. With ``truncate_last`` that document is taken too, cut to the remainder,
    unless the remainder is 0. Returns ``(whole documents, units the cut one keeps or None)``.

    >>> fit_budget([4, 6, 2], 10), fit_budget([4, 6, 2], 7, truncate_last=True), fit_budget([4, 6], 4, truncate_last=True)
    ((2, None), (1, 3), (1, None))
    """
    total = 0
    for n, size in enumerate(sizes):
        if total + size > budget:
            return n, (budget - total if truncate_last and total < budget else None)
        total += size
    return len(sizes), None


def cut_to_budget(
    texts: Sequence[str], budget: int, counter: Any, sizes: Sequence[int] | None = None
) -> list[str]:
    """Ranked ``texts`` filled into ``budget`` units of ``counter`` (:func:`fit_budget` with
    truncation), the overflowing one cut by ``counter.truncate``. Token counts do not grow
    monotonically with the prefix length (a cut can undo a merge), so only the counter knows where to
    cut; ``truncate`` never returns more than the units asked for. A cut that keeps nothing is left
    out. ``sizes`` saves counting again when the caller has them."""
    if sizes is None:
        sizes = [int(n) for n in counter.count_many(list(texts))] if texts else []
    n, keep = fit_budget(sizes, budget, truncate_last=True)
    out = list(texts[:n])
    if keep is not None:
        cut = counter.truncate(texts[n], keep)
        if cut:
            out.append(cut)
    return out


class BudgetSelector:
    """The best documents whose sizes (tokens, words or bytes) fit in ``budget``.

    Semantics: :func:`fit_budget` over the documents in rank order. With ``truncate_last=True`` the
    first document that overflows is included, cut to the budget's remainder (the ZIP-FIT paper's
    scripts; the pipeline truncates its text with the counter). Sizes must be >= 0; since running
    totals only grow, "fits" never becomes true again after an overflow.

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

    def may_keep(
        self, indices: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
    ) -> np.ndarray:
        """Mask of the documents that :meth:`push_batch` would not discard unseen now: those ranked
        at or above every dropped document. The cutoff only rises, so a document outside the mask
        can never be selected and its size need not be known (a size of 0 may be pushed for it)."""
        if self._cutoff is None:
            return np.ones(len(indices), dtype=bool)
        cutoff = self._cutoff
        return np.fromiter(
            (_heap_key(int(i), float(s)) >= cutoff for i, s in zip(indices, scores, strict=True)),
            bool,
            len(indices),
        )

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
        n, truncated = fit_budget([item[3] for item in items], self.budget, truncate_last=self.truncate_last)
        kept = items[: n + (truncated is not None)]
        indices = np.fromiter((-neg for _, _, neg, _ in kept), np.int64, len(kept))
        scores = np.fromiter((s if scored else np.nan for scored, s, _, _ in kept), np.float64, len(kept))
        return indices, scores, truncated
