"""The unit of data that flows through compresslm, and the reasons a record can be rejected.

Every input record ends up exactly once as selected, not selected, or rejected with a reason
(:class:`Rejection`). Readers yield ``Record | Rejection`` in input order, so a consumer can keep
the accounting without holding records in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Record:
    """One document.

    ``id`` is stable across runs: ``"{path}:{line}"`` (1-based line) for line-oriented files,
    ``"{path}:{row}"`` (0-based row) for Parquet/JSON arrays/saved datasets, ``"{path}"`` for a
    whole-file text document, ``"builtin:{corpus}:{n}"`` for built-in corpora.
    ``source`` is the file (or built-in corpus name) it came from; ``index`` its position among all
    records read in this run (accepted and rejected alike), which breaks score ties.
    ``raw`` is the original record (a dict) so outputs can reproduce it unchanged;
    ``domain`` is a label where one is known (built-in pools), used for precision@k.
    """

    id: str
    source: str
    index: int
    text: str
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    domain: str | None = None

    @property
    def data(self) -> bytes:
        """The UTF-8 bytes that compressors and tokenizers see."""
        return self.text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that was read but cannot be used, with a human-readable reason."""

    id: str
    source: str
    index: int
    reason: str


# Reason prefixes, so reports can group rejections by kind (the full reason adds detail).
BAD_JSON = "bad JSON"
MISSING_FIELD = "missing field"
NOT_UTF8 = "not UTF-8"
EMPTY = "empty"
TOO_LARGE = "over size limit"
TOO_SMALL = "under min size"
NOT_STRING = "not a string"


def reason_kind(reason: str) -> str:
    """The kind of a rejection reason: its text before the first ``:`` or ``(``.

    ``"bad JSON: Expecting value"`` -> ``"bad JSON"``; ``"over size limit (9 bytes > 4)"`` ->
    ``"over size limit"``. Reports group rejections by this kind.
    """
    cut = min((i for i in (reason.find(":"), reason.find("(")) if i >= 0), default=len(reason))
    return reason[:cut].strip()
