"""Read corpora into :class:`Record` / :class:`Rejection` items, streaming and in input order.

Every record a file holds comes out exactly once, either as a ``Record`` (usable text) or as a
``Rejection`` with a reason, so the caller can account for all of them (docs/design.md#data). Two kinds of
rejection:

- **malformed input** (bad JSON, missing text field, text not a string, not UTF-8 — including JSON
  ``\\ud800`` escapes that cannot be encoded as UTF-8): ``on_error="fail"`` raises
  :class:`DataError` ``"path:line: reason"``; ``on_error="skip"`` yields a ``Rejection``;
- **policy** (always a ``Rejection``, never fatal): empty text (zero bytes or whitespace only, by
  :meth:`str.isspace`), a blank JSON Lines line (``"empty: blank line"`` — counted, not dropped),
  text over ``max_bytes`` (``"over size limit (N bytes > M)"``: rejected, never truncated) or under
  ``min_bytes``.

Inputs: files by extension (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.json``, ``.parquet``,
``.txt``), folders of text files, saved Hugging Face datasets, globs, and ``builtin:NAME`` corpora
(see :mod:`compresslm.data.builtin`).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from compresslm.data import formats
from compresslm.data.formats import DEFAULT_MAX_LINE_BYTES, Malformed, Refused, utf8_error
from compresslm.data.records import EMPTY, MISSING_FIELD, NOT_STRING, TOO_LARGE, TOO_SMALL, Record, Rejection
from compresslm.errors import ConfigError, DataError

DEFAULT_MAX_BYTES = 1_000_000
"""Documents whose UTF-8 text is larger than this are rejected (never truncated)."""

BUILTIN_PREFIX = "builtin:"
_GLOB_CHARS = frozenset("*?[")
_log = logging.getLogger(__name__)


def expand_inputs(paths: Sequence[str | Path]) -> list[str]:
    """Turn paths, folders, globs and ``builtin:NAME`` names into the list of inputs to read.

    Globs expand to their sorted matches (``**`` recurses); folders and ``builtin:`` names pass
    through. A path or glob that matches nothing raises ``DataError("no such file or folder: ...")``. An input
    listed twice (directly or through overlapping globs) is read once, at its first position.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        path = os.fspath(raw)
        if path.startswith(BUILTIN_PREFIX):
            from compresslm.data.builtin import parse_builtin

            parse_builtin(path)  # unknown names fail now, not after a long read
            matches = [path]
        elif _GLOB_CHARS & set(path) and not os.path.exists(path):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                raise DataError(f"no such file or folder: {path} (the pattern matches nothing)")
        elif os.path.exists(path):
            matches = [path]
        else:
            raise DataError(f"no such file or folder: {path}")
        for match in matches:
            if not match.startswith(BUILTIN_PREFIX):
                formats.check_readable(match)  # a FIFO or socket is refused before anyone opens it
            key = match if match.startswith(BUILTIN_PREFIX) else os.path.realpath(match)
            if key not in seen:
                seen.add(key)
                out.append(match)
    return out


class _Fields(string.Formatter):
    """``str.format`` whose dotted names walk into nested dicts: ``{meta.text}`` -> ``rec["meta"]["text"]``."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        return lookup(kwargs, field_name), field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None or isinstance(value, (dict, list)):
            raise _NotText(_type_name(value))
        return super().format_field(value, format_spec)


class _NotText(Exception):
    """A template field whose value is not text-like (null, object, array)."""


def lookup(record: Mapping[str, Any], field: str) -> Any:
    """``record[field]``, where a dotted ``field`` walks nested objects unless the key itself exists.

    Raises ``KeyError(field)`` when a part is missing or not an object.
    """
    if field in record:
        return record[field]
    value: Any = record
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(field)
        value = value[part]
    return value


TEMPLATE_MAX_WIDTH = 10_000
"""Largest width or precision a template field may ask for (``{text:999999999}`` would allocate
gigabytes for every record)."""


def check_template(template: str) -> None:
    """Raise :class:`ConfigError` unless ``template`` is a ``str.format`` string of named fields whose
    format specs neither nest fields (``{x:{w}}`` takes its width from the data) nor ask for a width
    or precision over :data:`TEMPLATE_MAX_WIDTH`."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"--template {template!r}: {exc}") from exc
    names = [name for _, name, _, _ in parts if name is not None]
    if not names or any(name == "" or name.isdigit() for name in names):
        raise ConfigError(f"--template {template!r} needs named fields such as {{text}}")
    for _, name, spec, _ in parts:
        if spec and "{" in spec:
            raise ConfigError(f"--template {template!r}: field {name!r} takes its format from another field")
        if spec and any(int(n) > TEMPLATE_MAX_WIDTH for n in re.findall(r"\d+", spec)):
            raise ConfigError(
                f"--template {template!r}: field {name!r} asks for a width or precision over "
                f"{TEMPLATE_MAX_WIDTH:,} characters"
            )


class TextExtractor:
    """Builds a record's text from its ``text_field`` or its ``template``; returns text or a Malformed.

    Templates use ``str.format`` syntax with named fields only (``"{prompt}\\n{canonical_solution}"``);
    a field may be a string or a number; a missing field is ``"missing field: 'name'"``.
    """

    def __init__(self, text_field: str = "text", template: str | None = None) -> None:
        self.text_field, self.template = text_field, template
        self._formatter = _Fields()
        if template is not None:
            check_template(template)

    def __call__(self, record: Mapping[str, Any]) -> str | Malformed:
        if self.template is not None:
            try:
                return self._formatter.vformat(self.template, (), record)
            except KeyError as exc:
                return Malformed(f"{MISSING_FIELD}: {exc.args[0]!r}{_fields_hint(record)}")
            except _NotText as exc:
                return Malformed(f"{NOT_STRING}: a template field is {exc.args[0]}")
            except (ValueError, TypeError, IndexError, AttributeError) as exc:
                return Malformed(f"{NOT_STRING}: template cannot format this record: {exc}")
        try:
            value = lookup(record, self.text_field)
        except KeyError:
            return Malformed(f"{MISSING_FIELD}: {self.text_field!r}{_fields_hint(record)}")
        if isinstance(value, str):
            return value
        if isinstance(value, (bytes, bytearray)):  # binary Parquet/Arrow columns
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                return Malformed(utf8_error(exc))
        return Malformed(f"{NOT_STRING}: field {self.text_field!r} is {_type_name(value)}")


def _fields_hint(record: Mapping[str, Any], limit: int = 8) -> str:
    """`` (fields: a, b, c)``: what the record does have, so a wrong --text-field is easy to fix."""
    names = [str(k) for k in record][:limit]
    more = ", ..." if len(record) > limit else ""
    return f" (fields: {', '.join(names)}{more})" if names else " (the record is an empty object)"


def read_records(
    paths: Sequence[str | Path] | str | Path,
    *,
    text_field: str = "text",
    template: str | None = None,
    on_error: Literal["fail", "skip"] = "fail",
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    min_bytes: int = 1,
    domain_field: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[Record | Rejection]:
    """Stream every record of ``paths`` as a :class:`Record` or a :class:`Rejection`, in input order.

    Options are validated and inputs expanded *now* (a missing file fails before anything is read);
    the records are read lazily. ``index`` counts every item this call yields, from 0. Text is taken
    from ``text_field`` (dotted paths reach nested objects) or built from ``template``. ``domain``
    comes from ``domain_field`` when given (built-in corpora carry their own). ``max_bytes=None``
    disables the size limit; ``max_line_bytes`` bounds the memory one JSON Lines line may take.
    """
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"--on-error must be 'fail' or 'skip', not {on_error!r}")
    if max_bytes is not None and max_bytes < min_bytes:
        raise ConfigError(f"--max-bytes ({max_bytes}) is smaller than --min-bytes ({min_bytes})")
    extract = TextExtractor(text_field, template)
    inputs = expand_inputs(paths)  # type: ignore[arg-type]  # str/Path handled inside
    return _read(inputs, extract, on_error, max_bytes, min_bytes, domain_field, max_line_bytes)


def _read(
    inputs: list[str],
    extract: TextExtractor,
    on_error: str,
    max_bytes: int | None,
    min_bytes: int,
    domain_field: str | None,
    max_line_bytes: int,
) -> Iterator[Record | Rejection]:
    index = 0
    for source in inputs:
        field = domain_field
        if source.startswith(BUILTIN_PREFIX):
            from compresslm.data.builtin import open_builtin

            items = open_builtin(source)
            field = domain_field or "domain"
        else:
            items = formats.open_path(source, max_bytes=max_bytes, max_line_bytes=max_line_bytes)
        for rid, payload in items:
            raw = payload if isinstance(payload, dict) else None
            outcome = extract(raw) if raw is not None else payload
            if isinstance(outcome, str):
                outcome = _check(outcome, max_bytes, min_bytes)
            if isinstance(outcome, str):
                domain = _domain(raw, field)
                yield Record(id=rid, source=source, index=index, text=outcome, raw=raw, domain=domain)
            elif isinstance(outcome, Malformed) and on_error == "fail":
                raise DataError(f"{rid}: {outcome.reason}")
            else:
                yield Rejection(id=rid, source=source, index=index, reason=outcome.reason)
            index += 1


def _check(text: str, max_bytes: int | None, min_bytes: int) -> str | Malformed | Refused:
    """``text`` itself if usable, else why not: not encodable as UTF-8 (malformed) or a policy reason."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return Malformed(utf8_error(exc))
    if size == 0:
        return Refused(f"{EMPTY}: no text")
    if text.isspace():
        return Refused(f"{EMPTY}: whitespace only ({size} bytes)")
    if max_bytes is not None and size > max_bytes:
        return Refused(f"{TOO_LARGE} ({size} bytes > {max_bytes})")
    if size < min_bytes:
        return Refused(f"{TOO_SMALL} ({size} bytes < {min_bytes})")
    return text


def _domain(raw: dict[str, Any] | None, field: str | None) -> str | None:
    if raw is None or field is None:
        return None
    try:
        value = lookup(raw, field)
    except KeyError:
        return None
    return None if value is None else str(value)


@dataclass
class ReadOptions:
    """How to turn input records into texts: the one configuration of :func:`read_records`, shared
    by sources, targets, test sets and corpora (the CLI builds it from its reading options)."""

    text_field: str = "text"
    template: str | None = None
    on_error: str = "fail"
    max_bytes: int | None = DEFAULT_MAX_BYTES
    min_bytes: int = 1
    domain_field: str | None = None

    def read(self, paths: Sequence[str | Path] | str | Path) -> Iterator[Record | Rejection]:
        """:func:`read_records` with these options."""
        return read_records(paths, **asdict(self))

    def accepted(self, paths: Sequence[str | Path] | str | Path, *, what: str = "input") -> list[Record]:
        """:func:`read_accepted` with these options (rejections reported as one warning)."""
        return read_accepted(paths, what=what, **asdict(self))


def read_accepted(
    paths: Sequence[str | Path] | str | Path, *, what: str = "input", **kwargs: Any
) -> list[Record]:
    """The accepted records of ``paths`` (for sets read whole: targets, a study's corpus), in order.

    Malformed records raise under the default ``on_error="fail"``. Policy rejections (empty, size)
    and skipped malformed ones are left out and reported as one warning naming ``what``, their count
    by kind and the first one, so a set never shrinks unnoticed (:func:`describe_rejections`).
    """
    records: list[Record] = []
    rejected: list[Rejection] = []
    for item in read_records(paths, **kwargs):
        if isinstance(item, Record):
            records.append(item)
        else:
            rejected.append(item)
    if rejected:
        _log.warning("%s: %s", what, describe_rejections(rejected))
    return records


def describe_rejections(rejected: Sequence[Rejection]) -> str:
    """``"3 records rejected (2 empty, 1 over size limit; first: a.jsonl:4: empty)"``."""
    from collections import Counter

    from compresslm.data.records import reason_kind

    kinds = Counter(reason_kind(r.reason) for r in rejected)
    by_kind = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    first = rejected[0]
    return f"{len(rejected)} records rejected ({by_kind}; first: {first.id}: {first.reason})"


def read_texts(paths: Sequence[str | Path] | str | Path, **kwargs: Any) -> list[str]:
    """The texts of :func:`read_accepted` (rejections reported as a warning)."""
    return [r.text for r in read_accepted(paths, **kwargs)]


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
