"""How inputs become documents and verbatim pieces, and how they are rebuilt byte for byte.

What an input becomes:

* a **plain JSON Lines file** (``.jsonl``/``.ndjson``): per line, the JSON string of the text field
  is a document coded by M1 and the rest of the line (keys, other fields, newline) a verbatim piece.
  The document is the decoded text; the container records whether ``json.dumps`` with or without
  ``ensure_ascii`` reproduces the original literal, and a line where neither does (or that is not a
  JSON object with that string field) is coded whole, as bytes. Either way the restored file is
  byte-identical;
* **any other file** (``.txt``, source code, ...): one document, its bytes;
* a **folder**: what ``tar`` would archive of it: every file and folder under it, hidden ones and
  empty folders included, each file as above, restored under the same relative paths with their
  permission bits (minus the umask, as ``tar`` does for a user other than root) and modification
  times. Symbolic links, devices, FIFOs and sockets are skipped and listed in the report (like
  ``rsync`` without ``-l``): following a link could archive files outside the folder, and a stored
  link could make a later restore write outside it. A single **file** keeps its mode and mtime too,
  as ``zstd`` and ``gzip -N`` do;
* **records** the data layer reads but that cannot be restored byte for byte (``builtin:NAME``,
  ``.parquet``, ``.json``, compressed JSON Lines, saved datasets): their texts are the documents and
  decompression writes JSON Lines ``{"id", "text"}``; rejected records are counted in the report.

Verbatim pieces are stored zstd-compressed in the container's LAYO section, with the sha256 of
every file so that a restore is verified before anything is written (docs/clm-format.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from compresslm.coding.binary import Reader, put_varint
from compresslm.coding.header import check_name
from compresslm.data.formats import loads_json
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

FILE, FOLDER = 0, 1
_FOLDER_FLAG, _STAT_FLAG = 1, 2
CODEC_RAW, CODEC_ZSTD = 0, 1
LAYOUT_RATIO = 1024
"""A layout may decompress to at most ``LAYOUT_RATIO`` times the .clm file's size (plus
:data:`LAYOUT_SLACK`): a few hundred KB of hostile zstd cannot make decompression allocate GBs.
The writer stores a layout that would exceed that bound uncompressed instead (layouts of real text
compress a few times, far from 1024x), so every .clm it writes is readable (docs/clm-format.md)."""
LAYOUT_SLACK = 1 << 20


@dataclass
class LayoutFile:
    """An output entry: its relative path ('' for a single file or the root folder), and for a
    file the sha256 of its bytes and its parts: ``(RAW, bytes)`` or ``(VERBATIM | JSON_*,
    document index)``. ``mode`` (permission bits) and ``mtime_ns`` are restored when recorded
    (``None`` for records, which have neither). Paths are POSIX; names that are not UTF-8 keep
    their bytes through ``os.fsencode``/``os.fsdecode``."""

    path: str
    sha256: bytes = b""
    parts: list[tuple[int, bytes | int]] = field(default_factory=list)
    mode: int | None = None
    mtime_ns: int | None = None
    kind: int = FILE


@dataclass
class Source:
    kind: str  # "file", "folder" or "records"
    name: str
    files: list[LayoutFile]  # files and (for a folder input) folders, sorted by path
    documents: list[bytes]
    record_lines: int = 0  # JSONL lines split into text + verbatim pieces
    whole_lines: int = 0  # JSONL lines coded whole
    rejected: int = 0  # records the data layer rejected ("records" kind only)
    input_bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # "path (symlink)", ...: not archived

    def add_document(self, data: bytes) -> int:
        self.documents.append(data)
        return len(self.documents) - 1

    @property
    def n_files(self) -> int:
        return sum(f.kind == FILE for f in self.files)

    @property
    def n_folders(self) -> int:
        return sum(f.kind == FOLDER for f in self.files)


def encode_layout(files: Sequence[LayoutFile], other_bytes: int = 0) -> tuple[bytes, bytes]:
    """The LAYO payload (codec byte, then the zstd-compressed or raw table) and the table itself
    (its size and sha256 go into the header).

    ``other_bytes``: what the rest of the .clm file holds at least (DOCS, WIND), which the
    reader's bound on the table's size counts too."""
    out = bytearray()
    put_varint(out, len(files))
    for f in files:
        flags = (_FOLDER_FLAG if f.kind == FOLDER else 0) | (_STAT_FLAG if f.mode is not None else 0)
        out.append(flags)
        path = os.fsencode(f.path)
        put_varint(out, len(path))
        out += path
        if f.mode is not None:
            put_varint(out, f.mode)
            mtime = f.mtime_ns or 0
            put_varint(out, (mtime << 1) ^ -(mtime < 0))  # zigzag: mtimes before 1970 exist
        if f.kind == FOLDER:
            continue
        out += f.sha256
        put_varint(out, len(f.parts))
        for kind, value in f.parts:
            out.append(kind)
            if kind == RAW:
                assert isinstance(value, bytes)
                put_varint(out, len(value))
                out += value
    packed = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(bytes(out))
    if len(out) > layout_limit(1 + len(packed) + other_bytes):
        return bytes([CODEC_RAW]) + bytes(out), bytes(out)
    return bytes([CODEC_ZSTD]) + packed, bytes(out)


def layout_limit(file_bytes: int) -> int:
    """The largest layout table a ``file_bytes``-byte .clm file may declare."""
    return LAYOUT_RATIO * file_bytes + LAYOUT_SLACK


def unpack_layout(blob: bytes, declared: int, sha256: str, file_bytes: int, where: str) -> bytes:
    """The layout table, refusing before any allocation a size beyond what the file can hold, any
    zstd frame that does not produce exactly the declared size (bombs, trailing data), and a table
    whose sha256 differs from the header's (the table holds file modes and times, which no other
    check covers)."""
    if declared > layout_limit(file_bytes):
        raise IntegrityError(
            f"{where}: LAYO declares {declared:,} bytes, more than a {file_bytes:,}-byte file can hold"
        )
    if not blob or blob[0] not in (CODEC_RAW, CODEC_ZSTD):
        raise IntegrityError(f"{where}: LAYO has an unknown codec")
    body = blob[1:]
    if blob[0] == CODEC_RAW:
        if len(body) != declared:
            raise IntegrityError(f"{where}: LAYO holds {len(body)} bytes, the header says {declared}")
        data = body
    else:
        data = _unzstd(body, declared, where)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise IntegrityError(f"{where}: LAYO fails its sha256 check")
    return data


def _unzstd(body: bytes, declared: int, where: str) -> bytes:
    try:
        size = zstandard.get_frame_parameters(body).content_size
        if size != declared:  # also refuses frames without a content size
            raise IntegrityError(f"{where}: LAYO's zstd frame holds {size} bytes, the header says {declared}")
        decoder = zstandard.ZstdDecompressor().decompressobj()
        data = decoder.decompress(body)  # bounded: libzstd refuses output beyond the frame's size
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{where}: LAYO does not decompress: {exc}") from exc
    if len(data) != declared or not decoder.eof or decoder.unused_data:
        raise IntegrityError(f"{where}: LAYO's zstd frame is incomplete or followed by other data")
    return data


def decode_layout(data: bytes, where: str) -> list[LayoutFile]:
    """Parse the layout table, refusing hostile paths (see :func:`check_name`), duplicates, a file
    stored both as ``a`` and as a folder holding ``a/b``, and counts the table cannot hold."""
    r = Reader(data, f"{where}: LAYO")
    varint, take = r.varint, r.take

    files = []
    doc = 0
    count = varint()
    if count > len(data):  # every entry takes at least 2 bytes
        raise IntegrityError(f"{where}: LAYO declares {count} entries in {len(data)} bytes")
    for _ in range(count):
        flags = take(1)[0]
        if flags & ~(_FOLDER_FLAG | _STAT_FLAG):
            raise IntegrityError(f"{where}: LAYO has an unknown entry kind {flags}")
        raw_path = take(varint())
        if raw_path:
            check_name(raw_path, f"{where}: LAYO")
        f = LayoutFile(os.fsdecode(raw_path), kind=FOLDER if flags & _FOLDER_FLAG else FILE)
        if flags & _STAT_FLAG:
            mode, zigzag = varint(), varint()
            if mode > 0o7777:
                raise IntegrityError(f"{where}: LAYO: {f.path!r} has an invalid mode {mode:o}")
            f.mode, f.mtime_ns = mode, (zigzag >> 1) ^ -(zigzag & 1)
        if f.kind == FILE:
            f.sha256 = take(32)
            n_parts = varint()
            if n_parts > len(data) - r.pos:
                raise IntegrityError(f"{where}: LAYO declares {n_parts} parts in {len(data) - r.pos} bytes")
            for _ in range(n_parts):
                kind = take(1)[0]
                if kind == RAW:
                    f.parts.append((RAW, take(varint())))
                elif kind in (VERBATIM, JSON_UNICODE, JSON_ASCII):
                    f.parts.append((kind, doc))
                    doc += 1
                else:
                    raise IntegrityError(f"{where}: LAYO has an unknown part kind {kind}")
        files.append(f)
    if r.pos != len(data):
        raise IntegrityError(f"{where}: LAYO has trailing bytes")
    _check_tree(files, where)
    return files


def _check_tree(files: Sequence[LayoutFile], where: str) -> None:
    seen: dict[str, int] = {}
    for f in files:
        if f.path in seen:
            raise IntegrityError(f"{where}: LAYO stores {f.path or '(root)'!r} twice")
        seen[f.path] = f.kind
    for f in files:
        parts = f.path.split("/")
        for i in range(1, len(parts)):
            if seen.get("/".join(parts[:i])) == FILE:
                raise IntegrityError(
                    f"{where}: LAYO stores {'/'.join(parts[:i])!r} as a file and {f.path!r} inside it"
                )
    if "" in seen and len(files) > 1 and seen[""] == FILE:
        raise IntegrityError(f"{where}: LAYO stores a single file and other entries")


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


def _file_entry(path: Path, rel: str, field: str, source: Source, st: os.stat_result) -> LayoutFile:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    source.input_bytes += len(data)
    entry = LayoutFile(rel, hashlib.sha256(data).digest(), mode=st.st_mode & 0o7777, mtime_ns=st.st_mtime_ns)
    if path.name.lower().endswith(_PLAIN_JSONL):
        entry.parts = _jsonl_parts(data, field, source)
    else:
        entry.parts = [(VERBATIM, source.add_document(data))]
    return entry


def _folder_entries(root: Path, field: str, source: Source) -> None:
    """Everything under ``root`` as ``tar`` would archive it (see the module doc), sorted by
    relative path so the archive does not depend on the file system's order."""
    st = root.stat()
    found = [(b"", root, st)]
    stack = [(root, b"")]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise DataError(f"{folder}: cannot list: {exc.strerror or exc}") from exc
        for e in entries:
            child = (rel + b"/" if rel else b"") + os.fsencode(e.name)
            est = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(est.st_mode):
                found.append((child, Path(e.path), est))
                stack.append((Path(e.path), child))
            elif stat.S_ISREG(est.st_mode):
                found.append((child, Path(e.path), est))
            else:
                source.skipped.append(f"{os.fsdecode(child)} ({_kind_name(est.st_mode)})")
    found.sort(key=lambda t: t[0])
    for rel, _, _ in found:
        _check_name(os.fsdecode(rel), str(root))  # before any file is read or coded
    for rel, full, est in found:
        name = os.fsdecode(rel)
        if stat.S_ISDIR(est.st_mode):
            source.files.append(
                LayoutFile(name, mode=est.st_mode & 0o7777, mtime_ns=est.st_mtime_ns, kind=FOLDER)
            )
        else:
            source.files.append(_file_entry(full, name, field, source, est))
    source.skipped.sort()


def _kind_name(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


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
        _folder_entries(p, text_field, source)
        return source
    if p.is_file():
        source = Source("file", p.name, [], [])
        source.files.append(_file_entry(p, "", text_field, source, p.stat()))
        return source
    if p.exists():
        raise DataError(f"{spec}: not a regular file or a folder; compress reads files and folders")
    raise DataError(f"{spec}: no such file or folder")


def bytes_source(data: bytes, name: str = "-") -> Source:
    """One file read from a stream (``-``: standard input): one document, and no mode or mtime to
    restore."""
    source = Source("file", name, [], [], input_bytes=len(data))
    source.files.append(
        LayoutFile("", hashlib.sha256(data).digest(), [(VERBATIM, source.add_document(data))])
    )
    return source


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
) -> Iterator[tuple[LayoutFile, bytes]]:
    """Each file entry with its restored bytes, verified against its sha256 (folders are skipped)."""
    for f in files:
        if f.kind == FOLDER:
            continue
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
                try:
                    text = doc.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise IntegrityError(f"{where}: document {value} is not UTF-8 text ({exc})") from exc
                chunks.append(json.dumps(text, ensure_ascii=kind == JSON_ASCII).encode("utf-8"))
        data = b"".join(chunks)
        if hashlib.sha256(data).digest() != f.sha256:
            raise IntegrityError(f"{where}: restored file {f.path or '(input)'} fails its sha256 check")
        yield f, data
