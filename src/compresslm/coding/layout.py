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

Verbatim pieces are stored in the container's layout table (zstd-compressed when that is smaller),
and one digest over the table and every restored file's sha256 (:func:`content_digest`) verifies a
restore before anything is written (docs/clm-format.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from compresslm.coding.binary import Reader, put_varint, unzigzag, zigzag
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


_SAME_MODE, _NANOS, _ONE_DOC = 4, 8, 16
_USUAL_MODE = {FILE: 0o644, FOLDER: 0o755}
DIGEST_BYTES = 8
"""Bytes of the restored-content digest a version 3 file keeps (see :func:`content_digest`)."""


def encode_layout(files: Sequence[LayoutFile], other_bytes: int = 0) -> tuple[bytes, bytes]:
    """The LAYO payload (codec byte, then the zstd-compressed or raw table) and the table itself
    (version 3, docs/clm-format.md). zstd is used only when it makes the payload smaller, and never
    for a table beyond what :func:`layout_limit` lets a reader accept.

    ``other_bytes``: what the rest of the .clm file holds at least (DOCS, WIND), which the
    reader's bound on the table's size counts too."""
    out = bytearray()
    put_varint(out, len(files))
    prev_path, prev_secs = b"", 0
    prev_mode: dict[int, int] = {}
    for i, f in enumerate(files):
        one_doc = f.kind == FILE and len(f.parts) == 1 and f.parts[0][0] == VERBATIM
        flags = (_FOLDER_FLAG if f.kind == FOLDER else 0) | (_ONE_DOC if one_doc else 0)
        if f.mode is not None:
            secs, nanos = divmod(f.mtime_ns or 0, 1_000_000_000)
            same = prev_mode.get(f.kind) == f.mode
            flags |= _STAT_FLAG | (_SAME_MODE if same else 0) | (_NANOS if nanos else 0)
        out.append(flags)
        path = os.fsencode(f.path)
        if i:  # the first entry is the input itself, with an empty path
            shared = len(os.path.commonprefix([prev_path, path]))
            put_varint(out, shared)
            put_varint(out, len(path) - shared)
            out += path[shared:]
        elif path:
            raise ValueError("the first layout entry is the input itself (an empty path)")
        prev_path = path
        if f.mode is not None:
            if not same:
                put_varint(out, f.mode ^ _USUAL_MODE[f.kind])
                prev_mode[f.kind] = f.mode
            put_varint(out, zigzag(secs - prev_secs))
            prev_secs = secs
            if nanos:
                put_varint(out, nanos)
        if f.kind == FOLDER or one_doc:
            continue
        put_varint(out, len(f.parts))
        for kind, value in f.parts:
            out.append(kind)
            if kind == RAW:
                assert isinstance(value, bytes)
                put_varint(out, len(value))
                out += value
    table = bytes(out)
    return pack_table(table, other_bytes), table


def pack_table(table: bytes, other_bytes: int = 0) -> bytes:
    """A table as a .clm stores it (the layout table, version 4's match table): a codec byte, then
    the table zstd-compressed when that is smaller and within what :func:`unpack_layout` accepts
    from a file of ``other_bytes`` more bytes, else raw."""
    packed = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(table)
    if len(packed) >= len(table) or len(table) > layout_limit(1 + len(packed) + other_bytes):
        return bytes([CODEC_RAW]) + table
    return bytes([CODEC_ZSTD]) + packed


def content_digest(table: bytes, file_hashes: Sequence[bytes]) -> bytes:
    """What proves a version 3 restore right: the first :data:`DIGEST_BYTES` of the sha256 of the
    layout table followed by each restored file's sha256. One digest for the whole archive instead
    of 32 bytes per file; it covers the table too, so names, modes and mtimes changed by anyone who
    recomputes the file's CRC are refused as well."""
    digest = hashlib.sha256(table)
    for h in file_hashes:
        digest.update(h)
    return digest.digest()[:DIGEST_BYTES]


def layout_limit(file_bytes: int) -> int:
    """The largest layout table a ``file_bytes``-byte .clm file may declare."""
    return LAYOUT_RATIO * file_bytes + LAYOUT_SLACK


def unpack_layout(
    blob: bytes,
    file_bytes: int,
    where: str,
    declared: int | None = None,
    sha256: str | None = None,
    part: str = "LAYO",
) -> bytes:
    """The layout table (or another table stored by :func:`pack_table`, named ``part`` in
    errors), refusing before any allocation a size beyond what the file can hold, any zstd frame
    that does not produce exactly its declared size (bombs, trailing data). Version 2 files also
    declare the size and sha256 in their header (``declared``, ``sha256``): the table holds file
    modes and times, which no other version 2 check covers."""
    if not blob or blob[0] not in (CODEC_RAW, CODEC_ZSTD):
        raise IntegrityError(f"{where}: {part} has an unknown codec")
    body = blob[1:]
    if blob[0] == CODEC_RAW:
        size = len(body)
    else:
        try:
            size = zstandard.get_frame_parameters(body).content_size
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{where}: {part} does not decompress: {exc}") from exc
        if size == zstandard.CONTENTSIZE_UNKNOWN or (declared is not None and size != declared):
            raise IntegrityError(
                f"{where}: {part}'s zstd frame holds {size} bytes, the header says {declared}"
            )
    if declared is not None and size != declared:
        raise IntegrityError(f"{where}: {part} holds {size} bytes, the header says {declared}")
    if size > layout_limit(file_bytes):
        raise IntegrityError(
            f"{where}: {part} declares {size:,} bytes, more than a {file_bytes:,}-byte file can hold"
        )
    data = body if blob[0] == CODEC_RAW else _unzstd(body, size, where, part)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise IntegrityError(f"{where}: {part} fails its sha256 check")
    return data


def _unzstd(body: bytes, declared: int, where: str, part: str) -> bytes:
    try:
        decoder = zstandard.ZstdDecompressor().decompressobj()
        data = decoder.decompress(body)  # bounded: libzstd refuses output beyond the frame's size
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{where}: {part} does not decompress: {exc}") from exc
    if len(data) != declared or not decoder.eof or decoder.unused_data:
        raise IntegrityError(f"{where}: {part}'s zstd frame is incomplete or followed by other data")
    return data


def decode_layout(data: bytes, where: str) -> list[LayoutFile]:
    """Parse a version 3 layout table, refusing hostile paths (see :func:`check_name`), duplicates,
    a file stored both as ``a`` and as a folder holding ``a/b``, and counts the table cannot hold."""
    r = Reader(data, f"{where}: LAYO")
    varint = r.varint
    files = []
    doc = 0
    prev_path, prev_secs = b"", 0
    prev_mode: dict[int, int] = {}
    for i in range(r.count(1, "entries")):
        flags = r.byte()
        kind = FOLDER if flags & _FOLDER_FLAG else FILE
        if flags & ~(_FOLDER_FLAG | _STAT_FLAG | _SAME_MODE | _NANOS | _ONE_DOC) or (
            flags & (_SAME_MODE | _NANOS) and not flags & _STAT_FLAG or kind == FOLDER and flags & _ONE_DOC
        ):
            raise IntegrityError(f"{where}: LAYO has an unknown entry kind {flags}")
        path = b""
        if i:
            shared = varint()
            if shared > len(prev_path):
                raise IntegrityError(f"{where}: LAYO: a path shares {shared} bytes with a shorter one")
            path = prev_path[:shared] + r.take(varint())
            if not path:
                raise IntegrityError(f"{where}: LAYO: an entry other than the first has an empty path")
            check_name(path, f"{where}: LAYO")
        prev_path = path
        f = LayoutFile(os.fsdecode(path), kind=kind)
        if flags & _STAT_FLAG:
            if flags & _SAME_MODE:
                if kind not in prev_mode:
                    raise IntegrityError(f"{where}: LAYO: {f.path!r} repeats a mode never given")
                f.mode = prev_mode[kind]
            else:
                f.mode = prev_mode[kind] = varint() ^ _USUAL_MODE[kind]
                if f.mode > 0o7777:
                    raise IntegrityError(f"{where}: LAYO: {f.path!r} has an invalid mode {f.mode:o}")
            prev_secs += unzigzag(varint())
            nanos = varint() if flags & _NANOS else 0
            f.mtime_ns = prev_secs * 1_000_000_000 + nanos
            if nanos >= 1_000_000_000 or not -(1 << 63) <= f.mtime_ns < 1 << 63:  # os.utime's range
                raise IntegrityError(f"{where}: LAYO: {f.path!r} has an invalid mtime")
        if kind == FILE:
            if flags & _ONE_DOC:
                f.parts.append((VERBATIM, doc))
                doc += 1
            else:
                doc = _parts(r, f, doc, where)
        files.append(f)
    r.done()
    _check_tree(files, where)
    return files


def _parts(r: Reader, f: LayoutFile, doc: int, where: str) -> int:
    """Read a file's parts into ``f``; returns the next document's index."""
    for _ in range(r.count(1, "parts")):
        kind = r.byte()
        if kind == RAW:
            f.parts.append((RAW, r.take(r.varint())))
        elif kind in (VERBATIM, JSON_UNICODE, JSON_ASCII):
            f.parts.append((kind, doc))
            doc += 1
        else:
            raise IntegrityError(f"{where}: LAYO has an unknown part kind {kind}")
    return doc


def decode_layout_v2(data: bytes, where: str) -> list[LayoutFile]:
    """Parse a version 2 layout table (each file with its sha256, full paths, mtimes in ns), with
    the same refusals as :func:`decode_layout`."""
    r = Reader(data, f"{where}: LAYO")
    varint, take = r.varint, r.take
    files = []
    doc = 0
    for _ in range(r.count(2, "entries")):
        flags = r.byte()
        if flags & ~(_FOLDER_FLAG | _STAT_FLAG):
            raise IntegrityError(f"{where}: LAYO has an unknown entry kind {flags}")
        raw_path = take(varint())
        if raw_path:
            check_name(raw_path, f"{where}: LAYO")
        f = LayoutFile(os.fsdecode(raw_path), kind=FOLDER if flags & _FOLDER_FLAG else FILE)
        if flags & _STAT_FLAG:
            mode, zz = varint(), varint()
            if mode > 0o7777:
                raise IntegrityError(f"{where}: LAYO: {f.path!r} has an invalid mode {mode:o}")
            f.mode, f.mtime_ns = mode, unzigzag(zz)
        if f.kind == FILE:
            f.sha256 = take(32)
            doc = _parts(r, f, doc, where)
        files.append(f)
    r.done()
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
    files: Sequence[LayoutFile],
    documents: Sequence[bytes],
    where: str,
    digest: tuple[bytes, bytes] | None = None,
) -> list[tuple[LayoutFile, bytes]]:
    """Each file entry with its restored bytes (folders are skipped), verified before anything is
    written: against each file's sha256 (version 2), or ``digest`` = (layout table, expected
    :func:`content_digest`) over the whole archive (version 3)."""
    restored = []
    hashes = []
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
        hashes.append(hashlib.sha256(data).digest())
        if f.sha256 and hashes[-1] != f.sha256:
            raise IntegrityError(f"{where}: restored file {f.path or '(input)'} fails its sha256 check")
        restored.append((f, data))
    if digest is not None and content_digest(digest[0], hashes) != digest[1]:
        # One digest covers the archive, so only a single file can be named.
        which = (
            f"the restored file{f' {restored[0][0].path!r}' if restored[0][0].path else ''} fails"
            if len(restored) == 1
            else f"one or more of the {len(restored)} restored files fail"
        )
        raise IntegrityError(f"{where}: {which} the archive's digest check (model, machine or data damaged)")
    return restored
