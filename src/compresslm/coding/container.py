"""The .clm container: everything needed to restore the input, and to prove it (docs/clm-format.md).

Layout (all integers little-endian unless said otherwise)::

    magic      8 bytes  b"\\x89CLM\\r\\n\\x1a\\n"  (PNG-style: catches text-mode and 7-bit damage)
    version    u16
    sections   tag (4 ASCII bytes), u64 payload length, payload, u32 CRC32 of the payload
               HEAD  JSON: coder parameters, model sha256 + numerics fingerprint, counts, source
                     (checked against :data:`compresslm.coding.header.HEADER_SCHEMA`)
               DOCS  per document: byte length, CRC32 of its bytes, window count of each segment,
                     exception table (window index, byte count); unsigned LEB128 varints
               LAYO  codec byte + (zstd) table: how documents and verbatim pieces rebuild the
                     input's files and folders (see layout.py)
               WIND  the window bits, ``window_bits // 8`` bytes per window, big-endian (MSB first);
                     in stream mode (HEAD ``"mode": "stream"``) the segments' range codes back to
                     back, DOCS then counting code bytes per segment instead of windows
               END!  empty: its presence proves the file is complete

Every section is checked against its CRC before anything is decoded, so truncation and bit flips
are reported by section ("DOCS: CRC mismatch") rather than discovered as wrong output; the
per-document CRC32 then verifies every decoded document.

A hostile file can have valid CRCs, so nothing declared is trusted: the header is validated whole
before use, and every count and size is bounded by what the file can hold before anything is
allocated for it (a document cannot hold more bytes than its windows can code, a table cannot list
more entries than it has bytes), so a small file fails in milliseconds instead of allocating GBs.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from compresslm.coding.binary import Reader, put_varint
from compresslm.coding.header import validate_header
from compresslm.errors import IntegrityError

MAGIC = b"\x89CLM\r\n\x1a\n"
VERSION = 2
SECTIONS = ("HEAD", "DOCS", "LAYO", "WIND", "END!")
_SECTION = struct.Struct("<4sQ")
_CRC = struct.Struct("<I")
_MAX_HEADER = 64 << 20


@dataclass
class DocEntry:
    """One coded document: its windows are ``segment_windows[0]`` windows for its first segment,
    then the next count for the next segment, ...; ``exceptions`` index windows within the doc."""

    nbytes: int
    crc32: int
    segment_windows: list[int]
    exceptions: list[tuple[int, int]] = field(default_factory=list)

    @property
    def windows(self) -> int:
        return sum(self.segment_windows)


@dataclass
class Container:
    header: dict[str, Any]
    docs: list[DocEntry]
    layout: bytes
    payload: bytes  # the WIND section: the coded bits (window codes, or the stream coder's output)
    size: int = 0  # bytes of the file it was read from (0 when built in memory)


# ------------------------------------------------------------------------------------------ doc table


def encode_docs(docs: Sequence[DocEntry]) -> bytes:
    out = bytearray()
    put_varint(out, len(docs))
    for d in docs:
        put_varint(out, d.nbytes)
        out += _CRC.pack(d.crc32)
        put_varint(out, len(d.segment_windows))
        for n in d.segment_windows:
            put_varint(out, n)
        put_varint(out, len(d.exceptions))
        for w, n in d.exceptions:
            put_varint(out, w)
            put_varint(out, n)
    return bytes(out)


def decode_docs(data: bytes, where: str) -> list[DocEntry]:
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


# ------------------------------------------------------------------------------------- whole container


def _section(tag: str, payload: bytes) -> bytes:
    return _SECTION.pack(tag.encode("ascii"), len(payload)) + payload + _CRC.pack(zlib.crc32(payload))


def write_container(f: BinaryIO, container: Container) -> int:
    """Write ``container`` to ``f``; returns the bytes written."""
    head = json.dumps(container.header, sort_keys=True, allow_nan=False).encode("utf-8")
    parts = [
        MAGIC,
        struct.pack("<H", VERSION),
        _section("HEAD", head),
        _section("DOCS", encode_docs(container.docs)),
        _section("LAYO", container.layout),
        _section("WIND", container.payload),
        _section("END!", b""),
    ]
    for p in parts:
        f.write(p)
    return sum(len(p) for p in parts)


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


def read_container(data: bytes, where: str = "<clm>") -> Container:
    """Parse and verify (magic, version, every section's CRC, the END marker, cross-counts)."""
    if len(data) < len(MAGIC) + 2 or data[: len(MAGIC)] != MAGIC:
        raise IntegrityError(f"{where}: not a .clm file (bad magic bytes)")
    (version,) = struct.unpack_from("<H", data, len(MAGIC))
    if version != VERSION:
        raise IntegrityError(f"{where}: unsupported .clm version {version} (this build reads {VERSION})")
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
    docs = decode_docs(sections["DOCS"], where)
    container = Container(header, docs, sections["LAYO"], sections["WIND"], len(data))
    check_counts(container, where)
    return container


def check_counts(c: Container, where: str) -> None:
    """The header's counts, the document table and WIND agree, and every document's declared size
    is one its windows can code (``windows <= bytes <= windows * max_window_bytes``, per segment)."""
    if c.header.get("mode") == "stream":
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
    n_segments = 0 if d.nbytes == 0 else 1 if seg is None else -(-d.nbytes // seg)
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
