"""The .clm container (DESIGN.md §4.3): everything needed to restore the input, and to prove it.

Layout (all integers little-endian unless said otherwise)::

    magic      8 bytes  b"\\x89CLM\\r\\n\\x1a\\n"  (PNG-style: catches text-mode and 7-bit damage)
    version    u16
    sections   tag (4 ASCII bytes), u64 payload length, payload, u32 CRC32 of the payload
               HEAD  JSON: coder parameters, model sha256 + numerics fingerprint, counts, source
               DOCS  per document: byte length, CRC32 of its bytes, window count of each segment,
                     exception table (window index, byte count); unsigned LEB128 varints
               LAYO  zstd: how documents and verbatim pieces rebuild the input files (see compress.py)
               WIND  the window bits, ``window_bits // 8`` bytes per window, big-endian (MSB first)
               END!  empty: its presence proves the file is complete

Every section is checked against its CRC before anything is decoded, so truncation and bit flips
are reported by section ("DOCS: CRC mismatch") rather than discovered as wrong output; the
per-document CRC32 then verifies every decoded document.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from compresslm.errors import IntegrityError

MAGIC = b"\x89CLM\r\n\x1a\n"
VERSION = 1
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
    window_bits: bytes


# ------------------------------------------------------------------------------------------- varints


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("varints are unsigned")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


class _Reader:
    """Bounds-checked reads from one section; every overrun names the section."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.pos = 0
        self.where = where

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data):
                raise IntegrityError(f"{self.where}: ends inside a number")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise IntegrityError(f"{self.where}: number too long")

    def u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise IntegrityError(f"{self.where}: ends inside a CRC")
        (value,) = _CRC.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def done(self) -> None:
        if self.pos != len(self.data):
            raise IntegrityError(f"{self.where}: {len(self.data) - self.pos} unexpected trailing bytes")


# ------------------------------------------------------------------------------------------ doc table


def encode_docs(docs: Sequence[DocEntry]) -> bytes:
    out = bytearray()
    _put_varint(out, len(docs))
    for d in docs:
        _put_varint(out, d.nbytes)
        out += _CRC.pack(d.crc32)
        _put_varint(out, len(d.segment_windows))
        for n in d.segment_windows:
            _put_varint(out, n)
        _put_varint(out, len(d.exceptions))
        for w, n in d.exceptions:
            _put_varint(out, w)
            _put_varint(out, n)
    return bytes(out)


def decode_docs(data: bytes, where: str) -> list[DocEntry]:
    r = _Reader(data, f"{where}: DOCS")
    docs = []
    for _ in range(r.varint()):
        nbytes = r.varint()
        crc = r.u32()
        segments = [r.varint() for _ in range(r.varint())]
        exceptions = [(r.varint(), r.varint()) for _ in range(r.varint())]
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
        _section("WIND", container.window_bits),
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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{where}: HEAD is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise IntegrityError(f"{where}: HEAD is not a JSON object")
    docs = decode_docs(sections["DOCS"], where)
    container = Container(header, docs, sections["LAYO"], sections["WIND"])
    _check_counts(container, where)
    return container


def _check_counts(c: Container, where: str) -> None:
    try:
        width = int(c.header["coder"]["window_bits"]) // 8
        max_bytes = int(c.header["coder"]["max_window_bytes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{where}: HEAD lacks the coder parameters") from exc
    total = sum(d.windows for d in c.docs)
    if width <= 0 or len(c.window_bits) != total * width:
        raise IntegrityError(
            f"{where}: WIND holds {len(c.window_bits)} bytes, the document table needs {total} windows of {width}"
        )
    for i, d in enumerate(c.docs):
        for w, n in d.exceptions:
            if not (0 <= w < d.windows and 1 <= n <= max_bytes):
                raise IntegrityError(
                    f"{where}: document {i}: exception (window {w}, {n} bytes) is out of range"
                )
        if d.windows > d.nbytes:
            raise IntegrityError(f"{where}: document {i}: {d.windows} windows cannot cover {d.nbytes} bytes")
