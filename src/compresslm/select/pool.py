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
from compresslm.data.readers import DEFAULT_MAX_BYTES, read_records
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


@dataclass
class ReadOptions:
    """How to turn input records into texts (the data layer's options, shared by source and target)."""

    text_field: str = "text"
    template: str | None = None
    on_error: str = "fail"
    max_bytes: int = DEFAULT_MAX_BYTES
    min_bytes: int = 1
    domain_field: str | None = None


class SourcePool:
    """Re-iterable pool over ``paths``; see the module docstring.

    ``size_of`` measures a text in budget units (tokens/words/bytes) and ``min_size`` rejects
    documents below it (``--min-tokens``), counted like every other rejection.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        options: ReadOptions,
        *,
        batch_size: int = 256,
        size_of: Callable[[str], int] | None = None,
        min_size: int = 0,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.options = options
        self.batch_size = batch_size
        self.size_of = size_of
        self.min_size = min_size
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

    def accepted(self) -> Iterator[Record]:
        """Accepted records in input order, applying the ``min_size`` filter."""
        acct = self.accounting
        for item in self.records():
            if isinstance(item, Rejection):
                if acct is not None:
                    acct.add_rejection(item)
                continue
            if self.min_size and self.size_of is not None and self.size_of(item.text) < self.min_size:
                if acct is not None:
                    acct.add_rejection(
                        Rejection(
                            item.id, item.source, item.index, f"{TOO_SMALL}: under {self.min_size} tokens"
                        )
                    )
                continue
            yield item

    def __call__(self) -> Iterator[Batch]:
        self.passes += 1
        tracking = self.accounting is not None
        batch: Batch = []
        n = 0
        for rec in self.accepted():
            n += 1
            if tracking:
                assert self.accounting is not None
                self.accounting.add_accepted(rec)
                nbytes = len(rec.data)
                size = self.size_of(rec.text) if self.size_of is not None else nbytes
                self.pending[rec.index] = DocMeta(rec.id, rec.source, nbytes, size, rec.domain)
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
