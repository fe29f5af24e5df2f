"""Selection end to end: read, score, select, account, write. Every method goes through here.

Passes over the source files (each streaming, memory bounded by k / the budget and the batch):

1. whatever the method's ``prepare`` needs (DSIR's raw n-gram counts, a background sample, D4's
   embeddings); ZIP-FIT without contrast needs none;
2. the scoring pass: every record is accounted for (accepted, or rejected with a reason), scores
   stream into a bounded top-k heap or budget selector and, on request, into a Parquet scores file;
3. the writing pass: the selected records are picked out of the inputs again and written unchanged
   plus ``score`` and ``record_id``, best first.

Outputs are checked before any work starts (no overwrite without ``force``, a known format, a folder
that can be written) and are written to hidden temporaries that are renamed into place together at
the very end (:class:`~compresslm.data.writers.OutputGroup`), so an interrupted or failing run leaves
no output at all, never some complete files and not others.

The staged engines (:mod:`compresslm.select.stages`) run the same methods shard by shard, locally or
on Ray, resumably.
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Container, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compresslm.data.accounting import Accounting
from compresslm.data.records import Record
from compresslm.data.writers import (
    OutputGroup,
    atomic_output,
    check_not_input,
    check_outputs_free,
    check_record_output,
    check_writable_parent,
    write_records,
)
from compresslm.errors import ConfigError, DataError
from compresslm.select.base import SelectionMethod
from compresslm.select.pool import DocMeta, ReadOptions, SourcePool
from compresslm.select.tokens import ByteCounter, get_token_counter
from compresslm.select.topk import BudgetSelector, TopK

SCORES_SCHEMA_FIELDS = ("record_id", "source", "score", "bytes", "size", "domain", "selected", "rank")
"""Columns of ``--scores``: ``record_id`` as in the selected records and the rejects, and whether and
at which rank (0 = best) the document was selected (``rank`` null when not selected)."""


@dataclass
class SelectionSpec:
    """How many documents to keep: exactly one of ``k``, ``budget_tokens``, ``budget_bytes``."""

    k: int | None = None
    budget_tokens: int | None = None
    budget_bytes: int | None = None
    tokenizer: str | None = None
    truncate_last: bool = False
    min_tokens: int = 0

    def validate(self) -> None:
        given = [x for x in (self.k, self.budget_tokens, self.budget_bytes) if x is not None]
        if len(given) != 1:
            raise ConfigError("give exactly one of --k, --budget-tokens, --budget-bytes")
        if given[0] <= 0:
            raise ConfigError("--k / --budget-* must be a positive number")
        if self.truncate_last and self.k is not None:
            raise ConfigError("--truncate-last applies to --budget-tokens / --budget-bytes only")

    @property
    def unit(self) -> str:
        """What ``size`` counts: the budget's unit; bytes when only ``k`` is given (nothing is counted
        in tokens then), tokens (with ``tokenizer``) or whitespace words for token budgets."""
        if self.budget_bytes is not None or (self.budget_tokens is None and not self.min_tokens):
            return "bytes"
        return "tokens" if self.tokenizer else "words"


@dataclass
class Outputs:
    """Where results go; ``None`` means not requested."""

    selected: str | None = None
    scores: str | None = None
    rejects: str | None = None
    report: str | None = None
    force: bool = False

    def check(self) -> None:
        """Everything about the outputs that can be checked before any work starts."""
        check_outputs_free(self.paths(), self.force)
        for path in (self.selected, self.rejects):
            if path:
                check_record_output(path)
        for path in (self.scores, self.report):
            if path:
                check_writable_parent(path)

    def paths(self) -> list[str]:
        paths = [p for p in (self.selected, self.scores, self.rejects, self.report) if p]
        if self.report:
            from compresslm.select.report import histogram_path

            paths.append(str(histogram_path(self.report)))
        return paths


@dataclass
class Selected:
    """One selected document, in rank order."""

    rank: int
    index: int
    id: str
    source: str
    score: float
    size: int
    domain: str | None
    text: str = ""
    truncated_to: int | None = None  # budget units kept, when the last document was truncated


@dataclass
class SelectionResult:
    #: The method's own description (:meth:`SelectionMethod.describe`): its name, settings and counts.
    method_info: dict[str, Any]
    selected: list[Selected]
    accounting: dict[str, Any]
    seconds: dict[str, float]
    spec: dict[str, Any]
    n_targets: int = 0
    domains: dict[str, dict[str, int]] = field(default_factory=dict)  # domain -> {pool, selected}
    score_samples: dict[str, list[float]] = field(default_factory=dict)  # per domain/source (reservoir)
    engine: dict[str, Any] = field(default_factory=dict)  # staged runs: engine, workers, peak memory

    def precision_at(self, k: int, domain: str) -> float | None:
        """Share of ``domain`` in the top ``k`` selected documents (None without labels)."""
        top = self.selected[:k]
        if not top or all(s.domain is None for s in top):
            return None
        return sum(s.domain == domain for s in top) / len(top)

    def size_selected(self) -> dict[str, Any]:
        """The selection's total size in the spec's unit, and the share of the budget it uses."""
        total = sum(s.size for s in self.selected)
        budget = self.spec.get("budget_tokens") or self.spec.get("budget_bytes")
        return {
            "total": total,
            "unit": self.spec.get("unit"),
            "budget": budget,
            "budget_used": total / budget if budget else None,
        }

    def precision(self) -> dict[str, float]:
        """Precision at k (k = the number selected) of every labelled domain: its share of the
        selection (documents without a domain count in k but in no domain)."""
        k = len(self.selected)
        if not k:
            return {}
        return {d: c["selected"] / k for d, c in self.domains.items() if d != NO_DOMAIN}

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method_info,
            "targets": self.n_targets,
            "spec": self.spec,
            "accounting": self.accounting,
            "seconds": self.seconds,
            "size_selected": self.size_selected(),
            "domains": self.domains,
            "precision_at_k": {"k": len(self.selected), "by_domain": self.precision()},
            **({"engine": self.engine} if self.engine else {}),
            "selected": [
                {
                    "rank": s.rank,
                    "record_id": s.id,
                    "source": s.source,
                    "score": s.score,
                    "size": s.size,
                    "domain": s.domain,
                    "truncated_to": s.truncated_to,
                }
                for s in self.selected
            ],
        }


#: Groups (domains, else source files) with a score sample of their own; the rest share
#: :data:`OTHER_GROUP`. A pool of thousands of files would otherwise keep thousands of samples
#: (memory growing with the number of files times the sample size) for an unreadable histogram.
SAMPLE_GROUPS = 20
OTHER_GROUP = "(other groups)"


def sample_group(label: str, groups: Container[str], n_groups: int) -> str:
    """``label``, or :data:`OTHER_GROUP` once ``n_groups`` other groups have samples."""
    return label if label in groups or n_groups < SAMPLE_GROUPS else OTHER_GROUP


class _Reservoir:
    """Bounded uniform sample of scores per group, for histograms that do not grow with N."""

    def __init__(self, cap: int = 5000, seed: int = 0) -> None:
        self.cap = cap
        self.rng = random.Random(seed)
        self.seen: dict[str, int] = {}
        self.samples: dict[str, list[float]] = {}

    def add(self, group: str, value: float) -> None:
        group = sample_group(group, self.samples, len(self.samples))
        n = self.seen.get(group, 0) + 1
        self.seen[group] = n
        sample = self.samples.setdefault(group, [])
        if len(sample) < self.cap:
            sample.append(value)
        else:
            j = self.rng.randrange(n)
            if j < self.cap:
                sample[j] = value


def load_targets(paths: Sequence[str], options: ReadOptions) -> list[str]:
    """Target texts; malformed target records are always an error (a target set must be clean)."""
    # Empty targets carry no signal: they are left out, and the warning says how many.
    strict = dataclasses.replace(options, on_error="fail", min_bytes=1)
    texts = [r.text for r in strict.accepted(paths, what="targets")]
    if not texts:
        raise DataError(f"no usable target documents in {', '.join(map(str, paths))}")
    return texts


def scores_schema() -> Any:
    """The Arrow schema of a scores file (one row per accepted document)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("record_id", pa.string()),
            ("source", pa.string()),
            ("score", pa.float64()),
            ("bytes", pa.int64()),
            ("size", pa.int64()),
            ("domain", pa.string()),
        ]
    )


def scores_table(metas: Sequence[DocMeta], scores: np.ndarray, sizes: np.ndarray) -> Any:
    """One batch of the scores file."""
    import pyarrow as pa

    return pa.table(
        {
            "record_id": [m.id for m in metas],
            "source": [m.source for m in metas],
            "score": np.asarray(scores, dtype=np.float64),
            "bytes": [m.nbytes for m in metas],
            "size": sizes,
            "domain": [m.domain for m in metas],
        },
        schema=scores_schema(),
    )


NO_DOMAIN = "(no domain)"
"""The ``domains`` key counting documents without a domain label (when others have one)."""


def domain_counts(
    pool: dict[str, int], accepted: int, selected: Sequence[Selected]
) -> dict[str, dict[str, int]]:
    """Per domain: documents in the pool and selected; unlabelled documents under :data:`NO_DOMAIN`
    so that the counts add up to the pool (only when some documents carry a label)."""
    out = {d: {"pool": n, "selected": sum(s.domain == d for s in selected)} for d, n in pool.items()}
    unlabelled = accepted - sum(pool.values())
    if out and unlabelled > 0:
        out[NO_DOMAIN] = {"pool": unlabelled, "selected": sum(s.domain is None for s in selected)}
    return out


def add_selection_columns(table: Any, rank_of: dict[str, int]) -> Any:
    """``table`` (a scores batch) with ``selected`` and ``rank`` columns from ``rank_of`` (id -> rank)."""
    import pyarrow as pa

    ranks = [rank_of.get(rid) for rid in table.column("record_id").to_pylist()]
    table = table.append_column("selected", pa.array([r is not None for r in ranks], pa.bool_()))
    return table.append_column("rank", pa.array(ranks, pa.int64()))


def finish_scores_file(path: str | Path, selected: Sequence[Selected]) -> None:
    """Rewrite the scores file at ``path`` (a temporary of the output group) with the selection
    columns, batch by batch: the selection is only known once every document was scored."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rank_of = {s.id: s.rank for s in selected}
    tmp = f"{path}.sel"
    with pq.ParquetFile(path) as src:
        writer = None
        for batch in src.iter_batches(batch_size=65_536):
            table = add_selection_columns(pa.Table.from_batches([batch]), rank_of)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer is None:
            writer = pq.ParquetWriter(
                tmp, add_selection_columns(scores_schema().empty_table(), rank_of).schema
            )
        writer.close()
    os.replace(tmp, path)


def make_selector(spec: SelectionSpec) -> TopK | BudgetSelector:
    """The streaming selector for ``spec``: top-k, or the best documents within the budget."""
    if spec.k is not None:
        return TopK(spec.k)
    budget = spec.budget_tokens if spec.budget_tokens is not None else spec.budget_bytes
    return BudgetSelector(int(budget or 0), truncate_last=spec.truncate_last)


def scored_batches(
    method: SelectionMethod, pool: SourcePool, selector: TopK | BudgetSelector
) -> Iterator[tuple[list[DocMeta], np.ndarray, np.ndarray]]:
    """Run ``method``'s scoring pass over ``pool``, push every score into ``selector``, and yield
    ``(metas, scores, sizes)`` per batch; checks at the end that every document got a score."""
    for indices, raw in method.score_batches(pool):
        metas = [pool.take_meta(int(i)) for i in indices]
        # A score of -inf means "never select" (e.g. DSIR's minimum-length mask): such a document
        # is scored and counted as not selected, even when k exceeds the eligible pool.
        scores = np.asarray(raw, dtype=np.float64)
        if pool.defer_sizes:
            sizes = _deferred_sizes(pool, selector, indices, scores, metas)
        else:
            sizes = np.fromiter((m.size for m in metas), dtype=np.int64, count=len(metas))
        ok = scores > -np.inf
        idx_ok = np.asarray(indices, dtype=np.int64)[ok]
        if isinstance(selector, TopK):
            selector.push_batch(idx_ok, scores[ok])
        else:
            selector.push_batch(idx_ok, scores[ok], sizes[ok])
        yield metas, scores, sizes
    if pool.pending:
        raise RuntimeError(f"method {method.name} returned no score for {len(pool.pending)} documents")


def _deferred_sizes(
    pool: SourcePool,
    selector: TopK | BudgetSelector,
    indices: np.ndarray,
    scores: np.ndarray,
    metas: list[DocMeta],
) -> np.ndarray:
    """Budget units of the documents that can still be selected, in one batched count; 0 for the
    others (the selector discards them unseen, so their size never matters). Exact: the selection
    is the one every size counted would give, at the cost of counting the candidates only."""
    sizes = np.zeros(len(metas), dtype=np.int64)
    want = scores > -np.inf
    if isinstance(selector, BudgetSelector):
        want &= selector.may_keep(indices, scores)
    rows = np.flatnonzero(want)
    if len(rows):
        sizes[rows] = pool.sizes([metas[r].text or "" for r in rows])
    return sizes


def _scores_writer(stack: ExitStack, path: str) -> Any:
    import pyarrow.parquet as pq

    fh = stack.enter_context(atomic_output(path, force=True, mode="wb"))
    writer = pq.ParquetWriter(fh, scores_schema())
    stack.callback(writer.close)  # closes before the atomic rename (ExitStack is LIFO)
    return writer


def run_selection(
    method: SelectionMethod,
    targets: Sequence[str],
    sources: Sequence[str | Path],
    spec: SelectionSpec,
    *,
    read_options: ReadOptions | None = None,
    outputs: Outputs | None = None,
    batch_size: int = 256,
    progress: bool = False,
    total_hint: int | None = None,
) -> SelectionResult:
    """Select from ``sources`` with ``method`` against ``targets`` (texts) and write ``outputs``."""
    spec.validate()
    read_options = read_options or ReadOptions()
    outputs = outputs or Outputs()
    outputs.check()
    check_not_input(outputs.paths(), sources)
    if not targets:
        raise ConfigError("the target set is empty")

    counter = None
    if spec.budget_tokens is not None or spec.min_tokens:
        counter = get_token_counter(spec.tokenizer)
    size_of = ByteCounter() if spec.budget_bytes is not None else counter

    # A budget counts lazily (only documents that can still enter it) unless every size is needed:
    # by --min-tokens before scoring, or by the scores file.
    defer = (
        spec.budget_tokens is not None and size_of is not None and not spec.min_tokens and not outputs.scores
    )
    pool = SourcePool(
        sources,
        read_options,
        batch_size=batch_size,
        size_of=size_of,
        min_size=spec.min_tokens,
        defer_sizes=defer,
    )
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if progress:  # preparing can read the whole pool (background samples, DSIR's n-gram counts)
        print(
            f"preparing {method.name}: {len(targets):,} targets, reading the pool",
            file=sys.stderr,
            flush=True,
        )
    method.prepare(list(targets), pool)
    seconds["prepare"] = time.perf_counter() - t0
    if progress:
        known = f", {pool.known_size:,} documents" if pool.known_size is not None else ""
        print(f"prepared in {seconds['prepare']:.1f} s{known}", file=sys.stderr, flush=True)

    acct = Accounting()
    pool.begin_scoring_pass(acct)
    selector = make_selector(spec)
    reservoir = _Reservoir()
    domain_pool: dict[str, int] = {}
    t1 = time.perf_counter()
    bar = _progress_bar(progress, total_hint if total_hint is not None else pool.known_size)
    group = OutputGroup(force=outputs.force)
    with group:  # every output is published together when the block ends without an error
        with ExitStack() as stack:
            writer = None
            if outputs.scores:
                scores_tmp = str(group.reserve(outputs.scores))
                writer = _scores_writer(stack, scores_tmp)
            for metas, scores, sizes in scored_batches(method, pool, selector):
                for m, s in zip(metas, scores.tolist(), strict=True):
                    label = m.domain if m.domain is not None else m.source
                    reservoir.add(label, s)
                    if m.domain is not None:
                        domain_pool[m.domain] = domain_pool.get(m.domain, 0) + 1
                if writer is not None:
                    writer.write_table(scores_table(metas, scores, sizes))
                if bar is not None:
                    bar.update(len(metas))
        if bar is not None:
            bar.close()
        seconds["score"] = time.perf_counter() - t1
        pool.accounting = None

        ranked = _ranked(selector)
        acct.set_selected(len(ranked))
        acct.check()

        # Writing pass: pick the selected records out of the inputs again (bounded by k).
        t2 = time.perf_counter()
        rank_of = {idx: r for r, (idx, _, _) in enumerate(ranked)}
        known = _known_sizes(selector, ranked) if size_of is not None else [None] * len(ranked)
        chosen: list[Selected | None] = [None] * len(ranked)
        rows: list[dict[str, Any] | None] = [None] * len(ranked)
        found = 0
        if ranked:
            for rec in pool.accepted():
                r = rank_of.get(rec.index)
                if r is None:
                    continue
                _, score, keep = ranked[r]
                chosen[r], rows[r] = _selected_row(rec, r, score, keep, read_options, size_of, known[r])
                found += 1
                if found == len(ranked):
                    break
        if None in chosen:
            raise DataError("the inputs changed while selecting (a selected record is gone on re-reading)")
        selected = [c for c in chosen if c is not None]
        acct.set_selected(len(selected), dict(Counter(s.source for s in selected)))
        acct.check()
        if outputs.scores:
            finish_scores_file(scores_tmp, selected)
        if outputs.selected:
            write_records(
                group.reserve(outputs.selected), (row for row in rows if row is not None), force=True
            )
        if outputs.rejects:
            acct.write_rejects(group.reserve(outputs.rejects), force=True)
        seconds["write"] = time.perf_counter() - t2
        seconds["total"] = time.perf_counter() - t0

        domains = domain_counts(domain_pool, acct.accepted, selected)
        result = SelectionResult(
            method_info=method.describe(),
            selected=selected,
            accounting=acct.summary(),
            seconds=seconds,
            spec={**spec.__dict__, "unit": spec.unit},
            n_targets=len(targets),
            domains=domains,
            score_samples=reservoir.samples,
        )
        if outputs.report:
            from compresslm.select.report import histogram_path, write_selection_report

            report = group.reserve(outputs.report)
            group.reserve(histogram_path(outputs.report))  # written by the report beside `report`
            write_selection_report(report, result, force=True)
    return result


def _ranked(selector: TopK | BudgetSelector) -> list[tuple[int, float, int | None]]:
    """(index, score, keep) in rank order; ``keep`` is the truncated size of a cut last document."""
    out = selector.result()
    indices, scores = out[0], out[1]
    keeps: list[int | None] = [None] * len(indices)
    if len(out) > 2 and out[2] is not None:  # BudgetSelector: (indices, scores, truncated_last_size)
        keeps[-1] = int(out[2])
    return [(int(i), float(s), k) for i, s, k in zip(indices, scores, keeps, strict=True)]


def _known_sizes(
    selector: TopK | BudgetSelector, ranked: list[tuple[int, float, int | None]]
) -> list[int | None]:
    """The sizes the scoring pass already counted for the selected documents (a budget keeps them),
    so the writing pass does not count them again; ``None`` where unknown."""
    if not isinstance(selector, BudgetSelector) or not ranked:
        return [None] * len(ranked)
    return [int(n) for n in selector.sizes_of([idx for idx, _, _ in ranked])]


def _selected_row(
    rec: Record,
    rank: int,
    score: float,
    keep: int | None,
    options: ReadOptions,
    size_of: Any,
    known_size: int | None = None,
) -> tuple[Selected, dict[str, Any]]:
    text = rec.text
    if keep is not None:
        text = size_of.truncate(text, keep)  # the counter knows where to cut (counts are not monotone)
        known_size = None  # the cut text is counted again
    if known_size is not None:
        size = known_size
    else:
        size = size_of(text) if size_of is not None else len(text.encode("utf-8"))
    sel = Selected(rank, rec.index, rec.id, rec.source, score, size, rec.domain, text, keep)
    if rec.raw is not None:
        row = dict(rec.raw)
        if keep is not None:
            if options.template is not None:
                raise ConfigError("--truncate-last needs --text-field, not --target/--text-template")
            row[options.text_field] = text
    else:
        row = {"text": text}
    for key in ("score", "record_id"):
        if key in row:
            raise DataError(f"{rec.id}: the record already has a field '{key}', which the output adds")
    row["score"] = score
    row["record_id"] = rec.id
    if keep is not None:
        row["truncated"] = True
    return sel, row


def _progress_bar(enabled: bool, total: int | None) -> Any:
    if not enabled:
        return None
    from compresslm.progress import progress_bar

    return progress_bar(total=total, unit="doc", desc="scoring", smoothing=0.05)
