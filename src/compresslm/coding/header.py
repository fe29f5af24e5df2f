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

from compresslm.coding.binary import Reader, put_varint
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


# ------------------------------------------------------------------------ version 3: a binary header
#
# A version 2 header is ~800 bytes of JSON (field names, 64-digit hashes, counts the tables repeat,
# the model's path), 80x the code of a 12-byte file. Version 3 writes the same decisions in a few
# bytes: one flags byte, the coder's parameters as varints, the model as fixed-length prefixes of its
# two hashes, and informational counts only when they are not zero (docs/clm-format.md). It is
# decoded into a dict checked against :data:`HEADER_V3_SCHEMA`, so the rules above still apply.

MODEL_ID_BYTES = 8
"""Bytes of M1's weights sha256 a version 3 file keeps: 64 bits tell models apart (the restored
files' digest, not this, is what proves a restore right)."""
FINGERPRINT_BYTES = 4
"""Bytes of M1's numerics fingerprint a version 3 file keeps (a machine whose M1 computes other
tables is refused before decoding; one that slipped past 2^-32 would fail the digest)."""
NUMERICS = ("float32", "int8-exact-v1")
CODES = ("straddle", "zeros")
MODES = ("stream", "windows")

_KIND_SHIFT, _NUMERICS_SHIFT = 1, 3
_SEGMENTS, _PATH, _EXTRAS = 1 << 5, 1 << 6, 1 << 7

EXTRAS: tuple[tuple[str, str, Check, Any], ...] = (
    ("source", "text_field", text(256), "text"),
    ("source", "skipped", COUNT, 0),
    ("source", "record_lines", COUNT, 0),
    ("source", "whole_lines", COUNT, 0),
    ("source", "rejected", COUNT, 0),
    ("stats", "backed_off", COUNT, 0),
)
"""Informational fields, written only when they differ from their default, as ``(tag, value)``
pairs with tags 1, 2, ... in this order (a new field is one line at the end)."""

_WINDOWS_CODER = {
    "window_bits": integer(16, 256, multiple_of=8),
    "precision": integer(9, 24),
    "guard_bits": integer(1, 32),
    "max_window_bytes": integer(1, 4096),
    "code": choice(*CODES),
}
_STREAM_CODER = {"precision": integer(9, 24), "context": integer(1, 1 << 20)}
_COMMON_V3: dict[str, Check | optional] = {
    "segment_bytes": nullable(integer(1, 1 << 30)),
    "model": obj(
        {
            "sha256": text(2 * MODEL_ID_BYTES, f"[0-9a-f]{{{2 * MODEL_ID_BYTES}}}"),
            "fingerprint": text(2 * FINGERPRINT_BYTES, f"[0-9a-f]{{{2 * FINGERPRINT_BYTES}}}"),
            "numerics": choice(*NUMERICS),
            "path": nullable(text(MAX_PATH_BYTES)),
        }
    ),
    "source": obj(
        {
            "kind": choice(*SOURCE_KINDS),
            **{name: check for group, name, check, _ in EXTRAS if group == "source"},
        }
    ),
    "stats": obj({name: check for group, name, check, _ in EXTRAS if group == "stats"}),
}
HEADER_V3_SCHEMA: dict[str, dict[str, Check | optional]] = {
    "stream": {"mode": choice("stream"), "coder": obj(_STREAM_CODER), **_COMMON_V3},
    "windows": {"mode": choice("windows"), "coder": obj(_WINDOWS_CODER), **_COMMON_V3},
}
"""The decoded version 3 header, per mode (what :func:`encode_header` takes and
:func:`decode_header` returns)."""

MAX_MIN_MATCH = 1 << 16
DEFAULT_MIN_MATCH = 32
"""``compress``'s shortest long-range match (kept here, beside the field's range, so the CLI reads
it without loading numpy). Chosen by measurement with the shipped M1 (docs/benchmarks.md, "Shipped
M1"): a match costs ~4-5 table bytes and cuts M1's context at both ends, so shorter repeats cost
more than a well-trained M1 pays for them (16 was best for a weaker M1, and worse than no matches
at all for the shipped one)."""
HEADER_V4_SCHEMA: dict[str, dict[str, Check | optional]] = {
    **HEADER_V3_SCHEMA,
    "stream": {
        **HEADER_V3_SCHEMA["stream"],
        "coder": obj({**_STREAM_CODER, "min_match": integer(0, MAX_MIN_MATCH)}),
    },
}
"""Version 4 adds the long-range match stage to stream mode: ``coder.min_match``, the shortest
match the stage finds (a match table follows the layout table; 0: none, no match table)."""
HEADER_SCHEMAS = {3: HEADER_V3_SCHEMA, 4: HEADER_V4_SCHEMA}


def header_version(header: dict[str, Any]) -> int:
    """The lowest .clm version that holds ``header``: 4 for a stream-mode file with a match stage
    (``coder.min_match``), else 3."""
    return 4 if "min_match" in header.get("coder", {}) else 3


def validate_header_v3(header: Any, where: str, version: int = 3) -> dict[str, Any]:
    """``header`` checked against the ``version`` schema, :data:`HEADER_V3_SCHEMA` or
    :data:`HEADER_V4_SCHEMA` (raises :class:`IntegrityError`)."""
    schema = HEADER_SCHEMAS[version]
    mode = header.get("mode") if isinstance(header, dict) else None
    if mode not in schema:
        _fail(f"{where}.mode", "one of " + ", ".join(map(repr, MODES)), mode)
    obj(schema[mode])(header, where)
    return header


def _put_text(out: bytearray, value: str) -> None:
    raw = value.encode("utf-8")
    put_varint(out, len(raw))
    out += raw


def _text(r: Reader, max_bytes: int, what: str) -> str:
    n = r.varint()
    if n > max_bytes:
        raise IntegrityError(f"{r.where}: {what} of {n} bytes is longer than {max_bytes}")
    try:
        return r.take(n).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{r.where}: {what} is not UTF-8") from exc


def encode_header(header: dict[str, Any], version: int = 3) -> bytes:
    """The version 3 or 4 header's bytes (``header`` is checked first: a writer bug must not
    produce a file no reader accepts)."""
    validate_header_v3(header, "HEAD", version)
    coder, model, source = header["coder"], header["model"], header["source"]
    extras = [
        (tag, header[group][name])
        for tag, (group, name, _, default) in enumerate(EXTRAS, 1)
        if header[group][name] != default
    ]
    flags = (
        MODES.index(header["mode"])
        | SOURCE_KINDS.index(source["kind"]) << _KIND_SHIFT
        | NUMERICS.index(model["numerics"]) << _NUMERICS_SHIFT
        | (_SEGMENTS if header["segment_bytes"] is not None else 0)
        | (_PATH if model["path"] is not None else 0)
        | (_EXTRAS if extras else 0)
    )
    out = bytearray([flags])
    if header["mode"] == "stream":
        put_varint(out, coder["precision"])
        put_varint(out, coder["context"])
        if version >= 4:
            put_varint(out, coder["min_match"])
    else:
        for name in ("window_bits", "precision", "guard_bits", "max_window_bytes"):
            put_varint(out, coder[name])
        out.append(CODES.index(coder["code"]))
    if header["segment_bytes"] is not None:
        put_varint(out, header["segment_bytes"])
    out += bytes.fromhex(model["sha256"]) + bytes.fromhex(model["fingerprint"])
    if model["path"] is not None:
        _put_text(out, model["path"])
    if extras:
        put_varint(out, len(extras))
        for tag, value in extras:
            put_varint(out, tag)
            if isinstance(value, str):
                _put_text(out, value)
            else:
                put_varint(out, value)
    return bytes(out)


def _index(r: Reader, value: int, names: tuple[str, ...], what: str) -> str:
    if value >= len(names):
        raise IntegrityError(f"{r.where}: unknown {what} {value} (written by a newer compresslm?)")
    return names[value]


def decode_header(r: Reader, version: int = 3) -> dict[str, Any]:
    """Read a version 3 or 4 header from ``r`` and check it against its schema
    (:data:`HEADER_SCHEMAS`)."""
    flags = r.byte()
    mode = MODES[flags & 1]
    header: dict[str, Any] = {"mode": mode}
    if mode == "stream":
        header["coder"] = {"precision": r.varint(), "context": r.varint()}
        if version >= 4:
            header["coder"]["min_match"] = r.varint()
    else:
        coder = {name: r.varint() for name in ("window_bits", "precision", "guard_bits", "max_window_bytes")}
        coder["code"] = _index(r, r.byte(), CODES, "window code")
        header["coder"] = coder
    header["segment_bytes"] = r.varint() if flags & _SEGMENTS else None
    header["model"] = {
        "sha256": r.take(MODEL_ID_BYTES).hex(),
        "fingerprint": r.take(FINGERPRINT_BYTES).hex(),
        "numerics": _index(r, flags >> _NUMERICS_SHIFT & 3, NUMERICS, "numerics"),
        "path": _text(r, MAX_PATH_BYTES, "the model's path") if flags & _PATH else None,
    }
    header["source"] = {"kind": _index(r, flags >> _KIND_SHIFT & 3, SOURCE_KINDS, "source kind")}
    header["stats"] = {}
    for group, name, _, default in EXTRAS:
        header[group][name] = default
    if flags & _EXTRAS:
        last = 0
        for _ in range(r.count(2, "header fields")):
            tag = r.varint()
            if not last < tag <= len(EXTRAS):
                raise IntegrityError(
                    f"{r.where}: header field {tag} is unknown or out of order (written by a newer compresslm?)"
                )
            group, name, _, default = EXTRAS[tag - 1]
            header[group][name] = _text(r, 4 * 256, name) if isinstance(default, str) else r.varint()
            last = tag
    return validate_header_v3(header, r.where, version)
