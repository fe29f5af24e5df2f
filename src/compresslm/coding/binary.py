"""Unsigned LEB128 varints and a bounds-checked reader: the number encoding of the .clm file's
header, document table and layout table (docs/clm-format.md), written once for all.

>>> out = bytearray()
>>> put_varint(out, 300)
>>> bytes(out), Reader(bytes(out), "DOCS").varint()
(b'\\xac\\x02', 300)
"""

from __future__ import annotations

import struct

from compresslm.errors import IntegrityError

_U32 = struct.Struct("<I")


def put_varint(out: bytearray, value: int) -> None:
    """Append ``value`` as an unsigned LEB128 varint (7 bits per byte, low groups first)."""
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


class Reader:
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

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes."""
        if self.pos + n > len(self.data):
            raise IntegrityError(f"{self.where}: ends early")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def count(self, min_bytes: int, what: str) -> int:
        """A count of items that take at least ``min_bytes`` each: refused when the rest of the
        section cannot hold them (so a hostile count fails at once, not after a long loop)."""
        n = self.varint()
        if n * min_bytes > len(self.data) - self.pos:
            raise IntegrityError(
                f"{self.where}: declares {n} {what}, the {len(self.data) - self.pos} remaining bytes "
                f"cannot hold them"
            )
        return n

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise IntegrityError(f"{self.where}: ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise IntegrityError(f"{self.where}: ends inside a CRC")
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def done(self) -> None:
        if self.pos != len(self.data):
            raise IntegrityError(f"{self.where}: {len(self.data) - self.pos} unexpected trailing bytes")


def zigzag(value: int) -> int:
    """A signed integer as an unsigned one, small magnitudes small (0, -1, 1, -2 -> 0, 1, 2, 3):
    mtimes before 1970 and differences between mtimes are negative."""
    return 2 * value if value >= 0 else -2 * value - 1


def unzigzag(value: int) -> int:
    """The inverse of :func:`zigzag`."""
    return value >> 1 if not value & 1 else -((value + 1) >> 1)
