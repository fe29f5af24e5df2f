"""Where every input record went: selected, not selected, or rejected with a reason (docs/design.md#data).

The pipeline feeds each item from :func:`~compresslm.data.readers.read_records` to
:meth:`Accounting.add` (or ``add_accepted`` / ``add_rejection``), later reports the selection with
:meth:`Accounting.set_selected` or ``add_selected``, and calls :meth:`Accounting.check` before writing
the summary. Counts are kept per source file. Rejections are spooled to an anonymous temporary file
as they arrive, so memory stays flat however many there are, and ``write_rejects`` can still list
every one of them.

Invariant (per source and in total): ``read == accepted + rejected`` and
``accepted == selected + not_selected`` with ``0 <= selected <= accepted``; hence
``read == selected + not_selected + rejected``.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from compresslm.data.records import Record, Rejection, reason_kind
from compresslm.data.writers import write_records
from compresslm.errors import CompressLMError


@dataclass
class _Counts:
    accepted: int = 0
    rejected: int = 0
    selected: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def read(self) -> int:
        return self.accepted + self.rejected

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "selected": self.selected,
            "not_selected": self.accepted - self.selected,
            "rejected_by_reason": dict(sorted(self.by_reason.items())),
        }


class Accounting:
    """Counts of read / accepted / rejected / selected records, in total and per source."""

    def __init__(self) -> None:
        self._total = _Counts()
        self._sources: defaultdict[str, _Counts] = defaultdict(_Counts)
        self._per_source_selected = False
        self._spool: IO[bytes] | None = None

    # -- reading ---------------------------------------------------------------------------------

    def add(self, item: Record | Rejection) -> None:
        """Count one item from ``read_records``, whichever kind it is."""
        if isinstance(item, Rejection):
            self.add_rejection(item)
        else:
            self.add_accepted(item)

    def add_accepted(self, record: Record) -> None:
        """Count one accepted record (it was read and has usable text)."""
        self.add_read(record.source)

    def add_read(self, source: str, n: int = 1) -> None:
        """Count ``n`` accepted records read from ``source`` (for callers that keep no Record)."""
        self._total.accepted += n
        self._sources[source].accepted += n

    def add_rejection(self, rejection: Rejection) -> None:
        """Count one rejected record (it was read, too) and spool it for :meth:`write_rejects`."""
        kind = reason_kind(rejection.reason)
        for counts in (self._total, self._sources[rejection.source]):
            counts.rejected += 1
            counts.by_reason[kind] += 1
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(prefix="compresslm-rejects-")  # noqa: SIM115 - closed in close()
        row = {"id": rejection.id, "source": rejection.source, "reason": rejection.reason}
        self._spool.write(json.dumps(row, ensure_ascii=True).encode("ascii") + b"\n")

    # -- selection -------------------------------------------------------------------------------

    def add_selected(self, record: Record) -> None:
        """Count one selected record, per source."""
        self._per_source_selected = True
        self._total.selected += 1
        self._sources[record.source].selected += 1

    def mark_selected(self, n: int, source: str | None = None) -> None:
        """Add ``n`` selected records (to ``source`` as well, when given)."""
        self._total.selected += n
        if source is not None:
            self._per_source_selected = True
            self._sources[source].selected += n

    def set_selected(self, k: int, by_source: Mapping[str, int] | None = None) -> None:
        """Set the number selected (replacing earlier counts), optionally split by source."""
        self._total.selected = k
        for counts in self._sources.values():
            counts.selected = 0
        self._per_source_selected = by_source is not None
        for source, n in (by_source or {}).items():
            self._sources[source].selected = n

    # -- results ---------------------------------------------------------------------------------

    @property
    def read(self) -> int:
        return self._total.read

    @property
    def accepted(self) -> int:
        return self._total.accepted

    @property
    def rejected(self) -> int:
        return self._total.rejected

    @property
    def selected(self) -> int:
        return self._total.selected

    def summary(self) -> dict[str, Any]:
        """Totals plus ``sources: {source: counts}`` and ``rejected_by_reason: {kind: n}``.

        Per-source ``selected`` is only meaningful when selections were counted per source
        (``add_selected``, ``mark_selected(n, source)`` or ``set_selected(k, by_source)``);
        otherwise each source reports ``selected`` as null.
        """
        out = self._total.as_dict()
        sources = {}
        for source in sorted(self._sources):
            counts = self._sources[source].as_dict()
            if not self._per_source_selected:
                counts["selected"] = counts["not_selected"] = None
            sources[source] = counts
        out["sources"] = sources
        return out

    def summary_line(self) -> str:
        """One human-readable line, e.g. ``read 10: selected 3, not selected 5, rejected 2 (empty 2)``."""
        s = self._total.as_dict()
        line = f"read {s['read']}: selected {s['selected']}, not selected {s['not_selected']}, rejected {s['rejected']}"
        if s["rejected_by_reason"]:
            line += " (" + ", ".join(f"{k} {v}" for k, v in s["rejected_by_reason"].items()) + ")"
        return line

    def check(self, scored: int | None = None) -> None:
        """Raise :class:`CompressLMError` if a record is unaccounted for.

        ``scored``: how many documents the selection actually saw; it must equal ``accepted``
        (catches documents lost between reading and scoring).
        """
        problems = []
        total = self._total
        if not 0 <= total.selected <= total.accepted:
            problems.append(f"selected {total.selected} is not within 0..accepted ({total.accepted})")
        if scored is not None and scored != total.accepted:
            problems.append(f"{scored} documents were scored but {total.accepted} were accepted")
        parts = self._sources.values()
        if (
            sum(c.accepted for c in parts) != total.accepted
            or sum(c.rejected for c in parts) != total.rejected
        ):
            problems.append("per-source counts do not add up to the totals")
        if self._per_source_selected:
            if sum(c.selected for c in parts) != total.selected:
                problems.append("per-source selected counts do not add up to the total")
            bad = [s for s, c in self._sources.items() if not 0 <= c.selected <= c.accepted]
            if bad:
                problems.append(f"selected is not within 0..accepted for {bad[0]}")
        if sum(total.by_reason.values()) != total.rejected or self._spooled() != total.rejected:
            problems.append("rejection reasons or the rejects spool do not match the rejected count")
        if problems:
            raise CompressLMError("accounting error (a bug, please report): " + "; ".join(problems))

    def iter_rejections(self) -> Iterator[dict[str, str]]:
        """Every rejection as ``{id, source, reason}``, in arrival order (read back from the spool)."""
        if self._spool is None:
            return
        self._spool.flush()
        self._spool.seek(0)
        for line in self._spool:
            yield json.loads(line)
        self._spool.seek(0, 2)

    def write_rejects(self, path: str | Path, force: bool = False) -> int:
        """Write every rejection to ``path`` (JSON Lines or Parquet by extension); returns the count."""
        rows = (
            {"record_id": r["id"], "source": r["source"], "reason": r["reason"]}
            for r in self.iter_rejections()
        )
        return write_records(path, rows, force=force)  # record_id: the name every output uses

    def _spooled(self) -> int:
        if self._spool is None:
            return 0
        self._spool.flush()
        self._spool.seek(0)
        lines = sum(1 for _ in self._spool)
        self._spool.seek(0, 2)
        return lines

    def close(self) -> None:
        """Delete the rejects spool (also happens when the object is garbage-collected)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __enter__(self) -> Accounting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
