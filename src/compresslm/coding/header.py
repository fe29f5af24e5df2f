"""The schema of a .clm header (the HEAD section's JSON), checked whole before any of it is used.

A header comes from a file that may be damaged or hostile, with valid checksums. So every field is
checked for its type and range *before* anything reads it, and a bad header is one clear
:class:`IntegrityError` naming the field ("HEAD.coder.window_bits: expected an integer in 16..256,
got '16'"), never a traceback deep in the decoder. Unknown fields are refused too: a field this
build does not know may change how the windows decode, so ignoring it could produce wrong output.

The schema is a plain dict of field name to check, so adding a field is one line: a field that
older files lack is wrapped in :func:`optional` (its default is then ``None``). Written here rather
than with ``jsonschema`` (not a dependency) because the rules that matter most are not JSON types:
exact integer ranges, path rules, and bounds tied to what the file can hold (checked in
:mod:`compresslm.coding.container` against the sections' sizes).

The rules for stored paths (:func:`check_name`) are those of the layout section, kept here with
the other validation rules; see docs/clm-format.md for the format as a whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from compresslm.errors import IntegrityError

Check = Callable[[Any, str], None]
"""Raises :class:`IntegrityError` (message starting with the field's path) if the value is bad."""

MAX_COUNT = 1 << 48  # bytes, windows, documents: far beyond any file, small enough to stay exact
MAX_PATH_BYTES = 4096  # Linux PATH_MAX
MAX_NAME_BYTES = 255  # one path component (NAME_MAX)
MAX_TEXT = 4096


def _fail(where: str, expected: str, value: Any) -> None:
    if isinstance(value, int) and value.bit_length() > 64:  # repr fails beyond 4,300 digits
        raise IntegrityError(f"{where}: expected {expected}, got a {value.bit_length()}-bit integer")
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise IntegrityError(f"{where}: expected {expected}, got {shown}")


def integer(lo: int, hi: int, multiple_of: int = 1) -> Check:
    def check(value: Any, where: str) -> None:
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not lo <= value <= hi
            or value % multiple_of
        ):
            step = f" (a multiple of {multiple_of})" if multiple_of > 1 else ""
            _fail(where, f"an integer in {lo}..{hi}{step}", value)

    return check


COUNT = integer(0, MAX_COUNT)


def text(max_len: int = MAX_TEXT, pattern: str | None = None) -> Check:
    compiled = re.compile(pattern) if pattern else None

    def check(value: Any, where: str) -> None:
        if not isinstance(value, str) or len(value) > max_len or "\x00" in value:
            _fail(where, f"a string of at most {max_len} characters without NUL", value)
        if compiled is not None and not compiled.fullmatch(value):
            _fail(where, f"a string matching {pattern}", value)

    return check


def choice(*values: Any) -> Check:
    def check(value: Any, where: str) -> None:
        if not any(type(value) is type(v) and value == v for v in values):
            _fail(where, "one of " + ", ".join(repr(v) for v in values), value)

    return check


def nullable(inner: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if value is not None:
            inner(value, where)

    return check


@dataclass(frozen=True)
class optional:  # noqa: N801 - reads as a schema keyword
    """A field that files written before it existed lack (read as ``None`` then)."""

    check: Check


def obj(fields: Mapping[str, Check | optional]) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            _fail(where, "an object", value)
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise IntegrityError(
                f"{where}: unknown field {unknown[0]!r} (written by a newer compresslm? this build "
                f"knows {', '.join(sorted(fields))})"
            )
        for name, rule in fields.items():
            if isinstance(rule, optional):
                if name in value:
                    rule.check(value[name], f"{where}.{name}")
            elif name not in value:
                raise IntegrityError(f"{where}: field {name!r} is missing")
            else:
                rule(value[name], f"{where}.{name}")

    return check


SOURCE_KINDS = ("file", "folder", "records")

HEADER_SCHEMA: dict[str, Check | optional] = {
    "format": choice("compresslm.clm"),
    "created_by": text(200),
    "coder": obj(
        {
            "window_bits": integer(16, 256, multiple_of=8),
            "precision": integer(9, 24),
            "guard_bits": integer(1, 32),
            "max_window_bytes": integer(1, 4096),
            "code": choice("straddle", "zeros"),
        }
    ),
    "segment_bytes": nullable(integer(1, 1 << 30)),
    "model": obj(
        {
            "sha256": text(64, "[0-9a-f]{64}"),
            "fingerprint": text(64, "[0-9a-f]{64}"),
            "numerics": optional(choice("float32", "int8-exact-v1")),  # absent before the exact M1: float32
            "path": nullable(text(MAX_PATH_BYTES)),
            "n_params": COUNT,
            "context": integer(1, 1 << 20),
        }
    ),
    "source": obj(
        {
            "kind": choice(*SOURCE_KINDS),
            "name": text(),
            "text_field": text(256),
            "files": COUNT,
            "folders": COUNT,
            "skipped": COUNT,
            "input_bytes": COUNT,
            "record_lines": COUNT,
            "whole_lines": COUNT,
            "rejected": COUNT,
        }
    ),
    "documents": COUNT,
    "windows": COUNT,
    "document_bytes": COUNT,
    "layout_bytes": COUNT,
    "layout_sha256": text(64, "[0-9a-f]{64}"),
    "stats": obj({"exceptions": COUNT, "backed_off": COUNT, "positions": COUNT}),
}


# Stream mode (``"mode": "stream"``): one range code per segment instead of windows. The document
# table's per-segment counts are then code bytes, and WIND holds the codes back to back.
STREAM_HEADER_SCHEMA: dict[str, Check | optional] = {
    **{k: v for k, v in HEADER_SCHEMA.items() if k not in ("coder", "windows", "stats")},
    "mode": choice("stream"),
    "coder": obj({"precision": integer(9, 24), "context": integer(1, 1 << 20)}),
    "code_bytes": COUNT,
    "stats": obj({"positions": COUNT}),
}


def validate_header(header: Any, where: str) -> dict[str, Any]:
    """``header`` checked against :data:`HEADER_SCHEMA`, or :data:`STREAM_HEADER_SCHEMA` for a
    stream-mode file (raises :class:`IntegrityError`)."""
    stream = isinstance(header, dict) and "mode" in header
    obj(STREAM_HEADER_SCHEMA if stream else HEADER_SCHEMA)(header, f"{where}: HEAD")
    return header


def check_name(raw: bytes, where: str) -> None:
    """A stored relative path: UTF-8 is not required (POSIX names are bytes), but no NUL, no empty,
    ``.`` or ``..`` component, not absolute, and within the usual length limits."""
    shown = raw[:60].decode("utf-8", errors="backslashreplace")
    if len(raw) > MAX_PATH_BYTES:
        raise IntegrityError(f"{where}: stored path {shown!r}... is longer than {MAX_PATH_BYTES} bytes")
    if b"\x00" in raw:
        raise IntegrityError(f"{where}: stored path {shown!r} contains a NUL byte")
    if raw.startswith(b"/"):
        raise IntegrityError(f"{where}: stored path {shown!r} is absolute")
    for part in raw.split(b"/"):
        if part in (b"", b".", b".."):
            raise IntegrityError(f"{where}: stored path {shown!r} has an empty, '.' or '..' component")
        if len(part) > MAX_NAME_BYTES:
            raise IntegrityError(
                f"{where}: stored path {shown!r} has a name longer than {MAX_NAME_BYTES} bytes"
            )
