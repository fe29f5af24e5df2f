"""The .clm container: everything needed to restore the input, and to prove it (docs/clm-format.md).

Version 3 (what :func:`write_container` writes) costs a few dozen bytes beyond the codes::

    magic      4 bytes  b"\\x89CLM", then the version byte (3)
    header     binary (compresslm.coding.header.encode_header): flags, coder parameters, model
               identity as prefixes of its two hashes, informational counts only when not zero
    LAYO       varint (length << 1 | codec), then the (zstd-compressed when it pays) layout table:
               how documents and verbatim pieces rebuild the input's files and folders (layout.py)
    DOCS       per document its byte length, then every segment's count (windows, or code bytes in
               stream mode) but the last, which the payload's length implies; windows mode then
               lists the exception windows
    payload    the codes, to the end: window bits (``window_bits // 8`` bytes each, big-endian) or
               the segments' range codes back to back
    digest     8 bytes: the restored files' digest (layout.content_digest)
    crc        u32: CRC-32 of every byte before it

Version 4 is version 3 with stream mode's long-range match stage (:mod:`.long_range`): the
header's stream coder gains ``min_match``, a MATCH part follows LAYO (framed like it), DOCS lists the
documents' restored lengths and its segments cut the *literal* documents (each document without its
matched spans, what M1 codes). The writer uses version 4 only for a file with matches, so every
other file (windows mode included) is byte for byte what version 3 wrote.

Version 2 (an ~800-byte JSON header, tagged sections with a CRC each, a CRC per document and a
sha256 per file) is still read: :func:`read_container` returns all three as one
:class:`Container`.

The CRC reports damage and truncation before any decoding; the digest, checked after decoding
and before anything is written, proves the restore (a model that computes differently on this
machine, or an edit by someone who recomputed the CRC). A hostile file can have a valid CRC, so
nothing declared is trusted: the header is validated whole before use, and every count and size is
bounded by what the file can hold before anything is allocated for it (a document cannot hold more
bytes than its windows can code, a table cannot list more entries than it has bytes), so a small
file fails in milliseconds instead of allocating GBs.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from compresslm.coding.binary import Reader, put_varint
from compresslm.coding.header import decode_header, encode_header, header_version, validate_header
from compresslm.coding.layout import CODEC_RAW, pack_table, unpack_layout
from compresslm.coding.long_range import (
    RESTORE_RATIO,
    RESTORE_SLACK,
    Match,
    decode_matches,
    encode_matches,
    matched_per_document,
)
from compresslm.errors import IntegrityError

PREFIX = b"\x89CLM"
"""What every .clm file starts with; versions 3 and 4 follow it with their version byte."""
MAGIC = PREFIX + b"\r\n\x1a\n"
"""Versions 1 and 2: PNG-style (catches text-mode and 7-bit damage), then a u16 version."""
VERSION = 4
"""The newest version this build writes (and only for files that need it, see the module doc)."""
VERSIONS = (2, 3, 4)
DIGEST_BYTES = 8
SECTIONS = ("HEAD", "DOCS", "LAYO", "WIND", "END!")
_SECTION = struct.Struct("<4sQ")
_CRC = struct.Struct("<I")
_MAX_HEADER = 64 << 20


@dataclass
class DocEntry:
    """One coded document: its windows are ``segment_windows[0]`` windows for its first segment,
    then the next count for the next segment, ...; ``exceptions`` index windows within the doc.
    ``crc32`` of its bytes in version 2 files (None in version 3, where one digest covers all).
    ``nbytes`` are the bytes M1 codes; ``matched`` the bytes the match table restores into the
    document besides them (version 4), so the document's restored length is their sum."""

    nbytes: int
    crc32: int | None
    segment_windows: list[int]
    exceptions: list[tuple[int, int]] = field(default_factory=list)
    matched: int = 0

    @property
    def restored(self) -> int:
        """The document's length once its matches are copied in."""
        return self.nbytes + self.matched

    @property
    def windows(self) -> int:
        return sum(self.segment_windows)


@dataclass
class Container:
    """A .clm file's parts. ``header`` is the version 3 header (see
    :data:`~compresslm.coding.header.HEADER_V3_SCHEMA`) or a version 2 file's JSON header;
    ``digest`` the version 3 restored-content digest."""

    header: dict[str, Any]
    docs: list[DocEntry]
    layout: bytes  # codec byte + layout table
    payload: bytes  # the coded bits (window codes, or the stream coder's output)
    size: int = 0  # bytes of the file it was read from (0 when built in memory)
    version: int = VERSION
    digest: bytes = b""
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of each part, as read (for inspect)
    matches: list[Match] = field(default_factory=list)  # version 4: the long-range matches

    @property
    def stream(self) -> bool:
        return self.header.get("mode") == "stream"


# --------------------------------------------------------------------------------- version 3 writer


def _segment_counts(nbytes: int, segment_bytes: int | None) -> int:
    return 0 if nbytes == 0 else 1 if segment_bytes is None else -(-nbytes // segment_bytes)


def encode_docs(docs: Sequence[DocEntry], windows: bool) -> bytes:
    """The version 3 document table (see the module doc); ``windows``: windows mode (an exception
    list follows)."""
    out = bytearray()
    put_varint(out, len(docs))
    for d in docs:
        put_varint(out, d.restored)
    counts = [n for d in docs for n in d.segment_windows]
    for n in counts[:-1]:
        put_varint(out, n)
    if windows:
        found: list[tuple[int, int]] = []
        base = 0
        for d in docs:
            found += [(base + w, n) for w, n in d.exceptions]
            base += d.windows
        put_varint(out, len(found))
        last = -1
        for w, n in found:
            put_varint(out, w - last - 1)
            put_varint(out, n)
            last = w
    return bytes(out)


def write_container(f: BinaryIO, container: Container) -> int:
    """Write ``container`` to ``f``, as version 4 when its header has a match stage (stream mode's
    ``coder.min_match``), else as version 3; returns the bytes written."""
    header = container.header
    version = header_version(header)
    if (version == 4 and header["coder"]["min_match"] > 0) != bool(container.matches) or any(
        d.matched for d in container.docs
    ) != bool(container.matches):
        raise ValueError("matches need a version 4 header with min_match > 0, and documents that hold them")
    windows = header["mode"] == "windows"
    for d in container.docs:
        if len(d.segment_windows) != _segment_counts(d.nbytes, header["segment_bytes"]):
            raise ValueError(f"a {d.nbytes}-byte document with {len(d.segment_windows)} segments")
    layout = container.layout
    if len(container.digest) != DIGEST_BYTES:
        raise ValueError("a version 3 container needs its content digest")
    out = bytearray(PREFIX + bytes([version]))
    out += encode_header(header, version)
    put_varint(out, (len(layout) - 1) << 1 | layout[0])
    out += layout[1:]
    if container.matches:
        raw = encode_matches(container.matches, header["coder"]["min_match"])
        table = pack_table(raw, len(out) + len(container.payload))
        rest = len(out) + len(table) + len(container.payload) + DIGEST_BYTES + _CRC.size
        if sum(d.matched for d in container.docs) > match_limit(rest):
            table = bytes([CODEC_RAW]) + raw  # >= 3 bytes per match of <= MAX_MATCH: within the bound
        put_varint(out, (len(table) - 1) << 1 | table[0])
        out += table[1:]
    out += encode_docs(container.docs, windows)
    out += container.payload
    out += container.digest
    out += _CRC.pack(zlib.crc32(out))
    f.write(out)
    return len(out)


def match_limit(file_bytes: int) -> int:
    """The most bytes the match table of a ``file_bytes``-byte .clm may copy: a few hostile bytes
    cannot make a restore allocate gigabytes (the literal bytes are bounded by their codes)."""
    return RESTORE_RATIO * file_bytes + RESTORE_SLACK


# --------------------------------------------------------------------------------- version 3 reader


def _read_v3(data: bytes, where: str, version: int = 3) -> Container:
    """A version 3 or 4 file (they differ in the stream coder's ``min_match`` and the MATCH part)."""
    if len(data) < len(PREFIX) + 1 + DIGEST_BYTES + _CRC.size:
        raise IntegrityError(f"{where}: truncated: {len(data)} bytes is shorter than any .clm file")
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) != crc:
        raise IntegrityError(f"{where}: corrupt or truncated: the file fails its CRC32 check")
    end = len(data) - _CRC.size - DIGEST_BYTES
    r = Reader(data[:end], f"{where}: HEAD")
    r.pos = len(PREFIX) + 1
    sizes = {"magic and version": r.pos}
    header = decode_header(r, version)
    sizes["header"] = r.pos - sum(sizes.values())
    r.where = f"{where}: LAYO"
    packed = r.varint()
    layout = bytes([packed & 1]) + r.take(packed >> 1)
    sizes["layout table"] = r.pos - sum(sizes.values())
    matches: list[Match] = []
    min_match = header["coder"].get("min_match", 0) if header["mode"] == "stream" else 0
    if min_match:
        r.where = f"{where}: MATCH"
        packed = r.varint()
        blob = bytes([packed & 1]) + r.take(packed >> 1)
        table = unpack_layout(blob, len(data), where, part="MATCH")
        matches = decode_matches(table, min_match, f"{where}: MATCH")
        sizes["match table"] = r.pos - sum(sizes.values())
    r.where = f"{where}: DOCS"
    docs = _decode_docs(r, header, end, where, matches if min_match else None, len(data))
    found = _decode_exceptions(r) if header["mode"] == "windows" else []
    sizes["document table"] = r.pos - sum(sizes.values())
    payload = data[r.pos : end]
    sizes["codes"] = len(payload)
    sizes["digest and CRC"] = DIGEST_BYTES + _CRC.size
    _fill_last_count(docs, header, len(payload), where)
    _assign_exceptions(docs, found, where)
    digest = data[end : end + DIGEST_BYTES]
    container = Container(header, docs, layout, payload, len(data), version, digest, sizes, matches)
    check_counts(container, where)
    return container


def _decode_docs(
    r: Reader,
    header: dict[str, Any],
    end: int,
    where: str,
    matches: list[Match] | None = None,
    file_bytes: int = 0,
) -> list[DocEntry]:
    """The version 3 or 4 document table (the last segment's count still 0: the payload gives it).
    With ``matches`` (version 4) the lengths are restored lengths: the matches must lie inside
    them, and the segments cut what remains (the literal documents)."""
    sizes = [r.varint() for _ in range(r.count(1, "documents"))]
    matched = [0] * len(sizes)
    if matches is not None:
        matched = matched_per_document(matches, sizes, f"{where}: MATCH")
        if sum(matched) > match_limit(file_bytes):
            raise IntegrityError(
                f"{where}: MATCH copies {sum(matched):,} bytes, more than a {file_bytes:,}-byte file "
                f"may restore ({RESTORE_RATIO}x its size)"
            )
        sizes = [n - m for n, m in zip(sizes, matched, strict=True)]
    segments = [_segment_counts(n, header["segment_bytes"]) for n in sizes]
    total = sum(segments)
    if total - 1 > end - r.pos:
        raise IntegrityError(
            f"{r.where}: declares {total} segments, the {end - r.pos} remaining bytes cannot hold them"
        )
    counts = [r.varint() for _ in range(total - 1)] + [0] * min(total, 1)
    docs = []
    k = 0
    for n, m, c in zip(sizes, segments, matched, strict=True):
        docs.append(DocEntry(n, None, counts[k : k + m], matched=c))
        k += m
    return docs


def _decode_exceptions(r: Reader) -> list[tuple[int, int]]:
    """Windows mode's exception list: (window index over the whole file, byte count), in order."""
    found = []
    last = -1
    for _ in range(r.count(2, "exceptions")):
        last += 1 + r.varint()
        found.append((last, r.varint()))
    return found


def _assign_exceptions(docs: list[DocEntry], found: list[tuple[int, int]], where: str) -> None:
    base, i = 0, 0
    for w, n in found:
        while i < len(docs) and w >= base + docs[i].windows:
            base += docs[i].windows
            i += 1
        if i == len(docs):
            raise IntegrityError(f"{where}: exception window {w} lies beyond every document")
        docs[i].exceptions.append((w - base, n))


def _fill_last_count(docs: list[DocEntry], header: dict[str, Any], payload: int, where: str) -> None:
    """The last segment's count: what the payload holds beyond the others."""
    if header["mode"] == "windows":
        width = header["coder"]["window_bits"] // 8
        if payload % width:
            raise IntegrityError(f"{where}: the payload's {payload} bytes are not whole {width}-byte windows")
        payload //= width
    listed = sum(d.windows for d in docs)
    owner = next((d for d in reversed(docs) if d.segment_windows), None)
    if owner is None:
        if payload:
            raise IntegrityError(f"{where}: {payload} coded units but no document to hold them")
        return
    if listed > payload:
        raise IntegrityError(
            f"{where}: the document table counts {listed} coded units, the payload holds {payload}"
        )
    owner.segment_windows[-1] = payload - listed


def read_container(data: bytes, where: str = "<clm>") -> Container:
    """Parse and verify a version 4, 3 or 2 file (magic, version, CRCs, the tables within their
    bounds, counts that agree); nothing is decoded yet."""
    if len(data) < len(PREFIX) + 1 or data[: len(PREFIX)] != PREFIX:
        raise IntegrityError(f"{where}: not a .clm file (bad magic bytes)")
    if data[: len(MAGIC)] == MAGIC:
        (version,) = struct.unpack_from("<H", data, len(MAGIC)) if len(data) >= len(MAGIC) + 2 else (None,)
        if version == 2:
            return _read_v2(data, where)
        if version is None:
            raise IntegrityError(f"{where}: truncated: the file ends inside its version number")
    else:
        version = data[len(PREFIX)]
        if version in (3, 4):
            return _read_v3(data, where, version)
    raise IntegrityError(
        f"{where}: unsupported .clm version {version} (this build reads {', '.join(map(str, VERSIONS))})"
    )


# -------------------------------------------------------------------------------- version 2 reader


def decode_docs_v2(data: bytes, where: str) -> list[DocEntry]:
    """A version 2 document table: per document its length, CRC32, segment counts, exceptions."""
    r = Reader(data, f"{where}: DOCS")
    docs = []
    for _ in range(r.count(7, "documents")):
        nbytes = r.varint()
        crc = r.u32()
        segments = [r.varint() for _ in range(r.count(1, "segments"))]
        exceptions = [(r.varint(), r.varint()) for _ in range(r.count(2, "exceptions"))]
        docs.append(DocEntry(nbytes, crc, segments, exceptions))
    r.done()
    return docs


def _sections(data: bytes, where: str) -> Iterator[tuple[str, bytes]]:
    pos = len(MAGIC) + 2
    for expected in SECTIONS:
        if pos + _SECTION.size > len(data):
            raise IntegrityError(
                f"{where}: truncated: section {expected} is missing (file ends at byte {len(data)})"
            )
        raw_tag, length = _SECTION.unpack_from(data, pos)
        tag = raw_tag.decode("ascii", errors="replace")
        if tag != expected:
            raise IntegrityError(
                f"{where}: corrupt: expected section {expected} at byte {pos}, found {tag!r}"
            )
        start = pos + _SECTION.size
        end = start + length
        if end + _CRC.size > len(data):
            raise IntegrityError(
                f"{where}: truncated: section {tag} needs {length} bytes from byte {start}, the file has "
                f"{len(data) - start}"
            )
        payload = data[start:end]
        (crc,) = _CRC.unpack_from(data, end)
        if zlib.crc32(payload) != crc:
            raise IntegrityError(f"{where}: corrupt: section {tag} fails its CRC32 check")
        pos = end + _CRC.size
        yield tag, payload
    if pos != len(data):
        raise IntegrityError(f"{where}: {len(data) - pos} unexpected bytes after the end marker")


def _read_v2(data: bytes, where: str) -> Container:
    sections = dict(_sections(data, where))
    if len(sections["HEAD"]) > _MAX_HEADER:
        raise IntegrityError(f"{where}: header too large")
    try:
        header = json.loads(sections["HEAD"].decode("utf-8"))
    except ValueError as exc:  # bad UTF-8 or JSON, or an integer beyond Python's 4,300 digits
        raise IntegrityError(f"{where}: HEAD is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise IntegrityError(f"{where}: HEAD is nested too deeply") from exc
    validate_header(header, where)
    docs = decode_docs_v2(sections["DOCS"], where)
    sizes = {"magic, version and end marker": len(MAGIC) + 2 + _SECTION.size + _CRC.size}
    for name, tag in (("header", "HEAD"), ("document table", "DOCS"), ("layout table", "LAYO")):
        sizes[name] = _SECTION.size + len(sections[tag]) + _CRC.size
    sizes["window section"] = _SECTION.size + _CRC.size
    sizes["codes"] = len(sections["WIND"])
    container = Container(header, docs, sections["LAYO"], sections["WIND"], len(data), 2, b"", sizes)
    check_counts(container, where)
    return container


# -------------------------------------------------------------------------------------- both versions


def check_counts(c: Container, where: str) -> None:
    """The document table and the payload agree (and, in version 2, the header's counts), and
    every document's declared size is one its windows can code (``windows <= bytes <= windows *
    max_window_bytes``, per segment)."""
    if c.stream:
        _check_stream_counts(c, where)
        return
    coder = c.header["coder"]
    width, max_bytes = coder["window_bits"] // 8, coder["max_window_bytes"]
    seg = c.header["segment_bytes"]
    total = sum(d.windows for d in c.docs)
    if len(c.payload) != total * width:
        raise IntegrityError(
            f"{where}: WIND holds {len(c.payload)} bytes, the document table needs {total} windows of {width}"
        )
    if c.version == 2:
        declared = (c.header["documents"], c.header["windows"], c.header["document_bytes"])
        actual = (len(c.docs), total, sum(d.nbytes for d in c.docs))
        if declared != actual:
            raise IntegrityError(
                f"{where}: HEAD declares (documents, windows, bytes) = {declared}, the tables hold {actual}"
            )
    for i, d in enumerate(c.docs):
        last = -1
        for w, n in d.exceptions:
            if not (last < w < d.windows and 1 <= n <= max_bytes):
                raise IntegrityError(
                    f"{where}: document {i}: exception (window {w}, {n} bytes) is out of range or order"
                )
            last = w
        for windows, length in _segments(d, i, seg, where):
            if not windows <= length <= windows * max_bytes:
                raise IntegrityError(
                    f"{where}: document {i}: {windows} windows cannot code a {length}-byte segment"
                )


def _segments(d: DocEntry, i: int, seg: int | None, where: str) -> list[tuple[int, int]]:
    """``(count, byte length)`` of document ``i``'s segments, refused unless its length needs
    exactly that many segments of ``seg`` bytes."""
    n_segments = _segment_counts(d.nbytes, seg)
    if len(d.segment_windows) != n_segments:
        raise IntegrityError(
            f"{where}: document {i} has {len(d.segment_windows)} segments, its length {d.nbytes} "
            f"needs {n_segments}"
        )
    return [
        (n, d.nbytes if seg is None else min(seg, d.nbytes - k * seg))
        for k, n in enumerate(d.segment_windows)
    ]


def _check_stream_counts(c: Container, where: str) -> None:
    """Stream mode: the per-segment counts are code bytes. A segment of ``n`` bytes costs less than
    ``P + 1`` bits per byte, and more than ``log2(T / (T - 255)) > 255 / 2**P * log2(e)`` (every
    other byte keeps a frequency of at least 1), so its code bounds its length both ways and a
    hostile length cannot make the decoder allocate more than ~45 bytes per code bit."""
    precision = c.header["coder"]["precision"]
    seg = c.header["segment_bytes"]
    total = sum(d.windows for d in c.docs)
    if c.version == 2:
        declared = (c.header["documents"], c.header["code_bytes"], c.header["document_bytes"])
        actual = (len(c.docs), total, sum(d.nbytes for d in c.docs))
        if declared != actual or len(c.payload) != total:
            raise IntegrityError(
                f"{where}: HEAD declares (documents, code bytes, bytes) = {declared}, the tables hold "
                f"{actual} and WIND {len(c.payload)} code bytes"
            )
    for i, d in enumerate(c.docs):
        if d.exceptions:
            raise IntegrityError(f"{where}: document {i}: a stream-mode document has no exceptions")
        for code, length in _segments(d, i, seg, where):
            most = (8 * code + 40) * (1 << precision) // 367 + 1
            if code > (length * (precision + 1) + 7) // 8 + 5 or length > most:
                raise IntegrityError(
                    f"{where}: document {i}: a {code}-byte code cannot hold a {length}-byte segment"
                )
