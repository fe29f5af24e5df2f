"""Bits <-> ids, MSB first: the one id packer of every compressing scheme (the paper's Fig. 9: bits
1111000011110011 are the 8-bit ids [240, 243] and the 16-bit id 61683).

>>> bits = bytes([0b11110000, 0b11110011])
>>> bytes_to_ids(bits, 8).tolist(), bytes_to_ids(bits, 16).tolist()
([240, 243], [61683])
>>> to_tokens([0b1111000011110011], window_bits=16, token_bits=8).tolist()
[240, 243]

Window codes are concatenated as one bit string; with ``window_bits`` a multiple of 8 every window
is whole bytes, and ids of 8 or 16 bits may cross window boundaries (b = 24 at v = 2**16).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compresslm.errors import ConfigError, IntegrityError

#: Bits per id: v = 256 or v = 65,536, the paper's two vocabularies.
TOKEN_BITS = (8, 16)


def bytes_to_ids(payload: bytes, token_bits: int) -> np.ndarray:
    """Split ``payload`` into ``token_bits``-bit ids (int64), MSB first; a trailing odd byte at 16
    bits is padded with a zero byte."""
    if token_bits == 8:
        return np.frombuffer(payload, dtype=np.uint8).astype(np.int64)
    if len(payload) % 2:
        payload += b"\x00"
    return np.frombuffer(payload, dtype=">u2").astype(np.int64)


def ids_to_bytes(ids: np.ndarray | Sequence[int], token_bits: int) -> bytes:
    """Inverse of :func:`bytes_to_ids` (the padding byte, if any, is returned too)."""
    if token_bits == 8:
        return np.asarray(ids, dtype=np.uint8).tobytes()
    return np.asarray(ids, dtype=">u2").tobytes()


def ids_per_bytes(n_bytes: int, token_bits: int) -> int:
    """Ids that hold ``n_bytes`` payload bytes (rounded up)."""
    per = token_bits // 8
    return -(-n_bytes // per)


def pack_codes(codes: Sequence[int], window_bits: int) -> bytes:
    """Each code as ``window_bits // 8`` big-endian bytes."""
    width = window_bits // 8
    return b"".join(int(c).to_bytes(width, "big") for c in codes)


def unpack_codes(data: bytes, window_bits: int) -> list[int]:
    """Inverse of :func:`pack_codes`; the length must be a whole number of windows."""
    width = window_bits // 8
    if len(data) % width:
        raise IntegrityError(
            f"{len(data)} bytes of window bits is not a whole number of {window_bits}-bit windows"
        )
    if width == 2:  # the common case, vectorised
        return np.frombuffer(data, dtype=">u2").astype(np.int64).tolist()
    return [int.from_bytes(data[i : i + width], "big") for i in range(0, len(data), width)]


def to_tokens(codes: Sequence[int], window_bits: int, token_bits: int = 16) -> np.ndarray:
    """M2 tokens: the windows' bits cut into ``token_bits``-bit ids (uint8 or uint16)."""
    if token_bits not in TOKEN_BITS:
        raise ConfigError(f"token bits must be one of {TOKEN_BITS}, got {token_bits}")
    raw = pack_codes(codes, window_bits)
    if len(raw) % (token_bits // 8):
        raise ConfigError(f"{len(codes)} windows of {window_bits} bits do not fill whole 16-bit tokens")
    return bytes_to_ids(raw, token_bits).astype(np.uint8 if token_bits == 8 else np.uint16)


def from_tokens(tokens: Sequence[int] | np.ndarray, window_bits: int, token_bits: int = 16) -> list[int]:
    """Window codes from M2 tokens (inverse of :func:`to_tokens`)."""
    if token_bits not in TOKEN_BITS:
        raise ConfigError(f"token bits must be one of {TOKEN_BITS}, got {token_bits}")
    arr = np.asarray(tokens, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= 1 << token_bits):
        raise IntegrityError(f"token ids must be in 0..{(1 << token_bits) - 1}")
    return unpack_codes(ids_to_bytes(arr, token_bits), window_bits)
