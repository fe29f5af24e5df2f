"""A re-iterable view of the accepted documents of a source pool, with the per-pass bookkeeping.

Selection methods see the pool as ``pool() -> Iterator[list[(index, text)]]`` (see
:mod:`compresslm.select.base`). This class produces that view from the data layer and, on the one
pass the pipeline marks as the *scoring* pass, also does the accounting (every rejection with its
reason) and keeps the metadata of documents whose scores have not come back yet, so the pipeline can
write a scores file and fill budgets without holding the whole pool in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from compresslm.data.accounting import Accounting
from compresslm.data.readers import ReadOptions, read_records
from compresslm.data.records import TOO_SMALL, Record, Rejection
from compresslm.select.base import Batch


@dataclass(frozen=True, slots=True)
class DocMeta:
    """What the pipeline needs to know about a document once its score arrives."""

    id: str
    source: str
    nbytes: int
    size: int  # in budget units (tokens, words or bytes); equals nbytes without a budget counter
    domain: str | None
    text: str | None = None  # kept only while sizes are deferred (see ``SourcePool.defer_sizes``)


class SourcePool:
    """Re-iterable pool over ``paths``; see the module docstring.

    ``size_of`` measures a text in budget units (tokens/words/bytes) and ``min_size`` rejects
    documents below it (``--min-tokens``), counted like every other rejection.

    ``defer_sizes``: the scoring pass does not count; each pending document keeps its text
    instead (``DocMeta.size`` is -1), so the pipeline can count only the documents whose score
    can still enter a budget (:func:`compresslm.select.pipeline.scored_batches`). Why: counting
    tokens costs more than LZ4 scoring, and most documents of a large pool rank below what a
    budget keeps. Memory stays bounded: only documents whose scores are in flight are pending.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        options: ReadOptions,
        *,
        batch_size: int = 256,
        size_of: Callable[[str], int] | None = None,
        min_size: int = 0,
        defer_sizes: bool = False,
    ) -> None:
        if defer_sizes and (size_of is None or min_size):
            raise ValueError("defer_sizes needs a size_of and no min_size (the filter needs every size)")
        self.paths = [str(p) for p in paths]
        self.options = options
        self.batch_size = batch_size
        self.size_of = size_of
        self.min_size = min_size
        self.defer_sizes = defer_sizes
        self.accounting: Accounting | None = None
        self.pending: dict[int, DocMeta] = {}
        self.passes = 0
        self.known_size: int | None = None  # accepted documents, once a pass has run to the end

    def records(self) -> Iterator[Record | Rejection]:
        o = self.options
        return read_records(
            self.paths,
            text_field=o.text_field,
            template=o.template,
            on_error=o.on_error,  # type: ignore[arg-type]
            max_bytes=o.max_bytes,
            min_bytes=o.min_bytes,
            domain_field=o.domain_field,
        )

    def sizes(self, texts: Sequence[str]) -> list[int]:
        """Sizes of a batch of texts: one ``count_many`` call (a tokenizer encodes the batch in its
        own threads, without per-document Python overhead), or ``size_of`` per text."""
        assert self.size_of is not None
        count_many = getattr(self.size_of, "count_many", None)
        if count_many is not None:
            return [int(n) for n in count_many(texts)]
        return [self.size_of(t) for t in texts]

    def _sized(self, need_sizes: bool) -> Iterator[tuple[Record, int | None]]:
        """Accepted records in input order with their size (``None`` when not needed), applying the
        ``min_size`` filter. Sizes are counted a batch of ``batch_size`` records at a time; the
        rejections are accounted in input order all the same."""
        acct = self.accounting
        need_sizes = self.size_of is not None and (need_sizes or bool(self.min_size))
        pending: list[Record | Rejection] = []

        def flush() -> Iterator[tuple[Record, int | None]]:
            recs = [item for item in pending if isinstance(item, Record)]
            sizes = iter(self.sizes([r.text for r in recs]) if need_sizes and recs else [])
            for item in pending:
                if isinstance(item, Rejection):
                    if acct is not None:
                        acct.add_rejection(item)
                    continue
                size = next(sizes) if need_sizes else None
                if self.min_size and size is not None and size < self.min_size:
                    if acct is not None:
                        acct.add_rejection(
                            Rejection(
                                item.id, item.source, item.index, f"{TOO_SMALL}: under {self.min_size} tokens"
                            )
                        )
                    continue
                yield item, size
            pending.clear()

        n_records = 0
        for item in self.records():
            pending.append(item)
            if isinstance(item, Record):
                n_records += 1
                if n_records % self.batch_size == 0:
                    yield from flush()
        yield from flush()

    def accepted(self) -> Iterator[Record]:
        """Accepted records in input order, applying the ``min_size`` filter."""
        for rec, _ in self._sized(need_sizes=False):
            yield rec

    def __call__(self) -> Iterator[Batch]:
        self.passes += 1
        tracking = self.accounting is not None
        batch: Batch = []
        n = 0
        for rec, size in self._sized(need_sizes=tracking and not self.defer_sizes):
            n += 1
            if tracking:
                assert self.accounting is not None
                self.accounting.add_accepted(rec)
                nbytes = len(rec.data)
                if self.defer_sizes:
                    meta = DocMeta(rec.id, rec.source, nbytes, -1, rec.domain, rec.text)
                else:
                    meta = DocMeta(rec.id, rec.source, nbytes, nbytes if size is None else size, rec.domain)
                self.pending[rec.index] = meta
            batch.append((rec.index, rec.text))
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
        self.known_size = n  # the progress of later passes can show a total and an ETA

    def begin_scoring_pass(self, accounting: Accounting) -> None:
        """The next iteration is the scoring pass: account for every record and keep metadata."""
        self.accounting = accounting
        self.pending.clear()

    def take_meta(self, index: int) -> DocMeta:
        return self.pending.pop(index)
