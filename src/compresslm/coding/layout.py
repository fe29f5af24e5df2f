"""How inputs become documents and verbatim pieces, and how they are rebuilt byte for byte.

What an input becomes:

* a **plain JSON Lines file** (``.jsonl``/``.ndjson``): per line, the JSON string of the text field
  is a document coded by M1 and the rest of the line (keys, other fields, newline) a verbatim piece.
  The document is the decoded text; the container records whether ``json.dumps`` with or without
  ``ensure_ascii`` reproduces the original literal, and a line where neither does (or that is not a
  JSON object with that string field) is coded whole, as bytes. Either way the restored file is
  byte-identical;
* **any other file** (``.txt``, source code, ...): one document, its bytes;
* a **folder**: every non-hidden file under it (the data layer's order), each as above, restored
  under the same relative paths;
* **records** the data layer reads but that cannot be restored byte for byte (``builtin:NAME``,
  ``.parquet``, ``.json``, compressed JSON Lines, saved datasets): their texts are the documents and
  decompression writes JSON Lines ``{"id", "text"}``; rejected records are counted in the report.

Verbatim pieces are stored zstd-compressed in the container's LAYO section, with the sha256 of
every file so that a restore is verified before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from compresslm.data.formats import loads_json, text_folder_files
from compresslm.data.readers import BUILTIN_PREFIX, read_records
from compresslm.data.records import Record
from compresslm.errors import DataError, IntegrityError

RAW, VERBATIM, JSON_UNICODE, JSON_ASCII = 0, 1, 2, 3
_PLAIN_JSONL = (".jsonl", ".ndjson")
_RECORD_SUFFIXES = (
    ".parquet",
    ".json",
    ".jsonl.gz",
    ".jsonl.zst",
    ".jsonl.zstd",
    ".ndjson.gz",
    ".ndjson.zst",
)


# --------------------------------------------------------------------------------------------- layout


@dataclass
class LayoutFile:
    """An output file: its relative path ('' for a single file), the sha256 of its bytes and its
    parts: ``(RAW, bytes)`` or ``(VERBATIM | JSON_*, document index)``."""

    path: str
    sha256: bytes
    parts: list[tuple[int, bytes | int]] = field(default_factory=list)


@dataclass
class Source:
    kind: str  # "file", "folder" or "records"
    name: str
    files: list[LayoutFile]
    documents: list[bytes]
    record_lines: int = 0  # JSONL lines split into text + verbatim pieces
    whole_lines: int = 0  # JSONL lines coded whole
    rejected: int = 0  # records the data layer rejected ("records" kind only)
    input_bytes: int = 0

    def add_document(self, data: bytes) -> int:
        self.documents.append(data)
        return len(self.documents) - 1


def _put_varint(out: bytearray, value: int) -> None:
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


def encode_layout(files: Sequence[LayoutFile]) -> bytes:
    out = bytearray()
    _put_varint(out, len(files))
    for f in files:
        path = f.path.encode("utf-8")
        _put_varint(out, len(path))
        out += path + f.sha256
        _put_varint(out, len(f.parts))
        for kind, value in f.parts:
            out.append(kind)
            if kind == RAW:
                assert isinstance(value, bytes)
                _put_varint(out, len(value))
                out += value
    return zstandard.ZstdCompressor(level=19).compress(bytes(out))


def decode_layout(blob: bytes, where: str) -> list[LayoutFile]:
    try:
        data = zstandard.ZstdDecompressor().decompress(blob, max_output_size=1 << 34)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{where}: LAYO does not decompress: {exc}") from exc
    pos = 0

    def varint() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            if pos >= len(data):
                raise IntegrityError(f"{where}: LAYO ends early")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise IntegrityError(f"{where}: LAYO ends early")
        pos += n
        return data[pos - n : pos]

    files = []
    doc = 0
    for _ in range(varint()):
        path = take(varint()).decode("utf-8", errors="strict")
        f = LayoutFile(path, take(32))
        for _ in range(varint()):
            kind = take(1)[0]
            if kind == RAW:
                f.parts.append((RAW, take(varint())))
            elif kind in (VERBATIM, JSON_UNICODE, JSON_ASCII):
                f.parts.append((kind, doc))
                doc += 1
            else:
                raise IntegrityError(f"{where}: LAYO has an unknown part kind {kind}")
        files.append(f)
    if pos != len(data):
        raise IntegrityError(f"{where}: LAYO has trailing bytes")
    return files


# -------------------------------------------------------------------------------------------- sources


def _jsonl_parts(data: bytes, field: str, source: Source) -> list[tuple[int, bytes | int]]:
    """Split each line into verbatim pieces around the text field's JSON string (see module doc)."""
    parts: list[tuple[int, bytes | int]] = []
    key = re.compile(re.escape(json.dumps(field)) + r"\s*:\s*")
    for line in data.splitlines(keepends=True):
        split = _split_line(line, field, key)
        if split is None:
            parts.append((VERBATIM, source.add_document(line)))
            source.whole_lines += 1
            continue
        prefix, mode, text, suffix = split
        parts += [(RAW, prefix), (mode, source.add_document(text)), (RAW, suffix)]
        source.record_lines += 1
    return parts


def _split_line(line: bytes, field: str, key: re.Pattern[str]) -> tuple[bytes, int, bytes, bytes] | None:
    try:
        text = line.decode("utf-8")
        obj = loads_json(text)
    except (UnicodeDecodeError, ValueError, RecursionError):  # bad JSON, huge integers, NaN: coded whole
        return None
    value = obj.get(field) if isinstance(obj, dict) else None
    if not isinstance(value, str):
        return None
    try:
        doc = value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates have no UTF-8 form
        return None
    for match in key.finditer(text):
        for mode, ascii_only in ((JSON_UNICODE, False), (JSON_ASCII, True)):
            literal = json.dumps(value, ensure_ascii=ascii_only)
            if text.startswith(literal, match.end()):
                end = match.end() + len(literal)
                return text[: match.end()].encode("utf-8"), mode, doc, text[end:].encode("utf-8")
    return None


def _file_entry(path: Path, rel: str, field: str, source: Source) -> LayoutFile:
    data = path.read_bytes()
    source.input_bytes += len(data)
    entry = LayoutFile(rel, hashlib.sha256(data).digest())
    if path.name.lower().endswith(_PLAIN_JSONL):
        entry.parts = _jsonl_parts(data, field, source)
    else:
        entry.parts = [(VERBATIM, source.add_document(data))]
    return entry


def _is_record_input(path: str) -> bool:
    name = path.lower()
    return (
        path.startswith(BUILTIN_PREFIX)
        or name.endswith(_RECORD_SUFFIXES)
        or (os.path.isdir(path) and os.path.isfile(os.path.join(path, "dataset_info.json")))
    )


def read_source(path: str | Path, *, text_field: str = "text", on_error: str = "fail") -> Source:
    """Resolve one input into documents and the layout that rebuilds it (see the module doc)."""
    spec = os.fspath(path)
    if _is_record_input(spec):
        return _records_source(spec, text_field, on_error)
    p = Path(spec)
    if p.is_dir():
        source = Source("folder", p.name, [], [])
        for full in text_folder_files(spec):
            rel = Path(os.path.relpath(full, spec)).as_posix()
            _check_name(rel, spec)
            source.files.append(_file_entry(Path(full), rel, text_field, source))
        return source
    if p.is_file():
        source = Source("file", p.name, [], [])
        source.files.append(_file_entry(p, "", text_field, source))
        return source
    raise DataError(f"{spec}: no such file or folder")


def _check_name(rel: str, folder: str) -> None:
    """Refuse, before any coding, a file name the container cannot store (stored as UTF-8)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(rel).decode("utf-8", errors="backslashreplace")
        raise DataError(
            f"{folder}: file name {shown!r} is not valid UTF-8; the .clm format stores names as UTF-8 "
            "(rename it, e.g. with convmv)"
        ) from None


def _records_source(spec: str, text_field: str, on_error: str) -> Source:
    """Records from the data layer, restored as JSON Lines ``{"id": ..., "text": ...}``."""
    source = Source("records", spec, [], [])
    digest = hashlib.sha256()
    entry = LayoutFile("", b"")
    for item in read_records(spec, text_field=text_field, on_error=on_error, max_bytes=None):  # type: ignore[arg-type]
        if not isinstance(item, Record):
            source.rejected += 1
            continue
        head = b'{"id": ' + json.dumps(item.id, ensure_ascii=False).encode("utf-8") + b', "text": '
        doc = item.data  # the data layer only accepts texts that have a UTF-8 form
        entry.parts += [(RAW, head), (JSON_UNICODE, source.add_document(doc)), (RAW, b"}\n")]
        digest.update(head + json.dumps(item.text, ensure_ascii=False).encode("utf-8") + b"}\n")
        source.input_bytes += len(doc)
        source.record_lines += 1
    entry.sha256 = digest.digest()
    source.files.append(entry)
    return source


def rebuild(
    files: Sequence[LayoutFile], documents: Sequence[bytes], where: str
) -> Iterator[tuple[str, bytes]]:
    for f in files:
        chunks: list[bytes] = []
        for kind, value in f.parts:
            if kind == RAW:
                chunks.append(value)  # type: ignore[arg-type]
                continue
            if not isinstance(value, int) or value >= len(documents):
                raise IntegrityError(f"{where}: LAYO refers to document {value} of {len(documents)}")
            doc = documents[value]
            if kind == VERBATIM:
                chunks.append(doc)
            else:
                chunks.append(
                    json.dumps(doc.decode("utf-8"), ensure_ascii=kind == JSON_ASCII).encode("utf-8")
                )
        data = b"".join(chunks)
        if hashlib.sha256(data).digest() != f.sha256:
            raise IntegrityError(f"{where}: restored file {f.path or '(input)'} fails its sha256 check")
        yield f.path, data
