"""The long-range match stage of stream mode: long repeats are copied, not coded by M1.

**Why.** Stream mode cuts the input into segments (the parallel rows) and M1 restarts its context
every ``context`` bytes, so M1 never sees a repeat that lies further back: the licence header of
the tenth file, boilerplate, a function pasted twice. xz and zstd find those with their large
windows, and as one stream they beat M1 on inputs full of them. This stage removes the long
repeats before M1 (as ``zstd --long`` and lrzip's rzip stage do before their coders): the input's
documents, taken as one byte stream *D*, become **literal documents** (each document without its
matched spans, what M1 codes) and a **match table** (where each matched span is copied from).

**Matches.** A match copies ``length`` bytes from ``distance`` bytes back in *D* (``1 <=
distance <= start``), byte by byte as in LZ77, so a copy may overlap its own source (``distance <
length`` repeats a pattern). Its destination lies inside one document (its source anywhere
earlier in *D*, other documents included), so every literal document is just its document with
holes and the document table keeps the documents' restored lengths. The table lists the matches
in order of position as ``(run, distance, length)``: ``run`` literal bytes of *D* come first.

**Finding them** (the writer only; any parse decodes): greedy, like a one-probe LZ77. Every
position's window of ``min_match`` bytes is hashed (a polynomial hash modulo 2^64, vectorized over
a block of positions with numpy); the candidate for a position is the most recent earlier position
with the same hash, found for a whole block at once by a stable sort, and from earlier blocks
through a table of the last position per hash bucket. Scanning positions in order, a candidate whose
bytes really agree (checked, a hash is no proof) and whose window stays in its document becomes a
match, extended forward as far as the bytes agree (at most :data:`MAX_MATCH` bytes), and the scan
resumes after it. Memory is bounded: the bucket table (:data:`TABLE_BITS`, 32 MiB) and one
block's arrays (:data:`BLOCK` positions, about 40 bytes each), besides the input itself; repeats
any distance back can be found while their bucket has not been reused. Everything is integer
arithmetic with fixed widths and a defined order, so a parse is the same on every machine.

Hand-written because no library gives us the two halves separately: zstd, xz and lz4 find long
matches but emit their own entropy-coded blocks, and we need the literal bytes (for M1) and the
matches (for the table) apart.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from compresslm.coding.binary import Reader, put_varint
from compresslm.coding.header import DEFAULT_MIN_MATCH
from compresslm.errors import IntegrityError

MAX_MATCH = 1 << 16
"""The writer's longest match: a longer repeat becomes several. Every match then costs at least 3
table bytes per 64 KiB copied, so a raw table copies at most ~22,000x its size and the reader's
bound (:data:`RESTORE_RATIO`) always holds for what the writer produces."""
RESTORE_RATIO = 1 << 16
"""A version 4 file's matches may copy at most this many times the file's size (plus
:data:`RESTORE_SLACK`) bytes: a hostile match table of a few bytes cannot make a restore allocate
gigabytes."""
RESTORE_SLACK = 1 << 20
TABLE_BITS = 22
"""Hash buckets remembering the last position of each (4M × 8 bytes = 32 MiB)."""
BLOCK = 1 << 20
"""Positions hashed and sorted at once."""

_BASE = np.uint64(0x100000001B3)  # odd: the FNV-64 prime as the polynomial's base
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the bucket is the top bits of h * _MIX


class Match(NamedTuple):
    """``run`` literal bytes, then ``length`` bytes copied from ``distance`` bytes back."""

    run: int
    distance: int
    length: int


@dataclass
class Parse:
    """What :func:`find_matches` makes of a list of documents: each document without its matched
    spans (``literals``) and the matches, in order of position in the documents' concatenation."""

    literals: list[bytes]
    matches: list[Match]

    @property
    def matched_bytes(self) -> int:
        return sum(m.length for m in self.matches)


def _hashes(window: np.ndarray, m: int) -> np.ndarray:
    """The polynomial hash (mod 2^64) of every ``m``-byte window of ``window``."""
    n = len(window) - m + 1
    h = np.zeros(n, np.uint64)
    for k in range(m):
        h *= _BASE
        h += window[k : k + n]
    return h


def _candidates(h: np.ndarray, start: int, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``start + i`` whose hash ``h[i]`` was seen before, and the most recent earlier
    position with that hash (within the block) or bucket (earlier blocks, from ``table``, which is
    then updated with this block's last position per bucket)."""
    order = np.argsort(h, kind="stable")  # equal hashes keep position order
    hs = h[order]
    pos = order.astype(np.int64) + start
    same = np.zeros(len(hs), bool)
    same[1:] = hs[1:] == hs[:-1]
    prev = np.empty(len(hs), np.int64)
    prev[1:] = pos[:-1]
    bucket = ((hs * _MIX) >> np.uint64(64 - TABLE_BITS)).astype(np.int64)
    first = ~same
    prev[first] = table[bucket[first]]
    last = np.ones(len(hs), bool)
    last[:-1] = ~same[1:]
    # Several hashes of the block may share a bucket: the latest position wins, chosen explicitly
    # (a fancy assignment with repeated indices has no defined order).
    b, p = bucket[last], pos[last]
    by = np.lexsort((p, b))
    b, p = b[by], p[by]
    keep = np.ones(len(b), bool)
    keep[:-1] = b[1:] != b[:-1]
    table[b[keep]] = p[keep]
    found = prev >= 0
    at = np.argsort(pos[found], kind="stable")
    return pos[found][at], prev[found][at]


def _extend(data: bytes, src: int, dst: int, length: int, limit: int) -> int:
    """How far the bytes at ``dst`` keep agreeing with those at ``src`` (from ``length`` on, up to
    ``limit`` - ``dst``). Comparing ``data`` with itself is right for overlapping copies too: the
    decoder copies byte by byte, so each copied byte is already the original there."""
    step = 256
    while dst + length < limit:
        n = min(step, limit - dst - length)
        a = data[src + length : src + length + n]
        b = data[dst + length : dst + length + n]
        if a == b:
            length += n
            step = min(4 * step, 1 << 16)
            continue
        diff = np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8)
        return length + int(np.argmax(diff))
    return length


def find_matches(documents: Sequence[bytes], min_match: int = DEFAULT_MIN_MATCH) -> Parse:
    """Greedy long repeats of at least ``min_match`` bytes (see the module doc)."""
    if min_match < 1:
        raise ValueError("min_match must be positive")
    data = b"".join(documents)
    ends = np.cumsum([len(d) for d in documents], dtype=np.int64).tolist()
    arr = np.frombuffer(data, np.uint8)
    table = np.full(1 << TABLE_BITS, -1, np.int64)
    spans: list[tuple[int, int, int]] = []  # (start, distance, length)
    cursor = 0
    for s in range(0, max(0, len(data) - min_match + 1), BLOCK):
        e = min(len(data) - min_match + 1, s + BLOCK)
        dsts, srcs = _candidates(_hashes(arr[s : e + min_match - 1], min_match), s, table)
        k = int(np.searchsorted(dsts, cursor))
        while k < len(dsts):
            i, j = int(dsts[k]), int(srcs[k])
            end = ends[bisect.bisect_right(ends, i)]  # the end of the document holding i
            if i + min_match <= end and data[i : i + min_match] == data[j : j + min_match]:
                length = _extend(data, j, i, min_match, min(end, i + MAX_MATCH))
                spans.append((i, i - j, length))
                cursor = i + length
                k = int(np.searchsorted(dsts, cursor, side="left"))
            else:
                k += 1
    return Parse(_literals(documents, spans), _runs(spans))


def _runs(spans: Sequence[tuple[int, int, int]]) -> list[Match]:
    matches = []
    pos = 0
    for start, distance, length in spans:
        matches.append(Match(start - pos, distance, length))
        pos = start + length
    return matches


def _literals(documents: Sequence[bytes], spans: Sequence[tuple[int, int, int]]) -> list[bytes]:
    out = []
    k = 0
    base = 0
    for doc in documents:
        pieces = []
        pos = 0
        while k < len(spans) and spans[k][0] < base + len(doc):
            start = spans[k][0] - base
            pieces.append(doc[pos:start])
            pos = start + spans[k][2]
            k += 1
        pieces.append(doc[pos:])
        out.append(b"".join(pieces))
        base += len(doc)
    return out


# ---------------------------------------------------------------------------------- the match table


def encode_matches(matches: Sequence[Match], min_match: int) -> bytes:
    """The match table: ``varint n``, then per match ``varint run, varint distance, varint length
    - min_match``."""
    out = bytearray()
    put_varint(out, len(matches))
    for run, distance, length in matches:
        put_varint(out, run)
        put_varint(out, distance)
        put_varint(out, length - min_match)
    return bytes(out)


def decode_matches(data: bytes, min_match: int, where: str) -> list[Match]:
    """Parse a match table (its counts bounded by its size; positions are checked by
    :func:`matched_per_document`)."""
    r = Reader(data, where)
    matches = [Match(r.varint(), r.varint(), r.varint() + min_match) for _ in range(r.count(3, "matches"))]
    r.done()
    return matches


def matched_per_document(matches: Sequence[Match], lengths: Sequence[int], where: str) -> list[int]:
    """The bytes each document (of restored ``lengths``) gets from ``matches``, refusing a match
    that copies from before the start, leaves its document, or runs past the end."""
    ends = np.cumsum(lengths, dtype=np.int64).tolist() if lengths else []
    total = ends[-1] if ends else 0
    matched = [0] * len(lengths)
    pos = 0
    for k, (run, distance, length) in enumerate(matches):
        start = pos + run
        if start >= total:
            raise IntegrityError(f"{where}: match {k} starts at byte {start}, past the end ({total} bytes)")
        doc = bisect.bisect_right(ends, start)
        if start + length > ends[doc]:
            raise IntegrityError(
                f"{where}: match {k} (bytes {start}..{start + length}) runs past the end of document "
                f"{doc} (byte {ends[doc]})"
            )
        if not 1 <= distance <= start:
            raise IntegrityError(
                f"{where}: match {k} at byte {start} copies from {distance} bytes back, before the start"
            )
        matched[doc] += length
        pos = start + length
    return matched


def restore(literals: Sequence[bytes], matches: Sequence[Match], lengths: Sequence[int]) -> list[bytes]:
    """The documents (of restored ``lengths``) rebuilt from their literal bytes and the matches,
    which :func:`matched_per_document` has accepted for these lengths."""
    lit = b"".join(literals)
    out = bytearray(sum(lengths))
    pos = used = 0
    for run, distance, length in matches:
        out[pos : pos + run] = lit[used : used + run]
        pos += run
        used += run
        src = pos - distance
        if distance >= length:
            out[pos : pos + length] = out[src : src + length]
        else:  # an overlapping copy repeats the last ``distance`` bytes
            out[pos : pos + length] = (out[src:pos] * (length // distance + 1))[:length]
        pos += length
    out[pos:] = lit[used:]
    docs = []
    start = 0
    for n in lengths:
        docs.append(bytes(out[start : start + n]))
        start += n
    return docs
